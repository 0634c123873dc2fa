"""``GET /stops`` (public): the region's bus stops from the GTFS schedule (the SYNTHETIC Kiel fixture), filtered by
neighbourhood or bbox, paged; 404 without a schedule, 503 with the reason when the schedule cannot be read."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from tests.sources.test_gtfs_units import FIX
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker


@pytest.fixture
def client(topics: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=topics, region_pack=BUNDLED_DIR / "kiel",
                                 data_dir=tmp_path / "api", public_rate=10_000, public_burst=10_000))
    with TestClient(app) as c:
        yield c


def test_the_stops_of_the_schedule_are_listed_filtered_and_paged(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("PLIETSCH_GTFS_STATIC", str(FIX))
    got = client.get("/stops")  # no login: the public role
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["total"] == 5 and body["synthetic"] is True and body["source"] == str(FIX)
    by_id = {s["stop_id"]: s for s in body["stops"]}
    assert list(by_id) == sorted(by_id)
    assert by_id["gaarden-vinetaplatz"] == {
        "stop_id": "gaarden-vinetaplatz", "entity_id": "kiel:gaarden:stop:gaarden-vinetaplatz",
        "name": "Gaarden, Vinetaplatz (SYNTHETIC)", "neighbourhood": "gaarden", "lat": 54.3142, "lon": 10.1437,
        "routes": ["11", "60"]}
    assert by_id["kiel-hbf"]["neighbourhood"] is None and by_id["kiel-hbf"]["entity_id"] == "kiel:_:stop:kiel-hbf"
    gaarden = client.get("/stops", params={"neighbourhood": "gaarden"}).json()
    assert {s["stop_id"] for s in gaarden["stops"]} == {"gaarden-vinetaplatz", "gaarden-karlstal"}
    north = client.get("/stops", params={"bbox": "10.16,54.38,10.19,54.40"}).json()
    assert {s["stop_id"] for s in north["stops"]} == {"friedrichsort-pries", "friedrichsort-faehre"}
    pages = [client.get("/stops", params={"limit": 2, "offset": o}).json() for o in (0, 2, 4)]
    assert [len(p["stops"]) for p in pages] == [2, 2, 1] and all(p["total"] == 5 for p in pages)
    assert [s["stop_id"] for p in pages for s in p["stops"]] == list(by_id)
    # bad input: what was wrong, with what value
    unknown = client.get("/stops", params={"neighbourhood": "atlantis"})
    assert unknown.status_code == 404 and "'atlantis'" in unknown.json()["detail"]
    assert client.get("/stops", params={"bbox": "10,54"}).status_code == 422
    big = client.get("/stops", params={"limit": 5000})
    assert big.status_code == 422 and "5000" in big.json()["detail"]
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/stops"]["get"]
    assert {"200", "404", "422", "503"} <= set(op["responses"])
    assert next(p for p in op["parameters"] if p["name"] == "limit")["schema"]["maximum"] == 1000
    assert doc["components"]["schemas"]["StopInfo"]["properties"]["routes"]["description"].startswith("Linien")
    # another schedule (the path changed): read again; a broken one: 503 with the reason
    broken = tmp_path / "broken"
    shutil.copytree(FIX, broken)
    (broken / "stops.txt").write_text("stop_id,stop_name,stop_lat,stop_lon\nx,X,north,10.1\n")
    monkeypatch.setenv("PLIETSCH_GTFS_STATIC", str(broken))
    bad = client.get("/stops")
    assert bad.status_code == 503 and "stops.txt row 1, field stop_lat: 'north'" in bad.json()["detail"]


def test_without_a_schedule_the_stops_are_404_with_the_reason(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLIETSCH_GTFS_STATIC", raising=False)
    got = client.get("/stops")
    assert got.status_code == 404 and "PLIETSCH_GTFS_STATIC" in got.json()["detail"]
