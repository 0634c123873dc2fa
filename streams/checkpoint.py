"""Checkpoints of the twin's state (contract 5), so that a start of the memory-only embedded broker does not replay the
whole archive.

A checkpoint is a copy of the latest record per key of every compacted topic (the Faust table changelogs
``<app_id>-<table>-changelog``, ``twin.updates``, ``twin.aggregates``, ``scenario.results``) and of the active alerts
on ``twin.alerts`` (latest record per alert id when it is an ``AlertRaised``), each with its partition. Layout:
``<data_dir>/checkpoints/<UTC time>/<topic>.parquet`` plus ``manifest.json``. A checkpoint is written into a hidden
folder and renamed into place when complete, so a crash never leaves a half checkpoint that a start would load.

The :class:`Checkpointer` keeps the latest-per-key view up to date by reading the topics as they grow (read committed),
so each checkpoint costs the number of keys, not the history. Because changelog records are written in transactions,
a partition's view only moves forward at a transaction boundary: when the reader's position has reached the high
watermark the broker reported (so no transaction was open there and every record below it was read). Each changelog
partition is therefore a state some committed prefix of the worker's transactions produced, markers included.

:func:`restore` writes a checkpoint back into a fresh broker (same topics, same partitions) and returns ``covered``:
per origin ``(epoch, topic, partition)`` the smallest applied-offset marker (contract 3) found in the changelogs, which
``streams.archive.tail`` takes to yield only what the checkpoint lacks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from infra.kafka_security import kafka_security
from schemas.codec import CodecError
from streams.catalogue import AGGREGATES, ALERTS, SCENARIO_RESULTS, TWIN_UPDATES, TopicSpec, ensure_topics
from streams.files import fsync_dir
from streams.serde import Codec
from streams.tables import TxGate, changelog_problem

log = logging.getLogger("plietsch.checkpoint")

FORMAT = 1
MARKER_PREFIX = b"__applied__|"
OUTPUT_TOPICS = (TWIN_UPDATES.name, AGGREGATES.name, SCENARIO_RESULTS.name)
ALERT_TOPIC = ALERTS.name
PARTIAL_PREFIX = ".partial-"
SCHEMA = pa.schema([("partition", pa.int32()), ("offset", pa.int64()), ("key", pa.binary()), ("value", pa.binary()),
                    ("headers", pa.list_(pa.struct([("k", pa.string()), ("v", pa.binary())])))])

Origin = tuple[str, str, int]


class CheckpointError(RuntimeError):
    pass


@dataclass
class Entry:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]
    keep: bool = True  # False for an alert whose latest record is not an AlertRaised


def _headers(raw: Any) -> list[tuple[str, str | bytes | None]]:
    if not raw:
        return []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


def _bytes(v: str | bytes | None) -> bytes | None:
    return v.encode() if isinstance(v, str) else v


def checkpoint_root(data_dir: Path) -> Path:
    return Path(data_dir) / "checkpoints"


def is_changelog(topic: str, app_id: str) -> bool:
    return topic.startswith(f"{app_id}-") and topic.endswith("-changelog")


def parse_marker(key: bytes, value: bytes) -> tuple[Origin, int]:
    """``__applied__|<epoch>|<topic>|<partition>`` -> origin, and the marker's offset (a JSON integer, as Faust
    tables serialise values; ``{"offset": n}`` is accepted too)."""
    parts = key.decode("utf-8").split("|")
    if len(parts) != 4 or not parts[3].isdigit():
        raise CheckpointError(f"applied-offset marker key {key!r} is not '__applied__|<epoch>|<topic>|<partition>'")
    try:
        raw = json.loads(value)
    except ValueError:
        raise CheckpointError(f"applied-offset marker {key!r} has value {value[:60]!r}, not a JSON integer") from None
    offset = raw.get("offset") if isinstance(raw, dict) else raw
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise CheckpointError(f"applied-offset marker {key!r} has value {value[:60]!r}, not an integer offset")
    return (parts[1], parts[2], int(parts[3])), offset


def covered_by(markers: Iterable[tuple[Origin, int]]) -> dict[Origin, int]:
    """The smallest marker per origin: when several agents consume an origin, each skips what it already has."""
    out: dict[Origin, int] = {}
    for origin, offset in markers:
        out[origin] = min(offset, out.get(origin, offset))
    return out


# -- files ---------------------------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    path: Path
    manifest: dict[str, Any]
    topics: dict[str, list[Entry]] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(len(v) for v in self.topics.values())

    def markers(self) -> list[tuple[Origin, int]]:
        app_id = self.manifest.get("app_id", "")
        return [parse_marker(e.key, e.value) for t, es in self.topics.items() if is_changelog(t, app_id)
                for e in es if e.key is not None and e.key.startswith(MARKER_PREFIX)]

    def covered(self) -> dict[Origin, int]:
        return covered_by(self.markers())


def _stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H-%M-%S.%fZ")


def write_checkpoint(root: Path, topics: dict[str, tuple[int, list[Entry]]], meta: dict[str, Any], keep: int = 3) -> Path:
    """Write a complete checkpoint folder atomically (hidden folder, fsync, rename); keep the newest *keep*."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = _stamp()
    tmp = root / f"{PARTIAL_PREFIX}{stamp}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    manifest: dict[str, Any] = {"format": FORMAT, "created_at": datetime.now(UTC).isoformat(), **meta, "topics": {}}
    for topic, (partitions, entries) in sorted(topics.items()):
        rows = sorted((e for e in entries if e.keep), key=lambda e: (e.partition, e.offset))
        table = pa.table({"partition": [e.partition for e in rows], "offset": [e.offset for e in rows],
                          "key": [e.key for e in rows], "value": [e.value for e in rows],
                          "headers": [[{"k": k, "v": _bytes(v)} for k, v in e.headers] for e in rows]}, schema=SCHEMA)
        path = tmp / f"{topic}.parquet"
        pq.write_table(table, path, compression="zstd")
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
        manifest["topics"][topic] = {"partitions": partitions, "records": len(rows)}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    with (tmp / "manifest.json").open("rb") as fh:
        os.fsync(fh.fileno())
    fsync_dir(tmp)
    final = root / stamp
    tmp.rename(final)
    fsync_dir(root)
    prune(root, keep)
    return final


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file())


def prune(root: Path, keep: int) -> None:
    for old in checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for partial in root.glob(f"{PARTIAL_PREFIX}*"):  # left by a crash while writing
        if time.time() - partial.stat().st_mtime > 60:
            shutil.rmtree(partial, ignore_errors=True)


def load(path: Path) -> Checkpoint:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} has no readable manifest.json ({exc}); delete the folder") from exc
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {manifest.get('format')!r}, this version reads {FORMAT}")
    ck = Checkpoint(path, manifest)
    for topic in manifest["topics"]:
        table = pq.read_table(path / f"{topic}.parquet").to_pylist()
        ck.topics[topic] = [Entry(r["partition"], r["offset"], r["key"], r["value"], [(h["k"], h["v"]) for h in r["headers"]])
                            for r in table]
    return ck


def latest(root: Path) -> Checkpoint | None:
    found = checkpoints(root)
    return load(found[-1]) if found else None


# -- restore -------------------------------------------------------------------------------------------------------
def restore(bootstrap: str, ck: Checkpoint, timeout: float = 60.0) -> int:
    """Create the checkpoint's topics (changelogs compacted, with their partition counts) and write its records back
    into their topics and partitions, in their original order. Returns the number of records written."""
    app_id = ck.manifest.get("app_id", "")
    specs = tuple(TopicSpec(t, (), key="table key", partitions=int(m["partitions"]), retention_ms=None, compacted=True)
                  for t, m in ck.manifest["topics"].items() if is_changelog(t, app_id))
    ensure_topics(bootstrap, specs)
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    producer = Producer({**kafka_security().librdkafka(), "bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20,
                         "compression.type": "lz4", "message.max.bytes": 4_000_000})
    n = 0
    for topic, entries in ck.topics.items():
        for e in entries:
            while True:
                try:
                    producer.produce(topic, key=e.key, value=e.value, partition=e.partition, headers=e.headers or None,
                                     on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            n += 1
        producer.poll(0)
    left = producer.flush(timeout)
    if left or errors:
        raise CheckpointError(f"restoring {ck.path}: {left} record(s) not delivered within {timeout:.0f} s, "
                              f"{len(errors)} failed ({'; '.join(errors[:3])}); is the broker reachable?")
    return n


# -- the checkpointer ----------------------------------------------------------------------------------------------
class _TopicView:
    """Latest record per (partition, key) of one topic; a partition's pending changes are promoted at a boundary."""

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.partitions = partitions
        self.stable: dict[tuple[int, bytes | None], Entry] = {}
        self.pending: dict[int, dict[bytes | None, Entry | None]] = {}

    def add(self, partition: int, key: bytes | None, entry: Entry | None) -> None:
        self.pending.setdefault(partition, {})[key] = entry

    def markers(self, partition: int) -> dict[bytes, bytes | None]:
        """The applied-offset markers of *partition* as they would be after promoting what is pending."""
        out: dict[bytes, bytes | None] = {k: e.value for (p, k), e in self.stable.items()
                                          if p == partition and k is not None and k.startswith(MARKER_PREFIX)}
        for k, e in self.pending.get(partition, {}).items():
            if k is not None and k.startswith(MARKER_PREFIX):
                out[k] = None if e is None else e.value
        return out

    def promote(self, partition: int) -> bool:
        changes = self.pending.pop(partition, None)
        if not changes:
            return False
        for key, entry in changes.items():
            if entry is None:
                self.stable.pop((partition, key), None)
            else:
                self.stable[(partition, key)] = entry
        return True


class Checkpointer:
    """A thread of ``plietsch run`` that follows the compacted topics and writes a checkpoint every *interval_s*
    and when asked (:meth:`checkpoint_now`, at a clean stop)."""

    def __init__(self, bootstrap: str, app_id: str, root: Path, codec: Codec, interval_s: float = 60.0, keep: int = 3,
                 epoch: str = "", report: Callable[[str], None] = log.info,
                 agent_tables: Iterable[Iterable[str]] | None = None) -> None:
        self.bootstrap, self.app_id, self.root, self.codec = bootstrap, app_id, Path(root), codec
        # the tables each agent commits together (their changelogs are cut together); default: the worker's agents
        self.agent_tables = [tuple(t) for t in (worker_agent_tables() if agent_tables is None else agent_tables)]
        self.interval_s, self.keep, self.epoch, self.report = interval_s, keep, epoch, report
        self.views: dict[str, _TopicView] = {}
        self._gates: dict[tuple[str, int], TxGate[Entry | None]] = {}
        self.skipped: dict[str, int] = {}  # changelog records no worker wrote, per topic (kept out of checkpoints)
        self.written: list[Path] = []
        self.error: str | None = None
        self._dirty = False
        self._stop = threading.Event()
        self._asked = threading.Event()
        self._done = threading.Event()
        self._ask_timeout = 5.0
        self._result: Path | None = None
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    # -- control from the main thread ---------------------------------------------------------------------------
    def start(self) -> Checkpointer:
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)
        self._thread.start()
        return self

    def checkpoint_now(self, timeout: float = 5.0) -> Path | None:
        """Catch up with the topics (up to *timeout*) and write a checkpoint; returns its folder (None: nothing to
        write, or it failed: see ``error``)."""
        if self._thread is None or not self._thread.is_alive():
            return None
        self._ask_timeout = timeout
        self._done.clear()
        self._asked.set()
        self._done.wait(timeout + 2.0)
        return self._result

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- the thread ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        self._consumer = Consumer({**kafka_security().librdkafka(), "bootstrap.servers": self.bootstrap,
                                   "group.id": f"plietsch-checkpoint-{uuid.uuid4().hex[:8]}",
                                   "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                   "isolation.level": "read_committed", "fetch.wait.max.ms": 100,
                                   "fetch.max.bytes": 16 * 1024 * 1024})
        next_at = time.monotonic() + self.interval_s
        next_discovery = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_discovery:
                    self._discover()
                    next_discovery = now + 5.0
                self._consume(0.2)
                if self._asked.is_set():
                    self._asked.clear()
                    self._result = self._checkpoint(self._ask_timeout, force=True)
                    self._done.set()
                elif now >= next_at:
                    self._checkpoint(min(5.0, self.interval_s / 4))
                    next_at = time.monotonic() + self.interval_s
        except Exception as exc:  # reported; 'plietsch run' keeps running, the next start replays more
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("checkpointer stopped")
            self.report(f"checkpointer stopped: {self.error}")
            self._done.set()
        finally:
            if self._consumer is not None:
                self._consumer.close()

    @property
    def _c(self) -> Consumer:
        if self._consumer is None:
            raise RuntimeError("the checkpointer's consumer is used before its thread started")
        return self._consumer

    def _discover(self) -> None:
        md = self._c.list_topics(timeout=10)
        wanted = [t for t in md.topics if is_changelog(t, self.app_id)] + [*OUTPUT_TOPICS, ALERT_TOPIC]
        new: list[TopicPartition] = []
        for t in wanted:
            tmd = md.topics.get(t)
            if tmd is None or tmd.error is not None or t in self.views and self.views[t].partitions == len(tmd.partitions):
                continue
            known = self.views[t].partitions if t in self.views else 0
            self.views.setdefault(t, _TopicView(t, len(tmd.partitions))).partitions = len(tmd.partitions)
            new += [TopicPartition(t, p, OFFSET_BEGINNING) for p in sorted(tmd.partitions) if p >= known]
        if new:
            self._c.incremental_assign(new)

    def _consume(self, wait_s: float) -> int:
        msgs = self._c.consume(5000, wait_s)
        touched: set[tuple[str, int]] = set()
        for msg in msgs:
            if msg.error():
                continue
            topic, part = str(msg.topic()), int(msg.partition() or 0)
            view = self.views.get(topic)
            if view is None:
                continue
            value, key = msg.value(), msg.key()
            entry = None
            if value is not None:
                entry = Entry(part, int(msg.offset() or 0), key, value, _headers(msg.headers()))
                if topic == ALERT_TOPIC:
                    entry.keep = self._is_raised(value)
            if is_changelog(topic, self.app_id):
                why = changelog_problem(key, value, msg.headers())
                if why is not None:  # junk a foreign client wrote: never into a checkpoint (a restore would stop on it)
                    self.skipped[topic] = self.skipped.get(topic, 0) + 1
                    if self.skipped[topic] == 1:
                        log.warning("checkpointer: skipping a record on %s[%d]@%s that no worker wrote (%s); further "
                                    "ones on it are skipped without a line", topic, part, msg.offset(), why)
                    continue
                for k, e in self._gates.setdefault((topic, part), TxGate(f"checkpointer {topic}[{part}]")).feed(key, entry, msg.headers()):
                    view.add(part, k, e)
            else:
                view.add(part, key, entry)
            touched.add((topic, part))
        self._promote_at_boundaries(touched | {(v.name, p) for v in self.views.values() for p in v.pending})
        return len(msgs)

    def _is_raised(self, value: bytes) -> bool:
        try:
            return self.codec.decode(value)[0] == "AlertRaised"
        except CodecError:
            return False

    def _promote_at_boundaries(self, parts: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """Promote the pending changes of partitions whose read position has reached the high watermark of the last
        fetch (no open transaction there, nothing unread below it). The changelog partitions of one agent (same
        partition number) are promoted together, and only when their markers agree: the agent writes every one of its
        tables in each transaction, so equal markers mean the same committed prefix (a fetch of one changelog may
        bring a transaction whose records in another changelog are not fetched yet). Returns what is not promoted."""
        behind: set[tuple[str, int]] = set()
        if not parts:
            return behind
        wanted = set(parts)
        for t, p in parts:
            wanted.update((m, p) for m in self._group(t) if m in self.views)
        ready = self._at_boundary(wanted)
        done: set[tuple[str, int]] = set()
        for t, p in sorted(wanted):
            if (t, p) in done:
                continue
            members = [(m, p) for m in self._group(t) if m in self.views] if is_changelog(t, self.app_id) else [(t, p)]
            done.update(members)
            if not all(tp in ready for tp in members) or not self._markers_agree(members):
                behind.update(tp for tp in members if self.views[tp[0]].pending.get(tp[1]) or tp not in ready)
                continue
            for m, q in members:
                if self.views[m].promote(q):
                    self._dirty = True
        return behind

    def _at_boundary(self, parts: set[tuple[str, int]]) -> set[tuple[str, int]]:
        ready: set[tuple[str, int]] = set()
        for tp in self._c.position([TopicPartition(t, p) for t, p in parts]):
            try:
                lo, hi = self._c.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
            except KafkaException:
                continue
            # hi < 0: no fetch answered yet; position < hi: an open transaction or records not read yet
            if hi == 0 or (hi > 0 and tp.offset is not None and tp.offset >= hi):
                ready.add((tp.topic, tp.partition))
        return ready

    def _markers_agree(self, members: list[tuple[str, int]]) -> bool:
        if len(members) < 2:
            return True
        first = self.views[members[0][0]].markers(members[0][1])
        return all(self.views[t].markers(p) == first for t, p in members[1:])

    def _group(self, topic: str) -> tuple[str, ...]:
        """The changelogs written in the same transactions as *topic* (the tables of one agent)."""
        for tables in self.agent_tables:
            names = tuple(f"{self.app_id}-{t}-changelog" for t in tables)
            if topic in names:
                return names
        return (topic,)

    def _positions(self, parts: set[tuple[str, int]]) -> list[tuple[str, int, int, int]]:
        out = []
        for tp in self._c.position([TopicPartition(t, p) for t, p in parts]):
            out.append((tp.topic, tp.partition, tp.offset, self._c.get_watermark_offsets(tp, cached=True)[1]))
        return out

    def _checkpoint(self, catch_up_s: float, force: bool = False) -> Path | None:
        """Read up to the current ends (at most *catch_up_s*), then write what is consistent."""
        deadline = time.monotonic() + catch_up_s
        self._consume(0.15)  # fetch responses bring fresh high watermarks (the consumer fetches every 100 ms)
        every = {(v.name, p) for v in self.views.values() for p in range(v.partitions)}
        behind = self._promote_at_boundaries(every)
        while behind and time.monotonic() < deadline:
            self._consume(0.05)
            behind = self._promote_at_boundaries(behind)
        if behind and force:
            self.report(f"checkpoint: {len(behind)} partition(s) still in an open transaction or behind; their last "
                        f"consistent state is written ({', '.join(f'{t}[{p}]' for t, p in sorted(behind)[:4])})")
            log.info("behind: %s", self._positions(behind))
        if not self._dirty and not force:
            return None
        if not self._dirty and self.written:
            return self.written[-1]
        t0 = time.monotonic()
        topics = {v.name: (v.partitions, list(v.stable.values())) for v in self.views.values()}
        path = write_checkpoint(self.root, topics, {"epoch": self.epoch, "app_id": self.app_id}, self.keep)
        self._dirty = False
        self.written.append(path)
        n = sum(len(v.stable) for v in self.views.values())
        self.report(f"checkpoint {path.name}: {n} records of {len(topics)} topics in {time.monotonic() - t0:.2f} s")
        return path


def worker_agent_tables() -> list[tuple[str, ...]]:
    """The tables of each of the worker's agents that keep several (they write them in one transaction)."""
    import importlib

    try:
        agents = importlib.import_module("streams.agents")
    except ImportError:  # a worker without transactional agents: every table stands alone
        return []
    units = [u for u in vars(agents).values() if isinstance(u, type) and isinstance(getattr(u, "tables", None), tuple)]
    return [tuple(getattr(u, "tables")) for u in units if len(getattr(u, "tables")) > 1]  # noqa: B009


def restore_latest(bootstrap: str, root: Path, report: Callable[[str], None]) -> tuple[Checkpoint | None, dict[Origin, int]]:
    """Restore the newest checkpoint under *root* that has applied-offset markers; returns it and ``covered``.
    A checkpoint without markers cannot say which archived records it holds: it is not used (the whole archive is
    replayed instead, which rebuilds the same state)."""
    try:
        ck = latest(root)
    except CheckpointError as exc:
        report(f"newest checkpoint not used: {exc}")
        return None, {}
    if ck is None:
        return None, {}
    covered = ck.covered()
    if not covered:
        report(f"checkpoint {ck.path.name} has no applied-offset markers (a worker without them wrote it): not used")
        return None, {}
    t0 = time.monotonic()
    n = restore(bootstrap, ck)
    report(f"restored checkpoint {ck.path.name}: {n} records of {len(ck.topics)} topics in {time.monotonic() - t0:.1f} s")
    return ck, covered
