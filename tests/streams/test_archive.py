"""The archive on disk (Parquet by topic and UTC day, manifest, compaction, tail) and the sink reading a real broker:
only valid events, each origin record once, a drain on stop."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from schemas.codec import SingleObjectCodec
from streams.archive import REPLAY_HEADERS, ArchiveWriter, archive_files, read_events, rebuild, run_sink, tail
from streams.catalogue import SENSOR_TOPICS
from streams.history.engine import DuckDBHistory
from streams.history.store import SCHEMA, SORT_BUCKET_US, Manifest, to_us
from streams.publisher import EventPublisher, producer_config
from streams.serde import to_record
from tests.helpers import wait_for
from twin.events import DeadLettered, TrafficCounted, WaterLevelMeasured
from twin.region import bundled_pack

T = datetime(2026, 3, 1, 23, 50, tzinfo=UTC)
SID = "kiel:gaarden:sensor:traffic-count-001"
STAFF = "kiel:gaarden:sensor:water-level-001"
TRAFFIC = SENSOR_TOPICS["traffic_count"].name
WATER = SENSOR_TOPICS["water_level"].name


def _events() -> list:
    out = [TrafficCounted(entity_id=SID, region="kiel", occurred_at=T + timedelta(minutes=5 * i), source="t", vehicles=i,
                          interval_s=300) for i in range(6)]  # crosses midnight UTC: two day folders
    out.append(WaterLevelMeasured(entity_id=STAFF, region="kiel", occurred_at=T + timedelta(minutes=1), source="t", level_m=1.3))
    return out


def _topic(e: object) -> str:
    return SENSOR_TOPICS[type(e).sensor_kind].name  # type: ignore[attr-defined]


def test_parquet_by_topic_and_utc_day_and_time_travel(tmp_path: Path) -> None:
    w = ArchiveWriter(tmp_path, bundled_pack())
    events = _events()
    # 00:30 at +02:00 is 22:30 UTC of the day before: it belongs to that UTC day
    local = timezone(timedelta(hours=2))
    events.append(TrafficCounted(entity_id=SID, region="kiel", occurred_at=datetime(2026, 3, 2, 0, 30, tzinfo=local),
                                 source="t", vehicles=99, interval_s=300))
    for i, e in enumerate(events):
        assert w.add(_topic(e), 0, i, e, key=e.entity_id.encode())
    w.flush()
    files = archive_files(tmp_path)
    assert {(f.parent.parent.name, f.parent.name) for f in files} == {
        ("topic=sensor.traffic-count", "day=2026-03-01"), ("topic=sensor.traffic-count", "day=2026-03-02"),
        ("topic=sensor.water-level", "day=2026-03-01")}
    table = pq.read_table(files[0])
    assert table.schema.equals(SCHEMA)
    late = [r for f in files for r in pq.read_table(f).to_pylist() if r["event_id"] == events[-1].event_id]
    assert late[0]["occurred_at"] == datetime(2026, 3, 1, 22, 30, tzinfo=UTC) and "2026-03-01" in str(
        next(f for f in files if events[-1].event_id in pq.read_table(f).column("event_id").to_pylist()))
    assert SingleObjectCodec().decode(late[0]["datum"])[0] == "TrafficCounted"
    assert [e.occurred_at for _, e in read_events(tmp_path)] == sorted(e.occurred_at for e in events)
    pack = bundled_pack()
    before_midnight = rebuild(tmp_path, pack, at=T + timedelta(minutes=7))
    assert before_midnight.sensors[SID].values["vehicles"] == 1
    assert any(a.category == "storm_surge" for a in before_midnight.alerts.values())
    assert rebuild(tmp_path, pack).sensors[SID].values["vehicles"] == 5  # the 22:30 reading is older than 00:15
    assert rebuild(tmp_path, pack, at=T - timedelta(minutes=1)).sensors[SID].values["vehicles"] == 99
    assert rebuild(tmp_path, pack, at=T - timedelta(minutes=81)).sensors == {}
    # a second writer on the same archive does not archive an origin record twice
    again = ArchiveWriter(tmp_path)
    assert not again.add(TRAFFIC, 0, 3, events[3])
    assert again.add(TRAFFIC, 0, len(events), events[0].model_copy(update={"event_id": "new"}))


def test_compaction_bounds_the_files_and_keeps_every_row(tmp_path: Path) -> None:
    w = ArchiveWriter(tmp_path, fanin=4, seal_after=timedelta(hours=1))
    t0 = datetime(2026, 4, 1, 20, tzinfo=UTC)
    n = 0
    for _flush in range(40):  # 40 flushes over 8 hours of event time: crosses midnight, so 2026-04-01 gets sealed
        for _ in range(25):
            sid = f"kiel:gaarden:sensor:traffic-count-00{1 + (n % 3)}"
            w.add(TRAFFIC, n % 2, n, TrafficCounted(entity_id=sid, region="kiel", source="t", vehicles=n, interval_s=60,
                                                   occurred_at=t0 + timedelta(seconds=29 * n)))
            n += 1
        w.flush()
        assert len(w.manifest.files) <= 2 * 4 * 3  # per day at most (fanin - 1) files per level, a few levels
    m = Manifest.load(tmp_path)
    days = {f.day: f for f in m.files.values()}
    sealed = [f for f in m.files.values() if f.day == "2026-04-01"]
    assert len(sealed) == 1 and sealed[0].level == 9 and set(days) == {"2026-04-01", "2026-04-02"}
    table = pq.read_table(tmp_path / sealed[0].path)
    bucket = [to_us(t) // SORT_BUCKET_US for t in table.column("occurred_at").to_pylist()]
    keys = list(zip(bucket, table.column("entity_id").to_pylist(), table.column("occurred_at").to_pylist(), strict=True))
    assert keys == sorted(keys) and len(set(bucket)) > 1  # sorted by 10-minute bucket, then entity and time
    assert sorted(r for f in archive_files(tmp_path) for r in pq.read_table(f).column("offset").to_pylist()) == list(range(n))
    assert {p for p in (tmp_path / "topic=sensor.traffic-count").rglob("*") if p.is_file()} == set(archive_files(tmp_path))


def test_tail_reads_only_what_is_not_covered(tmp_path: Path) -> None:
    w = ArchiveWriter(tmp_path, epoch="e1", auto_compact=False)
    t0 = datetime(2026, 4, 1, 8, tzinfo=UTC)
    for day in range(5):  # five days, one file each, offsets 0..499 in partition 1
        for i in range(100):
            off = day * 100 + i
            w.add(TRAFFIC, 1, off, TrafficCounted(entity_id=SID, region="kiel", source="t", vehicles=off, interval_s=60,
                                                 occurred_at=t0 + timedelta(days=day, minutes=i)))
        w.flush()
    w2 = ArchiveWriter(tmp_path, epoch="e2", auto_compact=False)
    w2.add(TRAFFIC, 1, 0, TrafficCounted(entity_id=SID, region="kiel", source="t", vehicles=0, interval_s=60,
                                        occurred_at=t0 + timedelta(days=4, hours=3)))
    w2.flush()
    files = sorted(archive_files(tmp_path), key=lambda p: p.name)
    # make the old days unreadable: a tail after them must not even open them
    for f in files:
        if "day=2026-04-05" not in str(f):
            f.write_bytes(b"not parquet")
    got = list(tail(tmp_path, {("e1", TRAFFIC, 1): 449}))
    assert [r.origin for r in got] == [("e1", TRAFFIC, 1, o) for o in range(450, 500)] + [("e2", TRAFFIC, 1, 0)]
    assert all(r.topic == TRAFFIC and r.partition == 1 and len(r.datums) == 1 for r in got)
    assert SingleObjectCodec().decode(got[0].datums[0])[1]["vehicles"] == 450
    assert list(tail(tmp_path, {("e1", TRAFFIC, 1): 499, ("e2", TRAFFIC, 1): 0})) == []
    # only the topics asked for (start-up replays the agents' inputs, not the audit topic): others are not opened
    assert list(tail(tmp_path, {}, topics={"sensor.water-level"})) == []


def _raw_producer(bootstrap: str) -> Producer:
    return Producer(producer_config(bootstrap))


@pytest.mark.broker
def test_sink_archives_valid_events_once_skips_replays_and_poison_and_drains(topics: str, tmp_path: Path) -> None:
    codec = SingleObjectCodec()
    pub = EventPublisher(topics, codec)
    marker = f"archive-{uuid.uuid4().hex[:6]}"
    events = [e.model_copy(update={"source": marker}) for e in _events()]
    for e in events[:3]:
        pub.add(_topic(e), e.entity_id, e)
    pub.flush()
    replayed = EventPublisher(topics, codec, extra_headers=REPLAY_HEADERS)
    replayed.add(TRAFFIC, SID, events[0].model_copy(update={"event_id": "replayed-1"}))
    replayed.flush()
    # issue 15 items 1-2: a valid DeadLettered on sensor.weather, a valid WaterLevelMeasured with a bad entity id
    raw = _raw_producer(topics)
    raw.produce(SENSOR_TOPICS["weather"].name, key=b"x", value=codec.encode("DeadLettered", DeadLettered(
        original_topic="x", original_partition=0, original_offset=1, original_value=b"", error_type="decode",
        reason="poison", processor="attacker").model_dump()))
    bad = {**to_record(events[-1]), "entity_id": "not-an-entity-id", "event_id": "poison-2"}
    raw.produce(WATER, key=b"not-an-entity-id", value=codec.encode("WaterLevelMeasured", bad))
    raw.produce(WATER, key=b"x", value=b"\x00garbage")
    raw.flush(10)
    for e in events[3:]:
        pub.add(_topic(e), e.entity_id, e)
    pub.flush()
    root = tmp_path / "archive"
    group = f"arch-{marker}"
    stop = threading.Event()
    done: list[int] = []
    th = threading.Thread(target=lambda: done.append(run_sink(topics, codec, root, group=group, flush_every_s=0.5,
                                                              should_stop=stop.is_set, pack=bundled_pack(), epoch="t")))
    th.start()
    try:
        wait_for(lambda: sum(1 for _, e in read_events(root) if e.source == marker) >= len(events), 60, "archived events")
        assert th.is_alive()  # the poison did not stop the sink
    finally:
        stop.set()
        th.join(60)
    assert not th.is_alive() and done
    archived = [e for _, e in read_events(root) if e.source == marker]
    assert sorted(e.event_id for e in archived) == sorted(e.event_id for e in events)  # once each, no replay, no poison
    assert Manifest.load(root).invalid_skipped >= 3
    history = DuckDBHistory(root, bundled_pack())
    assert history.range()["events"] >= len(events)
    page = history.events(T - timedelta(days=1), T + timedelta(days=1), [STAFF], 100, 0)
    assert [a.event.event_id for a in page.events if a.event.source == marker] == [events[-1].event_id]
    # a second sink on the same archive with a fresh group (offsets not committed) archives nothing twice
    run_sink(topics, codec, root, group=group + "-2", should_stop=lambda: True, pack=bundled_pack(), epoch="t")
    assert sorted(e.event_id for _, e in read_events(root) if e.source == marker) == sorted(e.event_id for e in events)


@pytest.mark.broker
def test_stop_drains_what_was_produced(topics: str, tmp_path: Path) -> None:
    """Stopped before it read anything, the sink still reads every partition to its end, archives and commits."""
    codec = SingleObjectCodec()
    pub = EventPublisher(topics, codec)
    marker = f"drain-{uuid.uuid4().hex[:6]}"
    events = [TrafficCounted(entity_id=SID, region="kiel", occurred_at=T + timedelta(seconds=i), source=marker, vehicles=i,
                             interval_s=60) for i in range(500)]
    for e in events:
        pub.add(TRAFFIC, SID, e)
    pub.flush()
    root = tmp_path / "archive"
    run_sink(topics, codec, root, group=f"drain-{marker}", should_stop=lambda: True, pack=bundled_pack(), epoch="t")
    assert sorted(e.event_id for _, e in read_events(root) if e.source == marker) == sorted(e.event_id for e in events)
    assert os.path.exists(root / "_manifest.json")
    # committed: the same group finds nothing new
    before = Manifest.load(root).next_seq
    run_sink(topics, codec, root, group=f"drain-{marker}", should_stop=lambda: True, pack=bundled_pack(), epoch="t")
    assert Manifest.load(root).next_seq == before


@pytest.mark.broker
def test_plietsch_archive_drains_on_sigterm_and_exits_0(topics: str, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from tests.helpers import ROOT

    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=topics, PLIETSCH_DATA_DIR=str(tmp_path), PLIETSCH_BROKER_EPOCH="sig")
    root = tmp_path / "archive"
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "archive", "--flush-every-s", "30"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (root / "_manifest.json").exists(), 90, "the sink's first flush")
        pub = EventPublisher(topics, SingleObjectCodec())
        marker = f"sigterm-{uuid.uuid4().hex[:6]}"
        events = [TrafficCounted(entity_id=SID, region="kiel", occurred_at=T + timedelta(seconds=i), source=marker,
                                 vehicles=i, interval_s=60) for i in range(300)]
        for e in events:
            pub.add(TRAFFIC, SID, e)
        pub.flush()
        proc.send_signal(signal.SIGTERM)  # long before its next timed flush: only the drain archives them
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    assert sorted(e.event_id for _, e in read_events(root) if e.source == marker) == sorted(e.event_id for e in events)
