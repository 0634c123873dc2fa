"""What the NGSI-LD tests share: an API over its own real broker with known twin state on twin.updates (the read
model's input) and archived readings (the history engine's input), and keys for each role."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.auth.store import AuthStore
from api.main import create_app
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker
from schemas.codec import SingleObjectCodec
from streams.archive import ArchiveWriter
from streams.catalogue import SENSOR_TOPICS, TWIN_UPDATES, ensure_topics
from streams.publisher import EventPublisher
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.events import TwinEntityUpdated, WaterLevelMeasured
from twin.region import BUNDLED_DIR, bundled_pack

T = datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
GAUGE = "kiel:_:sensor:gauge-holtenau"
PARKING = "kiel:gaarden:sensor:parking-001"
AIR = "kiel:_:sensor:aq-desh052"
SEGMENT = "kiel:_:coast:friedrichsort-001"
REPORT = "kiel:gaarden:report:r-ngsild-1"
SECRET_TEXT = "Herr Mustermann, Tel. 0431-123456"  # free text in a citizen report: never in NGSI-LD
GAUGE_URN = f"urn:ngsi-ld:WaterObserved:{GAUGE}"
PARKING_URN = f"urn:ngsi-ld:OffStreetParking:{PARKING}"
AIR_URN = f"urn:ngsi-ld:AirQualityObserved:{AIR}"
SEGMENT_URN = f"urn:ngsi-ld:CoastSegment:{SEGMENT}"


def sensor_state(eid: str, kind: str, values: dict[str, Any], at: datetime, revision: int = 1) -> str:
    return json.dumps({"entity_id": eid, "sensor_kind": kind, "revision": revision, "observed_at": at.isoformat(),
                       "values": values, "last_event_id": f"e-{eid}-{revision}", "source": "test"})


def update(eid: str, kind: str, state: str, revision: int = 1) -> TwinEntityUpdated:
    return TwinEntityUpdated(entity_id=eid, region="kiel", occurred_at=T, source="test", entity_type=kind,
                             revision=revision, state_json=state, cause_event_id=f"c-{eid}-{revision}")


def twin_updates() -> list[TwinEntityUpdated]:
    pack = bundled_pack()
    seg = pack.coast[SEGMENT]
    coast = {"segment_id": SEGMENT, "crest_m": seg.crest_m, "level_m": 1.42, "freeboard_m": round(seg.crest_m - 1.42, 3),
             "surge_class": "storm_surge", "low_freeboard": False, "overtopped": False, "observed_at": T.isoformat(),
             "gauge": GAUGE, "revision": 1}
    return [update(GAUGE, "sensor", sensor_state(GAUGE, "water_level", {"level_m": 1.42}, T)),
            update(PARKING, "sensor", sensor_state(PARKING, "parking", {"occupied": 30, "capacity": 120}, T)),
            update(AIR, "sensor", sensor_state(AIR, "air_quality", {"no2_ugm3": 41.5, "pm10_ugm3": 12.0,
                                                                    "pm25_ugm3": 7.5}, T - timedelta(minutes=5))),
            update(SEGMENT, "coast", json.dumps(coast)),
            update(REPORT, "report", json.dumps({"category": "street_lamp", "description": SECRET_TEXT,
                                                 "lon": 10.14, "lat": 54.28}))]


def archive(root: Path) -> list[WaterLevelMeasured]:
    """Ten readings of the gauge, one a minute from T, in the archive."""
    w = ArchiveWriter(root)
    readings = [WaterLevelMeasured(entity_id=GAUGE, region="kiel", occurred_at=T + timedelta(minutes=i), source="t",
                                   level_m=round(1.0 + i / 10, 2)) for i in range(10)]
    for i, r in enumerate(readings):
        w.add(SENSOR_TOPICS["water_level"].name, 0, i, r)
    w.flush()
    return readings


@dataclass
class Api:
    client: TestClient
    keys: dict[str, dict[str, str]]  # role -> headers
    readings: list[WaterLevelMeasured]
    bootstrap: str


@contextmanager
def twin_broker() -> Iterator[tuple[str, EventPublisher]]:
    """An embedded broker whose `twin.updates` holds the twin of `twin_updates()`, and a publisher for more."""
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        pub = EventPublisher(broker.bootstrap_servers, SingleObjectCodec())
        for u in twin_updates():
            pub.send(TWIN_UPDATES.name, str(u.entity_id), u)
        pub.flush()
        yield broker.bootstrap_servers, pub


def served_api(data: Path) -> Iterator[Api]:
    with twin_broker() as (bootstrap, _pub):
        readings = archive(data / "archive")
        app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, region_pack=BUNDLED_DIR / "kiel",
                                     data_dir=data, public_rate=10_000, public_burst=10_000))
        planner = AuthStore(data / "auth.sqlite3").add_key("ngsild planner", "planner", "test")[1]
        with TestClient(app) as client:
            wait_for(lambda: app.state.read_model.get(REPORT) is not None and app.state.read_model.get(SEGMENT), 60,
                     "the twin's state in the read model")
            yield Api(client, {"public": {}, "planner": {"Authorization": f"Bearer {planner}"}, "operator": OPERATOR},
                      readings, bootstrap)
