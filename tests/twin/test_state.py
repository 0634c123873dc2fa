from datetime import UTC, datetime, timedelta

from twin import municipal
from twin.events import RoadWorksAnnounced, TrafficCounted, WaterLevelMeasured
from twin.region import bundled_pack
from twin.state import TwinState, apply, fold, from_snapshot, to_json, to_snapshot

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
    s3 = apply(s2, works)
    assert s3.municipal["kiel:gaarden:road:r0001"] == municipal.apply(None, works)  # the live agent's own function
    assert apply(s3, works) is s3  # a redelivered event changes nothing
    later = works.model_copy(update={"event_id": "w2", "lanes_closed": 2, "occurred_at": T + timedelta(hours=1)})
    assert apply(s3, later).municipal["kiel:gaarden:road:r0001"]["lanes_closed_max"] == 2  # not just the last raw event


def test_fold_until_gives_the_twin_as_it_stood() -> None:
    pack = bundled_pack()
    sid = "kiel:gaarden:sensor:traffic-count-001"
    events = [TrafficCounted(entity_id=sid, region="kiel", occurred_at=T + timedelta(minutes=5 * i), source="t", vehicles=i,
                             interval_s=300) for i in range(10)]
    at = fold(TwinState.empty(pack), events, until=T + timedelta(minutes=22))
    assert at.sensors[sid].values["vehicles"] == 4 and at.as_of == T + timedelta(minutes=20)
    assert fold(TwinState.empty(pack), events).sensors[sid].values["vehicles"] == 9


def test_aggregates_by_shard_horizon_and_snapshot_round_trip() -> None:
    import json

    pack = bundled_pack()
    sid = "kiel:gaarden:sensor:traffic-count-001"
    events = [(TrafficCounted(entity_id=sid, region="kiel", occurred_at=T + timedelta(minutes=5 * i), source="t",
                              vehicles=i, interval_s=300), i % 2) for i in range(12)]
    s = fold(TwinState.empty(pack, horizon=timedelta(hours=2)), events)
    aggs = to_json(s)["aggregates"]
    assert sum(a["count"] for a in aggs.values()) == 12 and {p.shard for p in s.aggregates.values()} == {0, 1}
    late = TrafficCounted(entity_id=sid, region="kiel", occurred_at=T - timedelta(hours=5), source="t", vehicles=7,
                          interval_s=300)
    assert apply(s, late) is s  # older than the sensor state and beyond the aggregate horizon
    def later(shard: int) -> tuple[TrafficCounted, int]:
        return TrafficCounted(entity_id=sid, region="kiel", occurred_at=T + timedelta(hours=6), source="t", vehicles=1,
                              interval_s=300), shard

    half = fold(s, [later(0)])  # the horizon is per shard: shard 0 moved on, shard 1 keeps its windows
    assert {p.shard for p in half.aggregates.values() if p.window != T + timedelta(hours=6)} == {1}
    far = fold(half, [later(1)])
    assert [a["window"] for a in to_json(far)["aggregates"].values()] == [(T + timedelta(hours=6)).isoformat()]
    doc = json.loads(json.dumps(to_snapshot(s)))
    back = from_snapshot(pack, doc)
    assert back == s and to_json(back) == to_json(s)
