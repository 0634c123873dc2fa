"""Traffic what-if scenarios end to end: API -> ScenarioRequested (kind traffic) -> scenario agent -> files and events
on scenario.results -> API; and the coupling with a storm-surge scenario's cut roads."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.broker import EmbeddedBroker
from streams.catalogue import ensure_topics
from tests.credentials import OPERATOR
from tests.helpers import Worker, start_api, wait_for

pytestmark = pytest.mark.broker


def _finished(c: httpx.Client, sid: str) -> dict[str, Any]:
    def done() -> bool:
        r = c.get(f"/scenarios/{sid}")
        return r.status_code == 200 and r.json()["status"] in ("completed", "failed", "cancelled")

    wait_for(done, 180, f"scenario {sid}")
    return c.get(f"/scenarios/{sid}").json()  # type: ignore[no-any-return]


def _run(c: httpx.Client, body: dict[str, Any]) -> str:
    r = c.post("/scenarios/traffic", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "traffic"
    sid: str = r.json()["id"]
    status = _finished(c, sid)
    assert status["status"] == "completed", status
    return sid


def test_closure_and_extra_demand_against_the_baseline(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=60, headers=OPERATOR) as c:
        network = c.get("/traffic/network").json()
        assert network["synthetic"] and network["zones"] and network["features"]
        primary = sorted({f["properties"]["road"] for f in network["features"] if f["properties"]["road_class"] == "primary"})
        hood = network["zones"][0]["neighbourhood"]
        sid = _run(c, {"kind": "traffic", "name": "Kieler Woche + closure", "closures": primary[:3],
                       "extra_demand": [{"zone": hood, "trips": 800, "note": "Kieler Woche"}]})
        status = c.get(f"/scenarios/{sid}").json()
        assert status["steps"] == 2 and "VHT" in status["message"]
        s = c.get(f"/scenarios/{sid}/summary").json()
        assert s["kind"] == "traffic" and s["request"]["closures"] == primary[:3]
        assert s["trips"] == pytest.approx(s["trips_before"] + 800, abs=0.5)
        assert s["scenario"]["converged"] and s["scenario"]["relative_gap"] < 1e-4
        assert s["vht"]["after"] > s["vht"]["before"] and s["displaced_volume"] > 0
        assert s["neighbourhood_times"] and "demand" in s["synthetic_inputs"]
        links = c.get(f"/scenarios/{sid}/traffic/links").json()
        closed = [f for f in links["features"] if f["properties"]["closed"]]
        assert closed and {f["properties"]["road"] for f in closed} == set(primary[:3])
        assert all(f["properties"]["volume"] == 0 and f["properties"]["vc"] is None for f in closed)
        assert any(f["properties"]["volume_diff"] > 0 for f in links["features"])
        zones = c.get(f"/scenarios/{sid}/traffic/zones").json()
        assert len(zones["before_min"]) == len(network["zones"]) == len(zones["after_min"][0])
        for flood_only in ("assets", "flooded", "depth/0.tif", "rasters/max_depth.tif", f"compare/{sid}"):
            r = c.get(f"/scenarios/{sid}/{flood_only}")
            assert r.status_code == 404 and "is a traffic scenario" in r.json()["detail"], (flood_only, r.text)


def test_bad_traffic_requests_get_clear_4xx(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=60, headers=OPERATOR) as c:
        r = c.post("/scenarios/traffic", json={"closures": ["kiel:gaarden:road:nowhere"]})
        assert r.status_code == 404 and "unknown link or road id(s): kiel:gaarden:road:nowhere" in r.json()["detail"]
        r = c.post("/scenarios/traffic", json={"extra_demand": [{"zone": "atlantis", "trips": 10}]})
        assert r.status_code == 404 and "unknown zone or neighbourhood 'atlantis'" in r.json()["detail"]
        r = c.post("/scenarios/traffic", json={"gap": 2})
        assert r.status_code == 422 and "gap" in r.text
        r = c.post("/scenarios/traffic", json={"closures_from_flood": "kiel:_:scenario:none"})
        assert r.status_code == 404 and "no scenario" in r.json()["detail"]


def test_roads_a_storm_surge_cuts_become_closures(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=60, headers=OPERATOR) as c:
        r = c.post("/scenarios", json={"name": "surge", "preset": "kiel-2023-10-20", "duration_h": 24, "sea_level_rise_m": 1.0})
        assert r.status_code == 202, r.text
        flood = r.json()["id"]
        assert _finished(c, flood)["status"] == "completed"
        cut = c.get(f"/scenarios/{flood}/summary").json()["roads_cut"]
        assert cut, "a 1.95 m surge on 1 m of sea-level rise cuts roads in the pack"
        sid = _run(c, {"name": "surge + traffic", "closures_from_flood": flood})
        s = c.get(f"/scenarios/{sid}/summary").json()
        network_roads = {f["properties"]["road"] for f in c.get("/traffic/network").json()["features"]}
        assert s["flood_roads_closed"] == sorted(set(cut) & network_roads) and s["closed_link_count"] > 0
        assert s["most_delayed_pairs"] or s["pairs_cut_off"]
        links = c.get(f"/scenarios/{sid}/traffic/links").json()["features"]
        assert {f["properties"]["road"] for f in links if f["properties"]["closed"]} == set(s["flood_roads_closed"])
        r = c.post("/scenarios/traffic", json={"closures_from_flood": sid})
        assert r.status_code == 422 and "needs a storm-surge scenario" in r.json()["detail"]


def test_live_road_works_in_the_twin_close_lanes(api_url: str, worker: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from schemas.codec import SingleObjectCodec
    from streams.catalogue import MUNICIPAL_TOPICS
    from streams.publisher import EventPublisher
    from twin.events import RoadWorksAnnounced

    with httpx.Client(base_url=api_url, timeout=60, headers=OPERATOR) as c:
        network = c.get("/traffic/network").json()
        road = sorted({f["properties"]["road"] for f in network["features"] if f["properties"]["road_class"] == "primary"})[-1]
        now = datetime.now(UTC)
        pub = EventPublisher(worker.bootstrap, SingleObjectCodec())
        pub.send(MUNICIPAL_TOPICS["road_works"].name, road, RoadWorksAnnounced(
            entity_id=road, region="kiel", occurred_at=now, source="Tiefbauamt (traffic test)", event_id="rw-traffic-1",
            starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=3), lanes_closed=1, description="Leitungsbau"))
        pub.flush()
        wait_for(lambda: c.get(f"/entities/{road}").json()["properties"].get("reported", {}).get("works"), 120,
                 "the road works in the twin")
        sid = _run(c, {"name": "works", "live_road_works": True})
        s = c.get(f"/scenarios/{sid}/summary").json()
        assert s["request"]["road_works_applied"] == [road]
        assert {"link": road, "lanes_closed": 1} in s["request"]["lane_closures"]
        mine = [f["properties"] for f in c.get(f"/scenarios/{sid}/traffic/links").json()["features"] if f["properties"]["road"] == road]
        assert mine and all(p["capacity"] == 1000.0 and not p["closed"] for p in mine)  # 2 lanes of 1000 veh/h, one closed
        r = c.post("/scenarios/traffic", json={"road_works_applied": [road]})
        assert r.status_code == 422 and "set by the API" in r.json()["detail"]


@pytest.fixture
def own_stack(big_pack_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Worker]]:
    """A broker, worker and API of this test's own: its counts are dated a year ahead, and on the session's broker they
    would make every later test's readings of those sensors older than the twin's (refused) and push the traffic
    aggregates' horizon past the windows other tests check."""
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        worker = Worker(broker.bootstrap_servers, big_pack_dir, f"plietsch-traffic-{uuid.uuid4().hex[:6]}", tmp_path,
                        scenarios=True)
        worker.start()
        try:
            env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, PLIETSCH_REGION_PACK=str(big_pack_dir),
                       PLIETSCH_DATA_DIR=str(tmp_path), **worker.api_env())
            proc, url = start_api(env, tmp_path / "api.log", 90, lambda r: r.json()["status"] == "ok")
            try:
                yield url, worker
            finally:
                proc.terminate()
                proc.wait(20)
        finally:
            worker.stop()


def test_live_counts_scale_the_demand_and_the_fit_is_reported(own_stack: tuple[str, Worker]) -> None:
    from datetime import UTC, datetime, timedelta

    from schemas.codec import SingleObjectCodec
    from streams.catalogue import SENSOR_TOPICS
    from streams.publisher import EventPublisher
    from twin.events import TrafficCounted

    api_url, worker = own_stack
    with httpx.Client(base_url=api_url, timeout=60, headers=OPERATOR) as c:
        roads = {f["properties"]["road"] for f in c.get("/traffic/network").json()["features"]}
        sensors = [f for f in c.get("/entities", params={"type": "sensor", "limit": 1000}).json()["features"]
                   if f["properties"]["sensor_kind"] == "traffic_count" and f["properties"].get("road") in roads]
        assert len(sensors) >= 3
        pub = EventPublisher(worker.bootstrap, SingleObjectCodec())
        t = datetime.now(UTC) + timedelta(days=401)  # newer than anything the simulator of this stack wrote
        for k, f in enumerate(sensors):
            pub.send(SENSOR_TOPICS["traffic_count"].name, f["id"], TrafficCounted(
                entity_id=f["id"], region="kiel", occurred_at=t, source="traffic-test", vehicles=40 + 10 * k, interval_s=300))
        pub.flush()
        want = {f["id"]: 40 + 10 * k for k, f in enumerate(sensors)}

        def counts_in_the_twin() -> bool:  # every sensor's, not only the last one's: they sit on four partitions
            listing = c.get("/entities", params={"type": "sensor", "limit": 1000}).json()["features"]
            have = {f["id"]: ((f["properties"].get("reported") or {}).get("values") or {}).get("vehicles") for f in listing}
            return all(have.get(sid) == n for sid, n in want.items())

        wait_for(counts_in_the_twin, 120, "the counts in the twin")
        sid = _run(c, {"name": "counts", "live_counts": True})
        s = c.get(f"/scenarios/{sid}/summary").json()
        counted = {x["station"]: x["vehicles_per_hour"] for x in s["request"]["counts"]}
        assert counted[sensors[0]["id"]] == 480.0 and len(counted) == len(sensors)  # 40 vehicles in 5 min
        fit = s["count_fit"]
        assert fit["demand_factor"] > 0 and len(fit["after"]["stations"]) == len(sensors)
        assert all(x["geh"] >= 0 for x in fit["after"]["stations"]) and "r2" in fit["after"]
