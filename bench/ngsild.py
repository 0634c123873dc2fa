"""Benchmark: NGSI-LD queries against the API's own GeoJSON route, in one process, same run.

Run: ``.venv/bin/python -m bench.ngsild [--n 200]``. Starts the embedded broker, puts a state on twin.updates for every
sensor and coast segment of the bundled Kiel pack (102 NGSI-LD entities), writes 10,000 archived readings of one gauge,
starts the API in-process (FastAPI TestClient: no network, one client) and times each request N times; prints p50/p99
in ms. Baseline: GET /entities?type=sensor&limit=100 (the GeoJSON route over the same read model), and GET /health.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker
from schemas.codec import SingleObjectCodec
from streams.catalogue import SENSOR_TOPICS, TWIN_UPDATES, ensure_topics
from streams.history.writer import ArchiveWriter
from streams.publisher import EventPublisher
from tests.api.ngsild_setup import GAUGE, GAUGE_URN, T, sensor_state, update
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.events import WaterLevelMeasured
from twin.region import BUNDLED_DIR, bundled_pack

VALUES: dict[str, dict[str, Any]] = {
    "water_level": {"level_m": 1.1}, "traffic_count": {"vehicles": 12, "interval_s": 900, "mean_speed_kmh": 31.0},
    "parking": {"occupied": 30, "capacity": 120}, "air_quality": {"no2_ugm3": 20.0, "pm10_ugm3": 9.0, "pm25_ugm3": 5.0},
    "weather": {"temperature_c": 11.0, "wind_speed_ms": 4.0, "wind_dir_deg": 250.0, "precipitation_mm": 0.0},
    "bike_share": {"bikes_available": 4, "docks_available": 6},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    os.environ.setdefault("PLIETSCH_OPERATOR_API_KEY", OPERATOR["Authorization"].split()[1])
    pack = bundled_pack()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        data = Path(tmp)
        ensure_topics(broker.bootstrap_servers)
        pub = EventPublisher(broker.bootstrap_servers, SingleObjectCodec())
        for s in pack.sensors.values():
            pub.send(TWIN_UPDATES.name, s.id, update(s.id, "sensor", sensor_state(s.id, s.sensor_kind, VALUES[s.sensor_kind], T)))
        for c in pack.coast.values():
            pub.send(TWIN_UPDATES.name, c.id, update(c.id, "coast", json.dumps({
                "segment_id": c.id, "crest_m": c.crest_m, "level_m": 1.1, "freeboard_m": c.crest_m - 1.1, "surge_class": None,
                "low_freeboard": False, "overtopped": False, "observed_at": T.isoformat(), "gauge": c.gauge, "revision": 1})))
        pub.flush()
        w = ArchiveWriter(data / "archive")
        for i in range(10_000):
            w.add(SENSOR_TOPICS["water_level"].name, 0, i, WaterLevelMeasured(
                entity_id=GAUGE, region="kiel", occurred_at=T + timedelta(minutes=i), source="b", level_m=1.0))
        w.flush()
        app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, region_pack=BUNDLED_DIR / "kiel",
                                     data_dir=data))
        with TestClient(app, headers=OPERATOR) as c:
            wait_for(lambda: len(app.state.read_model.state) >= 102, 60, "the twin in the read model")
            cases = {
                "baseline GET /health": ("/health", {}),
                "baseline GET /entities?type=sensor&limit=100": ("/entities", {"type": "sensor", "limit": 100}),
                "ngsi-ld all 102 entities": ("/ngsi-ld/v1/entities", {"limit": 1000}),
                "ngsi-ld type=OffStreetParking keyValues": ("/ngsi-ld/v1/entities", {"type": "OffStreetParking",
                                                                                     "options": "keyValues"}),
                "ngsi-ld q=(no2>10|height>1);synthetic==true": ("/ngsi-ld/v1/entities", {"q": "(no2>10|height>1);synthetic==true",
                                                                                         "limit": 1000}),
                "ngsi-ld near;maxDistance==2000": ("/ngsi-ld/v1/entities", {"georel": "near;maxDistance==2000",
                                                                            "geometry": "Point", "coordinates": "[10.14,54.32]",
                                                                            "limit": 1000}),
                "ngsi-ld one entity": (f"/ngsi-ld/v1/entities/{GAUGE_URN}", {}),
                "ngsi-ld temporal lastN=10 (10,000 archived)": (f"/ngsi-ld/v1/temporal/entities/{GAUGE_URN}", {"lastN": 10}),
                "ngsi-ld temporal between 1 h (10,000 archived)": (f"/ngsi-ld/v1/temporal/entities/{GAUGE_URN}", {
                    "timerel": "between", "timeAt": "2026-05-05T12:00:00Z", "endTimeAt": "2026-05-05T13:00:00Z"}),
            }
            print(f"bench.ngsild on {platform.node()} ({os.cpu_count()} cores), load average {os.getloadavg()}, n={args.n}")
            for name, (path, params) in cases.items():
                for _ in range(5):
                    assert c.get(path, params=params).status_code == 200, (path, c.get(path, params=params).text[:200])
                ms = []
                for _ in range(args.n):
                    t0 = time.perf_counter()
                    c.get(path, params=params)
                    ms.append((time.perf_counter() - t0) * 1000)
                ms.sort()
                print(f"  {name:50s} p50 {statistics.median(ms):7.2f} ms  p99 {ms[int(0.99 * (len(ms) - 1))]:7.2f} ms")


if __name__ == "__main__":
    main()
