"""The API over a real broker: its read model follows twin.updates produced by the worker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from schemas.codec import SingleObjectCodec
from streams.catalogue import SENSOR_TOPICS
from streams.publisher import EventPublisher
from tests.credentials import OPERATOR
from tests.helpers import API_SENSOR, Worker, wait_for
from twin.events import ParkingOccupancyReported

pytestmark = pytest.mark.broker


def test_entities_with_live_state_and_clear_errors(worker: Worker, big_pack_dir: Path, api_url: str) -> None:
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=worker.bootstrap, region_pack=big_pack_dir))
    sid = API_SENSOR
    with TestClient(app, headers=OPERATOR) as client:
        pub = EventPublisher(worker.bootstrap, SingleObjectCodec())
        pub.send(SENSOR_TOPICS["parking"].name, sid, ParkingOccupancyReported(
            entity_id=sid, region="kiel", occurred_at=datetime(2001, 1, 1, tzinfo=UTC), source="api-test",
            occupied=77, capacity=120))
        pub.flush()
        got = wait_for(lambda: (r := client.get(f"/entities/{sid}").json())["properties"].get("reported", {})
                       .get("values", {}).get("occupied") == 77 and r, 60, "the reading in the API")
        assert got["geometry"]["type"] == "Point"
        page = client.get("/entities", params={"type": "building", "neighbourhood": "gaarden", "limit": 5}).json()
        assert page["type"] == "FeatureCollection" and len(page["features"]) == 5 and page["total"] > 5
        assert "buildings" in page["synthetic_layers"]
        assert client.get("/entities", params={"bbox": "10.14,54.31,10.15,54.32", "type": "building"}).json()["total"] > 0
        bad = client.get("/entities/kiel:gaarden:castle:1")
        assert bad.status_code == 422 and "unknown kind 'castle'" in bad.json()["detail"]
        assert client.get("/entities/kiel:gaarden:sensor:nope").status_code == 404
        assert "4 are needed" in client.get("/entities", params={"bbox": "1,2,3"}).json()["detail"]
        assert client.get("/entities", params={"neighbourhood": "mars"}).status_code == 404
        assert client.get("/health").json()["status"] == "ok"
        # a second API process (the session's) over the same topics holds the same state
        import httpx

        other = wait_for(lambda: (r := httpx.get(f"{api_url}/entities/{sid}", timeout=5, headers=OPERATOR).json())["properties"]
                         .get("reported", {}).get("values", {}).get("occupied") == 77 and r, 30, "the reading in the other API")
        assert other["properties"]["reported"] == got["properties"]["reported"]
