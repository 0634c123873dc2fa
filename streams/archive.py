"""The archive sink: every valid input event into Parquet files by topic and UTC day (``streams.history.store``), for
history, replay, restart and time travel.

Only what the worker would accept is archived: the event type must be one the topic carries and the event must pass
the same validation as the worker's (``streams.ingest.RecordDecoder`` with the pack's sensors; road works only on road
segments). Anything else is skipped and counted (the worker dead-letters it). Offsets are committed only after the
files and the manifest are on disk; a record already in the archive is not archived twice. Records replayed into the
broker (header ``plietsch-replay``) are not archived again. On stop (SIGTERM in ``plietsch archive``) the sink drains:
it reads every assigned partition up to its end at that moment, flushes, commits and returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from infra.kafka_security import kafka_security
from schemas.codec import CodecError, SingleObjectCodec, is_batch, iter_batch
from streams.catalogue import AUDIT, FEEDBACK, MUNICIPAL_TOPICS, SCENARIO_REQUESTS, SENSOR_TOPICS
from streams.history.store import Manifest
from streams.history.writer import ArchiveWriter
from streams.ingest import RecordDecoder
from streams.publisher import municipal_homes, sensor_homes
from streams.serde import Codec, to_record
from twin.events import Event, RoadWorksAnnounced
from twin.region import RegionPack
from twin.state import TwinState

__all__ = ["ARCHIVED_TOPICS", "REPLAY_HEADER", "REPLAY_HEADERS", "ArchiveWriter", "ReplayRecord", "Validator",
           "archive_files", "read_events", "rebuild", "run_sink", "tail"]

log = logging.getLogger("plietsch.archive")
# audit: issue 11 item 6; feedback: issue 12 (the embedded broker forgets it at a restart; the archive brings it back)
ARCHIVED_TOPICS = tuple(t.name for t in (*SENSOR_TOPICS.values(), *MUNICIPAL_TOPICS.values(), AUDIT, FEEDBACK,
                                          SCENARIO_REQUESTS))  # the last three: read by GET /audit, never replayed
REPLAY_HEADER = "plietsch-replay"
REPLAY_HEADERS = [(REPLAY_HEADER, b"1")]


class Validator:
    """The worker's acceptance rules for input topics: datum bytes in, a valid event (or None) out."""

    def __init__(self, codec: Codec, pack: RegionPack, sensor_partitions: int | None = None) -> None:
        """*sensor_partitions*: the sensor topics' partition count as the worker has it; given, the partition checks
        are on (municipal topics with the catalogue's counts, as the worker's municipal unit): a datum on another
        partition than its entity's is refused here as it is there."""
        sensors = pack.sensors
        self.pack = pack
        self.sensor = RecordDecoder(codec, "archive", expected={s.name: s.value_schemas for s in SENSOR_TOPICS.values()},
                                    known_entities=set(sensors), entity_kinds={k: s.sensor_kind for k, s in sensors.items()},
                                    home=sensor_homes(sensors, sensor_partitions) if sensor_partitions else None)
        expected: dict[str, Sequence[str]] = {t.name: t.value_schemas for t in (*MUNICIPAL_TOPICS.values(), AUDIT, FEEDBACK,
                                                                                  SCENARIO_REQUESTS)}
        self.municipal = RecordDecoder(codec, "archive", expected=expected,
                                       home=municipal_homes(pack.entities()) if sensor_partitions else None)
        self.reasons: dict[str, int] = {}

    def event(self, topic: str, partition: int, offset: int, key: bytes | None, datum: bytes) -> Event | None:
        decoder = self.municipal if topic in self.municipal.expected else self.sensor
        decoded = decoder.decode(topic, partition, offset, key, datum, None)
        for d in decoded.dead:
            self.reasons[d.error_type] = self.reasons.get(d.error_type, 0) + 1
        if not decoded.events:
            return None
        e = decoded.events[0]
        if isinstance(e, RoadWorksAnnounced) and e.entity_id not in self.pack.roads:
            self.reasons["unknown_entity"] = self.reasons.get("unknown_entity", 0) + 1
            return None
        return e


def _header_names(headers: Any) -> list[str]:
    if not headers:
        return []
    return list(headers.keys()) if isinstance(headers, dict) else [k for k, _ in headers]


def archive_message(writer: ArchiveWriter, validator: Validator, msg: Any, single: bool) -> int:
    """Archive the valid events of one Kafka record; returns how many were invalid (skipped)."""
    headers = msg.headers() or []
    value = msg.value()
    if value is None or REPLAY_HEADER in _header_names(headers):
        return 0 if value is not None else 1
    topic, partition, offset, key = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0), msg.key()
    if is_batch(headers):
        try:
            datums = list(enumerate(iter_batch(value)))
        except CodecError:
            return 1  # broken batch frame: one dead letter at the worker
    else:
        datums = [(-1, value)]
    bad = 0
    for index, datum in datums:
        event = validator.event(topic, partition, offset, key, datum)
        if event is None:
            bad += 1
            continue
        if not single:  # keep the single-object encoding whatever the wire format was
            datum = SingleObjectCodec().encode(type(event).__name__, to_record(event))
        writer.add(topic, partition, offset, event, datum, batch_index=index, key=key)
    return bad


def run_sink(bootstrap: str, codec: Codec, root: Path, group: str = "plietsch-archive", flush_every_s: float = 2.0,
             should_stop: Callable[[], bool] = lambda: False, pack: RegionPack | None = None, epoch: str | None = None,
             drain_timeout_s: float = 30.0, snapshot_every: int | None = None, horizon_h: float | None = None) -> int:
    """Consume the input topics into the archive until *should_stop*, then drain; returns the events archived."""
    from streams.settings import StreamSettings
    from twin.region import load_pack

    if pack is None or epoch is None or horizon_h is None or snapshot_every is None:
        settings = StreamSettings()
        pack = pack or load_pack(settings.region_pack)
        epoch = settings.broker_epoch if epoch is None else epoch
        horizon_h = settings.aggregate_horizon_h if horizon_h is None else horizon_h
        snapshot_every = settings.snapshot_every if snapshot_every is None else snapshot_every
    consumer = Consumer({**kafka_security().librdkafka(), "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                         "isolation.level": "read_committed", "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    # its snapshots are of the twin with the worker's aggregate horizon (time travel folds on from them)
    writer = ArchiveWriter(root, pack, epoch=epoch, snapshot_every=snapshot_every, horizon=timedelta(hours=horizon_h))
    validator = Validator(codec, pack, StreamSettings().topic_partitions)
    single = isinstance(codec, SingleObjectCodec)
    consumer.subscribe(list(ARCHIVED_TOPICS))
    state = {"consumed": 0, "last_flush": time.monotonic(), "last_log": time.monotonic()}
    positions: dict[tuple[str, int], int] = {}  # per partition: the last offset read (or passed, at its end)

    checked: set[tuple[str, int]] = set()

    def check_epoch(topic: str, partition: int) -> None:
        """Offsets below what this epoch archived mean the broker restarted under the same epoch (contract 1 says
        'plietsch run' sets a fresh one): then skipping by offset would drop new records, so it stops for them."""
        checked.add((topic, partition))
        done = writer.committed_offset(topic, partition)
        if done < 0:
            return
        _, hi = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
        if hi <= done:
            log.error("archive sink: %s[%d] ends at offset %d but epoch %r archived up to %d: the broker's offsets "
                      "restarted without a new PLIETSCH_BROKER_EPOCH; archiving it without the duplicate check",
                      topic, partition, hi, epoch, done)
            writer.forget(topic, partition)

    def handle(msgs: list[Any]) -> None:
        for msg in msgs:
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:  # the end (past any control record) was reached
                    k = (str(msg.topic()), int(msg.partition() or 0))
                    positions[k] = max(positions.get(k, -1), int(msg.offset() or 0) - 1)
                else:
                    log.warning("archive sink: consumer error %s", msg.error())
                continue
            if (msg.topic(), msg.partition()) not in checked:
                check_epoch(str(msg.topic()), int(msg.partition() or 0))
            bad = archive_message(writer, validator, msg, single)
            if bad:
                writer.skipped_invalid(bad)
            positions[(str(msg.topic()), int(msg.partition() or 0))] = int(msg.offset() or 0)
            state["consumed"] += 1

    def commit() -> None:
        writer.flush()
        if state["consumed"]:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    raise
            state["consumed"] = 0
        state["last_flush"] = time.monotonic()
        if time.monotonic() - state["last_log"] >= 60 and writer.manifest.invalid_skipped:
            log.warning("archive sink: %d invalid records skipped so far (%s); the worker dead-letters them",
                        writer.manifest.invalid_skipped, validator.reasons)
            state["last_log"] = time.monotonic()

    try:
        while not should_stop():
            handle(consumer.consume(1000, 0.2))
            if time.monotonic() - state["last_flush"] >= flush_every_s:
                commit()
        _drain(consumer, handle, positions, drain_timeout_s)
        writer.auto_compact = False  # merging is not needed to stop: the next start's first flush merges
        commit()
    except KafkaException as exc:
        log.error("archive sink stopped: %s", exc)
        raise
    finally:
        consumer.close()
    return writer.written


def _drain(consumer: Consumer, handle: Callable[[list[Any]], None], positions: dict[tuple[str, int], int],
           timeout_s: float) -> None:
    """Read every assigned partition up to its end as of now, fast: the ends come from the high watermarks the
    consumer's fetch responses cached (one request for the partitions with none cached yet, not a round trip per
    partition in series), fetches wait at most ``fetch.wait.max.ms`` (short for the sink), a partition is done when its
    last record or its end-of-partition event (past a transaction's control record) is read, and the ends are raised
    to what later fetches report while draining. Tansu reports the end as the base offset of the last record batch
    + 1; the consumer receives whole batches, so the records past that end arrive with the batch."""
    deadline = time.monotonic() + timeout_s
    assignment = consumer.assignment()
    joined_by = min(deadline, time.monotonic() + 15)
    while not assignment and time.monotonic() < joined_by:
        handle(consumer.consume(1000, 0.1))
        assignment = consumer.assignment()
    # the ends as of now, from the broker in one request: a cached high watermark is as old as the last fetch
    # response, so records produced since (the ones a stop must not leave behind) would be missed
    ends: dict[tuple[str, int], int] = {}
    if assignment:
        from confluent_kafka import OFFSET_END

        try:
            asked = consumer.offsets_for_times([TopicPartition(t.topic, t.partition, OFFSET_END) for t in assignment],
                                               timeout=min(10.0, max(1.0, deadline - time.monotonic())))
        except KafkaException as exc:  # the cache is all there is then; the loop below still raises the ends
            log.warning("archive sink: partition ends not available (%s); draining up to the cached ends", exc)
            asked = []
        for tp in asked:
            if tp.offset > 0:
                ends[(tp.topic, tp.partition)] = tp.offset
        for tp in assignment:
            _, hi = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
            if hi > 0:
                ends[(tp.topic, tp.partition)] = max(hi, ends.get((tp.topic, tp.partition), 0))
    while time.monotonic() < deadline:
        behind = [k for k, end in ends.items() if positions.get(k, -1) + 1 < end]
        if not behind:
            return
        handle(consumer.consume(1000, 0.05))
        for k in behind:  # what the fetches saw meanwhile (never below what was asked at the start)
            _, hi = consumer.get_watermark_offsets(TopicPartition(*k), cached=True)
            ends[k] = max(ends[k], hi)
    log.warning("archive sink: drain stopped after %.0f s with partitions behind their end", timeout_s)


@dataclass(frozen=True)
class ReplayRecord:
    topic: str
    partition: int
    key: bytes | None
    datums: list[bytes]
    origin: tuple[str, str, int, int]  # (epoch, topic, partition, offset)


def tail(root: Path, covered: Mapping[tuple[str, str, int], int],
         topics: Collection[str] | None = None) -> Iterator[ReplayRecord]:
    """Every archived origin record after *covered* ((epoch, topic, partition) -> last applied offset), in origin offset
    order per (epoch, topic, partition), epochs in archive order; only of *topics* if given. Only files whose offset
    range reaches past *covered* are opened, and of those only the row groups that can hold such offsets."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    manifest = Manifest.load(Path(root))
    wanted: dict[tuple[str, str, int], list[str]] = {}
    for f in manifest.files.values():
        if topics is not None and f.topic not in topics:
            continue
        for k, (_, hi) in f.offsets.items():
            epoch, pnum = k.rsplit("|", 1)
            origin = (epoch, f.topic, int(pnum))
            if hi > covered.get(origin, -1):
                wanted.setdefault(origin, []).append(str(manifest.root / f.path))
    rank = {e: i for i, e in enumerate(manifest.epochs)}
    for (epoch, topic, part), paths in sorted(wanted.items(), key=lambda kv: (rank.get(kv[0][0], 0), kv[0][1], kv[0][2])):
        after = covered.get((epoch, topic, part), -1)
        flt = (pc.field("epoch") == epoch) & (pc.field("partition") == part) & (pc.field("offset") > after)
        table = ds.dataset(paths, format="parquet").to_table(columns=["offset", "batch_index", "key", "datum"], filter=flt)
        table = table.sort_by([("offset", "ascending"), ("batch_index", "ascending")])
        offsets, keys, datums = (table.column(c).to_pylist() for c in ("offset", "key", "datum"))
        i = 0
        while i < len(offsets):
            j = i
            while j < len(offsets) and offsets[j] == offsets[i]:
                j += 1
            yield ReplayRecord(topic, part, keys[i], datums[i:j], (epoch, topic, part, offsets[i]))
            i = j


def archive_files(root: Path) -> list[Path]:
    """The archive's data files (those the manifest names)."""
    m = Manifest.load(Path(root))
    return sorted(m.root / f.path for f in m.files.values())


def read_events(root: Path, until: datetime | None = None) -> Iterator[tuple[str, Event]]:
    """Every archived event (topic, event), in occurrence order (ties: archive order), up to *until*."""
    from streams.history.timetravel import events_after

    items = sorted(events_after(Manifest.load(Path(root)), -1, until), key=lambda a: (a.event.occurred_at, a.seq))
    for a in items:
        yield a.topic, a.event


def rebuild(root: Path, pack: RegionPack, at: datetime | None = None, horizon: timedelta | None = None) -> TwinState:
    """The twin as it stood at *at* (or now): the one fold over the archive, from the nearest snapshot; *horizon*: the
    aggregate horizon (default: the worker's setting, ``PLIETSCH_AGGREGATE_HORIZON_H``)."""
    from streams.history.timetravel import state_at

    if horizon is None:
        from streams.settings import StreamSettings

        horizon = timedelta(hours=StreamSettings().aggregate_horizon_h)
    return state_at(Manifest.load(Path(root)), pack, at, horizon=horizon)
