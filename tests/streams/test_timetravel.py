"""Time travel from snapshots equals the full fold: for random event sequences (duplicates, late and reordered events,
municipal events, storm surges, several shards) written through the archive writer with frequent snapshots and merges,
the twin at a random T from (snapshot + events after it, queried in DuckDB) is the fold of every archived event with
occurred_at <= T in archive order."""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.catalogue import MUNICIPAL_TOPICS, SENSOR_TOPICS
from streams.history.engine import DuckDBHistory
from streams.history.store import Manifest
from streams.history.timetravel import base_snapshot, full_fold, state_at
from streams.history.writer import ArchiveWriter
from twin.events import DefectReported, Event, PublicEventScheduled, RoadWorksAnnounced, WaterLevelMeasured
from twin.region import bundled_pack
from twin.state import TwinState, fold, to_json

PACK = bundled_pack()
T0 = datetime(2026, 6, 30, 22, 0, tzinfo=UTC)  # crosses midnight UTC: two days of files
SENSORS = sorted(PACK.sensors.values(), key=lambda s: s.id)
ROADS = sorted(PACK.roads)[:3]


def _archive(root: Path, events: list[tuple[str, int, Event]], *, snapshot_every: int, fanin: int,
             flush_every: int) -> list[tuple[str, int, Event]]:
    """Archive *events* (offset = position) with a flush every *flush_every*; returns them."""
    w = ArchiveWriter(root, PACK, snapshot_every=snapshot_every, fanin=fanin)
    for i, (topic, part, e) in enumerate(events):
        w.add(topic, part, i, e)
        if i % flush_every == flush_every - 1:
            w.flush()
    w.flush()
    return events


def _events(rng: random.Random, n: int) -> list[tuple[str, int, Event]]:
    from streams.simulator import ReadingFactory

    factory = ReadingFactory(PACK, seed=rng.randrange(1000))
    out: list[tuple[str, int, Event]] = []
    for i in range(n):
        t = T0 + timedelta(seconds=rng.randrange(0, 4 * 3600))  # random, so late and reordered
        r = rng.random()
        if r < 0.05:
            e: Event = RoadWorksAnnounced(entity_id=rng.choice(ROADS), region="kiel", occurred_at=t, source="t",
                                          starts_at=t, ends_at=t + timedelta(days=2), lanes_closed=rng.randrange(3),
                                          description=f"works {i}")
            topic = MUNICIPAL_TOPICS["road_works"].name
        elif r < 0.08:
            e = DefectReported(entity_id=f"kiel:gaarden:report:d{rng.randrange(3)}", region="kiel", occurred_at=t,
                               source="t", category="pothole", description="hole", lon=10.13, lat=54.31)
            topic = MUNICIPAL_TOPICS["defect_reports"].name
        elif r < 0.10:
            e = PublicEventScheduled(entity_id="kiel:_:event:fest", region="kiel", occurred_at=t, source="t", title="Fest",
                                     starts_at=t, ends_at=t + timedelta(hours=5), expected_visitors=i, lon=10.1, lat=54.3)
            topic = MUNICIPAL_TOPICS["public_events"].name
        elif r < 0.25:
            # a gauge that feeds coast segments (the first water-level sensor feeds none: no alerts were tested)
            gauge = next(s for s in SENSORS if s.sensor_kind == "water_level" and PACK.coast_by_gauge.get(s.id))
            e = WaterLevelMeasured(entity_id=gauge.id, region="kiel", occurred_at=t, source="t",
                                   level_m=round(rng.uniform(-0.5, 2.8), 2))  # surges raise and clear alerts
            topic = SENSOR_TOPICS["water_level"].name
        else:
            s = rng.choice(SENSORS)
            e = factory.reading(s, t)
            topic = SENSOR_TOPICS[s.sensor_kind].name
        out.append((topic, rng.randrange(2), e))
        if rng.random() < 0.1 and out:  # a duplicate: the same event again in a later record
            out.append(out[rng.randrange(len(out))])
    return out


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(50, 400), every=st.integers(3, 45))  # at least one snapshot in 50 events
def test_state_at_from_snapshots_equals_the_full_fold(seed: int, n: int, every: int) -> None:
    rng = random.Random(seed)
    events = _events(rng, n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        w = ArchiveWriter(root, PACK, snapshot_every=every, fanin=4)
        offsets: dict[tuple[str, int], int] = {}
        arrived: list[tuple[Event, int]] = []
        for i, (topic, part, e) in enumerate(events):
            off = offsets.get((topic, part), 0)
            offsets[(topic, part)] = off + 1
            w.add(topic, part, off, e)
            arrived.append((e, part))
            if i % 61 == 60:
                w.flush()
        w.flush()
        m = Manifest.load(root)
        assert m.snapshot_index().all() and sum(f.rows for f in m.files.values()) == len(events)
        engine = DuckDBHistory(root, PACK)
        times = [T0 - timedelta(minutes=1), T0 + timedelta(hours=5)] + [
            T0 + timedelta(seconds=rng.randrange(0, 4 * 3600)) for _ in range(6)]
        for at in times:
            expected = to_json(fold(TwinState.empty(PACK), arrived, until=at))
            assert to_json(state_at(m, PACK, at)) == expected
            assert to_json(engine.state_at(at)) == expected
            assert to_json(full_fold(m, PACK, at)) == expected
        used = {base_snapshot(m, at) is not None for at in times}
        assert True in used  # snapshots were used for some T
        assert to_json(state_at(m, PACK, None)) == to_json(fold(TwinState.empty(PACK), arrived))
        engine.close()


def test_relayout_keeps_every_row_and_time_travel(tmp_path: Path) -> None:
    """Files merged in the old order (entity first) rewritten by ``relayout``: the same rows and seq, sorted by
    (10-minute bucket, entity, time), and the twin at any T unchanged (the snapshots stay valid)."""
    import duckdb
    import pyarrow.parquet as pq

    from streams.history.store import SORT_BUCKET_US, relayout, to_us

    rng = random.Random(11)
    events = _archive(tmp_path, _events(rng, 600), snapshot_every=50, fanin=2, flush_every=50)
    m = Manifest.load(tmp_path)
    merged = [f for f in m.files.values() if f.level > 0]
    assert merged
    con = duckdb.connect()
    for f in merged:  # as an older version wrote them: entity first
        p = tmp_path / f.path
        con.execute(f"COPY (SELECT * FROM read_parquet('{p}') ORDER BY entity_id, occurred_at, seq) TO '{p}.old' "
                    "(FORMAT parquet)")
        Path(f"{p}.old").replace(p)
    times = [T0 + timedelta(seconds=rng.randrange(0, 4 * 3600)) for _ in range(5)]
    before = [to_json(state_at(m, PACK, at)) for at in times]
    rows_before = sorted(r["seq"] for f in m.files.values() for r in pq.read_table(tmp_path / f.path).to_pylist())
    lines: list[str] = []
    assert relayout(m, report=lines.append) == len(merged) == len(lines)
    m2 = Manifest.load(tmp_path)
    assert not {f.path for f in merged} & set(m2.files) and all((tmp_path / f.path).exists() for f in m2.files.values())
    assert not any((tmp_path / f.path).exists() for f in merged)
    assert sorted(r["seq"] for f in m2.files.values() for r in pq.read_table(tmp_path / f.path).to_pylist()) == rows_before
    for f in m2.files.values():
        if f.level > 0:
            t = pq.read_table(tmp_path / f.path)
            keys = list(zip([to_us(x) // SORT_BUCKET_US for x in t.column("occurred_at").to_pylist()],
                            t.column("entity_id").to_pylist(), t.column("occurred_at").to_pylist(),
                            t.column("seq").to_pylist(), strict=True))
            assert keys == sorted(keys)
    assert [to_json(state_at(m2, PACK, at)) for at in times] == before
    assert before == [to_json(fold(TwinState.empty(PACK), [(e, p) for _, p, e in events], until=at)) for at in times]


def test_densify_snapshots_bounds_the_events_after_a_snapshot(tmp_path: Path) -> None:
    """An archive written with sparse snapshots gets more, so that at most ``every`` events follow one; each new one
    holds the fold of its prefix, and the twin at any T is unchanged."""
    from streams.history.timetravel import densify_snapshots, load_snapshot

    rng = random.Random(5)
    events = _archive(tmp_path, _events(rng, 500), snapshot_every=40, fanin=3, flush_every=70)
    m = Manifest.load(tmp_path)
    before = m.snapshot_index().all()
    times = [T0 + timedelta(seconds=rng.randrange(0, 4 * 3600)) for _ in range(6)]
    expected = [to_json(fold(TwinState.empty(PACK), [(e, p) for _, p, e in events], until=at)) for at in times]
    assert [to_json(state_at(m, PACK, at)) for at in times] == expected
    lines: list[str] = []
    added = densify_snapshots(m, PACK, every=7, report=lines.append, every_s=0.0)
    m2 = Manifest.load(tmp_path)
    after = m2.snapshot_index().all()
    assert added > 0 and len(after) == len(before) + added and lines
    assert {s.seq for s in before} <= {s.seq for s in after}
    ends = [-1] + [s.seq for s in after] + [m2.next_seq - 1]
    assert max(b - a for a, b in zip(ends, ends[1:], strict=False)) <= 7
    arrived = [(e, p) for _, p, e in events]
    for s in after[::5]:
        snap = load_snapshot(m2, PACK, s, TwinState.empty(PACK).horizon)
        assert snap is not None and to_json(snap) == to_json(fold(TwinState.empty(PACK), arrived[:s.seq + 1]))
    assert [to_json(state_at(m2, PACK, at)) for at in times] == expected
    assert densify_snapshots(m2, PACK, every=7) == 0
