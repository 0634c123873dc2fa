"""History and time travel through the API, over archive files written by the archive writer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from streams.archive import ArchiveWriter, archive_files
from streams.catalogue import MUNICIPAL_TOPICS, SENSOR_TOPICS
from tests.credentials import OPERATOR
from twin.events import RoadWorksAnnounced, TrafficCounted, WaterLevelMeasured
from twin.region import BUNDLED_DIR, bundled_pack

pytestmark = pytest.mark.broker
T = datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
SID = "kiel:gaarden:sensor:traffic-count-001"
STAFF = "kiel:gaarden:sensor:water-level-001"
ROAD = "kiel:gaarden:road:r0001"


def _boxes() -> tuple[str, str]:
    """A box around the sensor, the staff and the road of the bundled pack, and one around the road's midpoint only."""
    from shapely.geometry import LineString, MultiPoint

    pack = bundled_pack()
    mid = LineString(pack.roads[ROAD].line).interpolate(0.5, normalized=True)
    points = MultiPoint([(pack.sensors[SID].lon, pack.sensors[SID].lat), (pack.sensors[STAFF].lon, pack.sensors[STAFF].lat),
                         (mid.x, mid.y)])
    x0, y0, x1, y1 = points.buffer(0.001).bounds
    return f"{x0},{y0},{x1},{y1}", f"{mid.x - 5e-5},{mid.y - 5e-5},{mid.x + 5e-5},{mid.y + 5e-5}"


def test_history_and_state_at(topics: str, tmp_path: Path) -> None:
    w = ArchiveWriter(tmp_path / "archive")
    events = [TrafficCounted(entity_id=SID, region="kiel", occurred_at=T + timedelta(minutes=i), source="t", vehicles=i,
                             interval_s=60) for i in range(10)]
    events.append(WaterLevelMeasured(entity_id=STAFF, region="kiel", occurred_at=T + timedelta(minutes=3), source="t",
                                     level_m=1.7))
    for i, e in enumerate(events):
        w.add(SENSOR_TOPICS[type(e).sensor_kind].name, 0, i, e)
    w.flush()
    works = RoadWorksAnnounced(entity_id=ROAD, region="kiel", occurred_at=T + timedelta(minutes=30), source="t", starts_at=T,
                               ends_at=T + timedelta(days=2), lanes_closed=1, description="Kanal")
    w.add(MUNICIPAL_TOPICS["road_works"].name, 1, 0, works)
    w.flush()
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=topics, region_pack=BUNDLED_DIR / "kiel", data_dir=tmp_path))
    with TestClient(app, headers=OPERATOR) as c:
        hist = c.get(f"/history/entities/{SID}", params={"start": (T + timedelta(minutes=2)).isoformat(),
                                                        "end": (T + timedelta(minutes=5)).isoformat()}).json()
        assert hist["type"] == "FeatureCollection" and hist["total"] == 4
        assert [f["properties"]["vehicles"] for f in hist["features"]] == [2, 3, 4, 5]
        assert hist["features"][0]["geometry"]["type"] == "Point"
        area_box, road_box = _boxes()
        area = c.get("/history/area", params={"bbox": area_box, "start": T.isoformat(),
                                              "end": (T + timedelta(hours=1)).isoformat(), "limit": 3}).json()
        assert area["total"] == 12 and len(area["features"]) == 3  # 11 readings and the road works
        assert [f["properties"]["vehicles"] for f in area["features"]] == [0, 1, 2]  # oldest first
        road = c.get("/history/area", params={"bbox": road_box, "start": T.isoformat(),
                                              "end": (T + timedelta(hours=1)).isoformat()}).json()
        assert [f["properties"]["type"] for f in road["features"] if f["id"] == works.event_id] == ["RoadWorksAnnounced"]
        assert c.get("/history/range").json() == {"start": T.isoformat(), "end": (T + timedelta(minutes=30)).isoformat(),
                                                  "events": 12}
        at = c.get("/history/state", params={"time": (T + timedelta(minutes=4, seconds=30)).isoformat()}).json()
        assert at["sensors"][SID]["values"]["vehicles"] == 4
        assert any(a["category"] == "storm_surge" and a["severity"] == "severe" for a in at["active_alerts"])
        assert set(at["coast"]) and all(s["level_m"] == 1.7 for s in at["coast"].values())
        assert c.get("/history/state", params={"time": "yesterday"}).status_code == 422
        later = c.get("/history/state", params={"time": (T + timedelta(hours=1)).isoformat()}).json()
        assert later["municipal"][ROAD]["lanes_closed_max"] == 1 and later["sensors"][SID]["values"]["vehicles"] == 9
        assert any(k.startswith("traffic_vehicles|") for k in later["aggregates"])
        # the range comes from the manifest: it answers with every data file unreadable
        for f in archive_files(tmp_path / "archive"):
            f.write_bytes(b"not parquet")
        assert c.get("/history/range").json()["events"] == 12
