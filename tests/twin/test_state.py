from datetime import UTC, datetime, timedelta

from twin.events import RoadWorksAnnounced, TrafficCounted, WaterLevelMeasured
from twin.region import bundled_pack
from twin.state import TwinState, apply, fold

T = datetime(2023, 10, 20, 12, tzinfo=UTC)
STAFF = "kiel:gaarden:sensor:water-level-001"


def test_apply_is_pure_and_feeds_coast_and_alerts() -> None:
    pack = bundled_pack()
    empty = TwinState.empty(pack)
    high = WaterLevelMeasured(entity_id=STAFF, region="kiel", occurred_at=T, source="t", level_m=1.6)
    s1 = apply(empty, high)
    assert empty.sensors == {} and empty.coast == {}  # the input is untouched
    segs = pack.coast_by_gauge[STAFF]
    assert {c for c in s1.coast} == {s.id for s in segs}
    assert {a.category for a in s1.alerts.values()} >= {"storm_surge"}
    s2 = apply(s1, WaterLevelMeasured(entity_id=STAFF, region="kiel", occurred_at=T + timedelta(hours=5), source="t", level_m=0.2))
    assert not any(a.category == "storm_surge" for a in s2.alerts.values())
    assert apply(s2, high) is s2  # older than what the twin holds: nothing changes
    works = RoadWorksAnnounced(entity_id="kiel:gaarden:road:r0001", region="kiel", occurred_at=T, source="t", starts_at=T,
                               ends_at=T + timedelta(days=3), lanes_closed=1, description="Kanal")
    assert apply(s2, works).municipal["kiel:gaarden:road:r0001"] == works


def test_fold_until_gives_the_twin_as_it_stood() -> None:
    pack = bundled_pack()
    sid = "kiel:gaarden:sensor:traffic-count-001"
    events = [TrafficCounted(entity_id=sid, region="kiel", occurred_at=T + timedelta(minutes=5 * i), source="t", vehicles=i,
                             interval_s=300) for i in range(10)]
    at = fold(TwinState.empty(pack), events, until=T + timedelta(minutes=22))
    assert at.sensors[sid].values["vehicles"] == 4 and at.as_of == T + timedelta(minutes=20)
    assert fold(TwinState.empty(pack), events).sensors[sid].values["vehicles"] == 9
