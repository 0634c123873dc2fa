"""Municipal events live in the twin: road works on road segments, citizen reports and public events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from schemas.codec import SingleObjectCodec
from streams.catalogue import DEAD_LETTERS, MUNICIPAL_TOPICS
from streams.consume import drain
from streams.publisher import EventPublisher
from tests.credentials import OPERATOR
from tests.helpers import Worker, wait_for
from twin import municipal
from twin.events import DefectReported, PublicEventScheduled, RoadWorksAnnounced
from twin.region import load_pack

T = datetime(2027, 6, 1, 8, tzinfo=UTC)


def works(road: str, lanes: int, day: int, eid: str) -> RoadWorksAnnounced:
    return RoadWorksAnnounced(entity_id=road, region="kiel", occurred_at=T, source="Tiefbauamt (test)", event_id=eid,
                              starts_at=T + timedelta(days=day), ends_at=T + timedelta(days=day + 5), lanes_closed=lanes,
                              description="Fernwärmeleitung")


def test_fold_road_works_and_repeats() -> None:
    s1 = municipal.apply(None, works("kiel:gaarden:road:r0001", 1, 3, "w1"))
    assert s1 is not None
    s2 = municipal.apply(s1, works("kiel:gaarden:road:r0001", 2, 1, "w2"))
    assert s2 is not None and s2["revision"] == 1 and s2["lanes_closed_max"] == 2
    assert [w["event_id"] for w in s2["works"]] == ["w2", "w1"]  # by start
    assert municipal.apply(s2, works("kiel:gaarden:road:r0001", 2, 1, "w2")) is None  # redelivery


@pytest.mark.broker
def test_municipal_events_reach_the_api(api_url: str, worker: Worker, big_pack_dir: Path) -> None:
    pack = load_pack(big_pack_dir)
    road = sorted(pack.roads)[3]
    report = "kiel:gaarden:report:defect-77"
    event = "kiel:_:event:kieler-woche-2027"
    pub = EventPublisher(worker.bootstrap, SingleObjectCodec())
    pub.send(MUNICIPAL_TOPICS["road_works"].name, road, works(road, 1, 2, "rw-test-1"))
    pub.send(MUNICIPAL_TOPICS["road_works"].name, "kiel:gaarden:road:nowhere", works("kiel:gaarden:road:nowhere", 1, 2, "rw-bad"))
    pub.send(MUNICIPAL_TOPICS["defect_reports"].name, report, DefectReported(
        entity_id=report, region="kiel", occurred_at=T, source="citizen app", category="street_lamp",
        description="Laterne flackert", lon=10.147, lat=54.315))
    pub.send(MUNICIPAL_TOPICS["public_events"].name, event, PublicEventScheduled(
        entity_id=event, region="kiel", occurred_at=T, source="Kiel-Marketing", title="Kieler Woche",
        starts_at=T + timedelta(days=20), ends_at=T + timedelta(days=29), expected_visitors=3_000_000, lon=10.15, lat=54.33))
    pub.flush()
    with httpx.Client(base_url=api_url, timeout=20, headers=OPERATOR) as c:
        got = wait_for(lambda: (r := c.get(f"/entities/{road}").json())["properties"].get("reported", {}).get("works") and r,
                       60, "the road works in the API")
        assert got["properties"]["reported"]["works"][0]["description"] == "Fernwärmeleitung"
        reports = wait_for(lambda: c.get("/entities", params={"type": "report"}).json()["features"], 30, "the report")
        assert reports[0]["id"] == report and reports[0]["geometry"]["coordinates"] == [10.147, 54.315]
        assert c.get(f"/entities/{event}").json()["properties"]["reported"]["title"] == "Kieler Woche"
    codec = SingleObjectCodec()
    dead = wait_for(lambda: [r for m in drain(worker.bootstrap, DEAD_LETTERS.name)
                             for _, r in [codec.decode(m.value())] if b"rw-bad" in r["original_value"]], 30, "the dead letter")
    assert dead[0]["error_type"] == "unknown_entity" and "not a road segment" in dead[0]["reason"]

