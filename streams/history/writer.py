"""Writing the archive: events in, Parquet files, manifest, compaction and twin snapshots out.

``ArchiveWriter`` is the one writer of an archive (the sink, or ``bench.archive_gen``). It numbers events in arrival
order (``seq``), never archives an origin record twice (offsets at or below what the manifest already holds for that
(epoch, topic, partition) are skipped: a redelivery after a crash between flush and commit), and, when given the region
pack, folds every archived event into a twin (``twin.state``) and writes a snapshot of it every ``snapshot_every``
events, so time travel needs at most that many events after a snapshot.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from schemas.codec import SingleObjectCodec
from streams.history.store import (
    SCHEMA,
    Manifest,
    compact,
    remove_orphans,
    write_parquet,
    write_snapshot,
)
from streams.serde import to_record
from twin.events import BY_NAME, Event
from twin.region import RegionPack
from twin.state import DEFAULT_HORIZON, Folding, TwinState, fold, to_snapshot

log = logging.getLogger("plietsch.archive")
COLUMNS = [f.name for f in SCHEMA]


@dataclass(frozen=True)
class ArchivedEvent:
    """One row of the archive, decoded."""

    seq: int
    topic: str
    partition: int
    event: Event


class DatumDecoder:
    """Archived datums back into events (they were validated when archived). Making one parses every schema (about
    50 ms): share ``DatumDecoder.shared()``."""

    _shared: DatumDecoder | None = None

    def __init__(self) -> None:
        self.codec = SingleObjectCodec()

    @classmethod
    def shared(cls) -> DatumDecoder:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def event(self, datum: bytes) -> Event:
        name, record = self.codec.decode(datum)
        event = BY_NAME[name].model_validate(record)
        if not isinstance(event, Event):
            raise ValueError(f"archived datum of type {name} is not an entity event")
        return event


class ArchiveWriter:
    def __init__(self, root: Path, pack: RegionPack | None = None, epoch: str = "kafka", snapshot_every: int = 10_000,
                 fanin: int = 8, seal_after: timedelta = timedelta(hours=1), memory_limit: str = "512MB",
                 auto_compact: bool = True, horizon: timedelta = DEFAULT_HORIZON) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.epoch = epoch
        self.manifest = Manifest.load(self.root)
        if self.manifest.legacy_snapshots is not None:
            self.manifest.save()  # a version-1 manifest: its snapshot list into day indexes (store.py)
        removed = remove_orphans(self.root, self.manifest)
        if removed:
            log.warning("archive: removed %d files that no manifest names (left by a crash)", removed)
        self.codec = SingleObjectCodec()
        self.snapshot_every = snapshot_every
        self.fanin, self.seal_after, self.memory_limit, self.auto_compact = fanin, seal_after, memory_limit, auto_compact
        self._committed = self.manifest.covered()
        self._last: dict[tuple[str, str, int], tuple[int, int]] = {}
        self._forgotten: set[tuple[str, str, int]] = set()
        self._buf: dict[tuple[str, str], dict[str, list[Any]]] = defaultdict(lambda: {c: [] for c in COLUMNS})
        self._pending_snaps: list[tuple[int, Any, dict[str, Any]]] = []
        self.pending = 0
        self.written = 0
        self.duplicates = 0
        self.folding: Folding | None = None
        self.horizon = horizon
        self._since_snapshot = 0
        if pack is not None:
            self.folding = Folding(self._restore_state(pack))

    def _restore_state(self, pack: RegionPack) -> TwinState:
        from streams.history.timetravel import events_after, load_snapshot, rebuild_snapshots

        last = self.manifest.snapshot_index().latest()
        state = None if last is None else load_snapshot(self.manifest, pack, last, self.horizon)
        if last is not None and state is None:  # another version, horizon or pack: every snapshot again, once
            log.warning("archive: the twin snapshots were written by another version, aggregate horizon or region pack; rebuilding "
                        "them (one fold of the whole archive; time travel folds from the start until it is done)")
            rebuilt, self._since_snapshot = rebuild_snapshots(self.manifest, pack, self.horizon, report=log.warning)
            return rebuilt
        if state is None:
            state = TwinState.empty(pack, self.horizon)
        after = last.seq if last is not None else -1
        rest = list(events_after(self.manifest, after))
        self._since_snapshot = len(rest)
        return fold(state, ((a.event, a.partition) for a in rest))

    def add(self, topic: str, partition: int, offset: int, event: Event, datum: bytes | None = None,
            batch_index: int = -1, key: bytes | None = None, epoch: str | None = None) -> bool:
        """Buffer one valid event; False when its origin is archived already (a redelivered record)."""
        epoch = self.epoch if epoch is None else epoch
        origin = (epoch, topic, partition)
        if offset <= self._committed.get(origin, -1) or (offset, batch_index) <= self._last.get(origin, (-1, -2)):
            self.duplicates += 1
            return False
        self._last[origin] = (offset, batch_index)
        if epoch not in self.manifest.epochs:
            self.manifest.epochs.append(epoch)
        if datum is None:
            datum = self.codec.encode(type(event).__name__, to_record(event))
        seq = self.manifest.next_seq
        self.manifest.next_seq += 1
        cols = self._buf[(topic, event.occurred_at.astimezone(UTC).date().isoformat())]
        for name, value in (("seq", seq), ("epoch", epoch), ("partition", partition), ("offset", offset),
                            ("batch_index", batch_index), ("key", key), ("event_id", event.event_id),
                            ("entity_id", str(event.entity_id)), ("event_type", type(event).__name__),
                            ("occurred_at", event.occurred_at), ("region", event.region), ("datum", datum)):
            cols[name].append(value)
        self.pending += 1
        if self.folding is not None:
            self.folding.apply(event, partition)
            self._since_snapshot += 1
            if self._since_snapshot >= self.snapshot_every:
                self._pending_snaps.append((seq, self.folding.as_of, to_snapshot(self.folding.freeze())))
                self._since_snapshot = 0
        return True

    def committed_offset(self, topic: str, partition: int, epoch: str | None = None) -> int:
        """The largest offset of (epoch, topic, partition) in the archive, -1 for none."""
        return self._committed.get((self.epoch if epoch is None else epoch, topic, partition), -1)

    def forget(self, topic: str, partition: int, epoch: str | None = None) -> None:
        """Stop skipping (epoch, topic, partition) by offset (its offsets restarted)."""
        origin = (self.epoch if epoch is None else epoch, topic, partition)
        self._forgotten.add(origin)
        self._committed.pop(origin, None)
        self._last.pop(origin, None)

    def add_many(self, items: Iterable[tuple[str, int, int, Event]]) -> int:
        """(topic, partition, offset, event) each; returns how many were new. For generators and tests."""
        return sum(self.add(topic, partition, offset, event) for topic, partition, offset, event in items)

    def skipped_invalid(self, n: int = 1) -> None:
        self.manifest.invalid_skipped += n

    def flush(self) -> list[Path]:
        """Write the buffered events (a file per topic and day), the snapshots taken, then commit the manifest."""
        paths = []
        for (topic, day), cols in self._buf.items():
            cols["occurred_at"] = [t.astimezone(UTC) for t in cols["occurred_at"]]
            table = pa.Table.from_pydict(cols, schema=SCHEMA)
            info = write_parquet(self.root, topic, day, 0, table)
            self.manifest.files[info.path] = info
            paths.append(self.root / info.path)
            self.written += table.num_rows
        self.manifest.add_snapshots([write_snapshot(self.root, seq, as_of, doc) for seq, as_of, doc in self._pending_snaps])
        if paths or self._pending_snaps or not (self.root / "_manifest.json").exists():
            self.manifest.save()
        self._buf.clear()
        self._pending_snaps.clear()
        self.pending = 0
        self._committed = {k: v for k, v in self.manifest.covered().items() if k not in self._forgotten}
        if self.auto_compact:
            self.compact()
        return paths

    def compact(self) -> int:
        return compact(self.manifest, self.fanin, self.seal_after, self.memory_limit)

