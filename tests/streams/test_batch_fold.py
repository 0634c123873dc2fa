"""The hot path's batch folds equal the one-reading-at-a-time folds that twin.state uses (contract 7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.serde import to_record
from twin import aggregates
from twin.events import BY_NAME, ParkingOccupancyReported, Reading, TrafficCounted
from twin.region import BUNDLED_DIR, load_pack
from twin.sensors import SensorState, apply, fold_rows

PACK = load_pack(BUNDLED_DIR / "kiel")
T0 = datetime(2026, 3, 1, tzinfo=UTC)
TRAFFIC = sorted(s.id for s in PACK.sensors.values() if s.sensor_kind == "traffic_count" and s.road)[:3]
PARKING = sorted(s.id for s in PACK.sensors.values() if s.sensor_kind == "parking" and s.neighbourhood)[:3]


@st.composite
def readings(draw: st.DrawFn) -> list[Reading]:
    out: list[Reading] = []
    for i in range(draw(st.integers(1, 40))):
        minute = draw(st.integers(0, 90))
        eid = draw(st.sampled_from([f"e{i}", "dup-1", "dup-2"]))
        if draw(st.booleans()):
            out.append(TrafficCounted(entity_id=draw(st.sampled_from(TRAFFIC)), region="kiel", source="t", event_id=eid,
                                      occurred_at=T0 + timedelta(minutes=minute), vehicles=draw(st.integers(0, 50)), interval_s=60))
        else:
            cap = draw(st.integers(1, 100))
            out.append(ParkingOccupancyReported(entity_id=draw(st.sampled_from(PARKING)), region="kiel", source="t", event_id=eid,
                                                occurred_at=T0 + timedelta(minutes=minute), capacity=cap,
                                                occupied=draw(st.integers(0, cap))))
    return out


def rows(rs: list[Reading]) -> list[tuple[str, dict, datetime]]:
    return [(type(r).__name__, {**to_record(r), "occurred_at": r.occurred_at.isoformat()}, r.occurred_at) for r in rs]


@settings(max_examples=300, deadline=None)
@given(readings(), st.integers(1, 5))
def test_sensor_fold_rows_equals_apply(rs: list[Reading], cut: int) -> None:
    one: dict[str, SensorState | None] = {}
    for r in rs:
        one[r.entity_id] = apply(one.get(r.entity_id), r)
    batched: dict[str, SensorState | None] = {}
    for start in range(0, len(rs), cut):  # any split into batches gives the same states
        fold_rows(batched, rows(rs[start:start + cut]), lambda name: BY_NAME[name].sensor_kind)  # type: ignore[attr-defined]
    assert {k: v.to_json() for k, v in one.items() if v} == {k: v.to_json() for k, v in batched.items() if v}


@settings(max_examples=300, deadline=None)
@given(readings(), st.integers(1, 5))
def test_aggregate_fold_rows_equals_fold_reading_by_reading(rs: list[Reading], cut: int) -> None:
    one: dict[str, aggregates.Partial] = {}
    for r in rs:
        aggregates.fold(one, [r], PACK.sensors, 0)
    batched: dict[str, aggregates.Partial] = {}
    for start in range(0, len(rs), cut):
        aggregates.fold_rows(batched, rows(rs[start:start + cut]), PACK.sensors, 0)

    def figures(ps: dict[str, aggregates.Partial]) -> dict[str, tuple]:
        return {k: (p.total, p.count, p.minimum, p.maximum, p.members) for k, p in ps.items()}

    assert figures(one) == figures(batched)
    # parking: each member holds its newest reading, whatever the arrival order
    for p in one.values():
        for sid, (occupied, capacity) in p.members.items():
            newest = max((r for r in rs if r.entity_id == sid), key=lambda r: r.occurred_at)
            assert isinstance(newest, ParkingOccupancyReported)
            assert newest.occurred_at.isoformat() == p.member_at[sid]
            same_time = [(float(r.occupied), float(r.capacity)) for r in rs if r.entity_id == sid  # type: ignore[attr-defined]
                         and r.occurred_at == newest.occurred_at]
            assert (occupied, capacity) in same_time
