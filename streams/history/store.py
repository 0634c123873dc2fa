"""The archive on disk: Parquet files by topic and UTC day, a manifest that says which files make the archive, and
periodic twin snapshots beside it.

Layout under the archive root (hive style, readable by DuckDB, Spark, Trino, pyarrow alike)::

    topic=<topic>/day=<YYYY-MM-DD>/L<level>-<first seq>-<id>.parquet   a row per archived event (``SCHEMA``)
    _manifest.json                                                       the files, their ranges, epochs, snapshot days
    _snapshots/day=<YYYY-MM-DD>/snap-<seq>.json.gz                       the twin after every event up to <seq>
    _snapshots/day=<YYYY-MM-DD>/_index.json                              that day's snapshots (seq, as_of, file)

Snapshots are indexed per UTC day of their ``as_of`` (the largest occurred_at they reflect, which never decreases with
seq), so the manifest names only the days that have snapshots, and finding the snapshot for a time T reads at most two
small day indexes whatever the archive's age (a sink at 200 readings/s writes ~1,700 snapshots a day; in one list they
made the manifest, read on every change, grow by ~140 kB a day). A day index is written before the manifest, and its
entries at or above the manifest's ``next_seq`` are not part of the archive (a crash between the two; they are dropped
when a writer opens the archive). Version-1 manifests (one list of every snapshot) are read as they are and rewritten
as version 2 by the next writer that opens the archive (``ArchiveWriter``, ``plietsch archive``).

``day`` is the UTC day of ``occurred_at``. ``seq`` numbers the events in the order the sink archived them (arrival
order, per partition the offset order): time travel folds in that order. The manifest is the commit point: a file
belongs to the archive once the manifest names it, so readers never see half a flush, and files a crash left behind
are removed when a writer opens the archive. Every file and the manifest are written to a temporary name, fsynced and
renamed (then the folder is fsynced).

Compaction keeps the number of files bounded: per (topic, day), level-0 files (one per flush, arrival order) are
merged ``fanin`` at a time into the next level, and a day that is over (its end plus ``seal_after`` lies behind the
newest event of the topic) is merged into one file; merged files are sorted by (10-minute bucket of occurred_at,
entity_id, occurred_at, seq) in row groups (``SORT_KEY``). Time first, in coarse buckets: time travel asks for the events
after a snapshot's position up to T (``seq > s AND occurred_at <= T``), which lie in the last buckets before T, so the
row groups and pages of other buckets are skipped, datums included (sorted by entity first, every page of the file held
a few of them, and each query decompressed the file's whole datum column: ~3.5x the CPU at 10M readings); within a
bucket, by entity, so a query for a few entities reads one run per bucket. Files merged by an older version (entity
first) stay correct, only slower, until ``relayout`` rewrites them. Merging runs in DuckDB (out-of-core sort under a
memory limit), so a day of any size merges in bounded memory.
"""

from __future__ import annotations

import bisect
import gzip
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from streams.files import atomic_write, fsync_dir

log = logging.getLogger("plietsch.archive")

SCHEMA = pa.schema([
    ("seq", pa.int64()),  # arrival order in the archive
    ("epoch", pa.string()),  # origin: broker epoch, (topic: the folder), partition, offset, index in the batch record
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("batch_index", pa.int32()),  # -1: a single-datum record
    ("key", pa.binary()),
    ("event_id", pa.string()),
    ("entity_id", pa.string()),
    ("event_type", pa.string()),
    ("occurred_at", pa.timestamp("us", tz="UTC")),
    ("region", pa.string()),
    ("datum", pa.binary()),  # the Avro single-object datum, as the worker read it
])
MANIFEST = "_manifest.json"
SNAPSHOT_DIR = "_snapshots"
SNAPSHOT_INDEX = "_index.json"
MANIFEST_VERSION = 2
SEALED = 9  # the level of a finished day's merged file
ROW_GROUP = 64 * 1024
SORT_BUCKET_US = 600 * 1_000_000  # merged files: time in 10-minute buckets first, then entity (module docstring)
SORT_KEY = f"epoch_us(occurred_at) // {SORT_BUCKET_US}, entity_id, occurred_at, seq"
US = 1_000_000


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@dataclass
class FileInfo:
    path: str  # relative to the archive root
    topic: str
    day: str
    level: int
    rows: int
    seq_min: int
    seq_max: int
    t_min: int  # occurred_at range, microseconds since the epoch (UTC)
    t_max: int
    offsets: dict[str, list[int]] = field(default_factory=dict)  # "<epoch>|<partition>" -> [min offset, max offset]


@dataclass
class Snapshot:
    seq: int  # the twin after every archived event with seq <= this
    as_of: int  # the largest occurred_at in it (microseconds), -1 for none
    file: str


def snapshot_day(as_of: int) -> str:
    """The UTC day a snapshot is indexed under (that of its as_of; a snapshot of nothing under 1970-01-01)."""
    return from_us(max(as_of, 0)).date().isoformat()


_DAY_CACHE: dict[Path, tuple[tuple[int, int], list[Snapshot]]] = {}
_DAY_CACHE_MAX = 64


def read_day_index(root: Path, day: str) -> list[Snapshot]:
    """One day's snapshots in seq order (cached while the file is unchanged; days before the newest never change)."""
    path = Path(root) / SNAPSHOT_DIR / f"day={day}" / SNAPSHOT_INDEX
    try:
        st = path.stat()
    except FileNotFoundError:
        return []
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _DAY_CACHE.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    try:
        snaps = [Snapshot(**d) for d in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"snapshot index {path} is unreadable ({exc}); delete the folder {path.parent} (time travel "
                         "then folds from the previous day's snapshot) or restore it from a backup") from exc
    if len(_DAY_CACHE) >= _DAY_CACHE_MAX:
        _DAY_CACHE.pop(next(iter(_DAY_CACHE)))
    _DAY_CACHE[path] = (stamp, snaps)
    return snaps


class SnapshotIndex:
    """The snapshots of one manifest: the days that have any, each day's list read on demand."""

    def __init__(self, root: Path, days: list[str], next_seq: int, legacy: list[Snapshot] | None = None) -> None:
        self.root, self.days, self.next_seq, self.legacy = root, days, next_seq, legacy

    def day(self, day: str) -> list[Snapshot]:
        return [s for s in read_day_index(self.root, day) if s.seq < self.next_seq]

    def latest(self) -> Snapshot | None:
        if self.legacy is not None:
            return self.legacy[-1] if self.legacy else None
        for day in reversed(self.days):
            snaps = self.day(day)
            if snaps:
                return snaps[-1]
        return None

    def at_or_before(self, t_us: int) -> Snapshot | None:
        """The latest snapshot whose events all occurred at or before *t_us* (reads one or two day indexes)."""
        if self.legacy is not None:
            best = None
            for s in self.legacy:
                if s.as_of > t_us:
                    break
                best = s
            return best
        i = bisect.bisect_right(self.days, snapshot_day(t_us)) - 1
        while i >= 0:
            fit = [s for s in self.day(self.days[i]) if s.as_of <= t_us]
            if fit:
                return fit[-1]
            i -= 1  # T lies before the day's first snapshot: the previous day's last one (as_of only grows)
        return None

    def all(self) -> list[Snapshot]:
        """Every snapshot (reads every day index: for tests, tools and migration, not for queries)."""
        if self.legacy is not None:
            return list(self.legacy)
        return [s for day in self.days for s in self.day(day)]


@dataclass
class Manifest:
    root: Path
    next_seq: int = 0
    epochs: list[str] = field(default_factory=list)  # in the order they were first archived
    files: dict[str, FileInfo] = field(default_factory=dict)
    snapshot_days: list[str] = field(default_factory=list)  # UTC days with a snapshot index, ascending
    invalid_skipped: int = 0
    legacy_snapshots: list[Snapshot] | None = None  # a version-1 manifest's list, until it is saved as version 2

    @classmethod
    def load(cls, root: Path) -> Manifest:
        path = Path(root) / MANIFEST
        if not path.exists():
            return cls(Path(root))
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"archive manifest {path} is unreadable ({exc}); restore it from a backup or move the "
                             "archive aside") from exc
        version = doc.get("version", 1)
        if version not in (1, MANIFEST_VERSION):
            raise ValueError(f"archive manifest {path} has version {version!r}, this code reads 1 and "
                             f"{MANIFEST_VERSION}; run a newer plietsch on this archive")
        legacy = [Snapshot(**s) for s in doc["snapshots"]] if version == 1 else None
        return cls(Path(root), doc["next_seq"], doc["epochs"], {f["path"]: FileInfo(**f) for f in doc["files"]},
                   doc.get("snapshot_days", []), doc.get("invalid_skipped", 0), legacy)

    def snapshot_index(self) -> SnapshotIndex:
        return SnapshotIndex(self.root, self.snapshot_days, self.next_seq, self.legacy_snapshots)

    def add_snapshots(self, snaps: list[Snapshot]) -> None:
        """Record snapshots (their files written): each day's index is rewritten now, the manifest on ``save``."""
        if self.legacy_snapshots is not None:
            self.migrate()
        by_day: dict[str, list[Snapshot]] = {}
        for s in snaps:
            by_day.setdefault(snapshot_day(s.as_of), []).append(s)
        for day, new in sorted(by_day.items()):
            # entries at or above next_seq before these were a crash's leftovers (never committed): dropped
            kept = [s for s in read_day_index(self.root, day) if s.seq < min(n.seq for n in new)]
            folder = self.root / SNAPSHOT_DIR / f"day={day}"
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / SNAPSHOT_INDEX, json.dumps([asdict(s) for s in kept + new],
                                                             separators=(",", ":")).encode())
            if day not in self.snapshot_days:
                bisect.insort(self.snapshot_days, day)

    def replace_snapshots(self, snaps: list[Snapshot]) -> None:
        """Make *snaps* (their files written) the only snapshots: each of their days' index is rewritten whole, the
        indexes of other days removed, then the manifest saved."""
        self.legacy_snapshots = None
        by_day: dict[str, list[Snapshot]] = {}
        for s in sorted(snaps, key=lambda x: x.seq):
            by_day.setdefault(snapshot_day(s.as_of), []).append(s)
        for day, new in sorted(by_day.items()):
            folder = self.root / SNAPSHOT_DIR / f"day={day}"
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / SNAPSHOT_INDEX, json.dumps([asdict(s) for s in new], separators=(",", ":")).encode())
        gone = [d for d in self.snapshot_days if d not in by_day]
        self.snapshot_days = sorted(by_day)
        self.save()
        for day in gone:
            (self.root / SNAPSHOT_DIR / f"day={day}" / SNAPSHOT_INDEX).unlink(missing_ok=True)

    def migrate(self) -> None:
        """Version 1 -> 2: the one snapshot list into day indexes (snapshot files stay where they are)."""
        legacy, self.legacy_snapshots = self.legacy_snapshots or [], None
        if legacy:
            self.add_snapshots(legacy)
            log.info("archive %s: %d snapshots moved from the manifest into %d day indexes", self.root, len(legacy),
                     len(self.snapshot_days))

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.legacy_snapshots is not None:
            self.migrate()
        doc = {"version": MANIFEST_VERSION, "next_seq": self.next_seq, "epochs": self.epochs,
               "invalid_skipped": self.invalid_skipped, "files": [asdict(f) for f in self.files.values()],
               "snapshot_days": self.snapshot_days}
        atomic_write(self.root / MANIFEST, json.dumps(doc, separators=(",", ":")).encode())

    def covered(self) -> dict[tuple[str, str, int], int]:
        """(epoch, topic, partition) -> the largest archived offset."""
        out: dict[tuple[str, str, int], int] = {}
        for f in self.files.values():
            for k, (_, hi) in f.offsets.items():
                epoch, part = k.rsplit("|", 1)
                key = (epoch, f.topic, int(part))
                out[key] = max(out.get(key, -1), hi)
        return out

    def summary(self) -> dict[str, Any]:
        if not self.files:
            return {"start": None, "end": None, "events": 0}
        return {"start": from_us(min(f.t_min for f in self.files.values())),
                "end": from_us(max(f.t_max for f in self.files.values())),
                "events": sum(f.rows for f in self.files.values())}

    def paths(self, files: Iterator[FileInfo] | list[FileInfo] | None = None) -> list[str]:
        return [str(self.root / f.path) for f in (self.files.values() if files is None else files)]


def remove_orphans(root: Path, manifest: Manifest) -> int:
    """Delete archive files no manifest names (a crash between writing and committing, or after a merge)."""
    n = 0
    for p in list(root.glob("topic=*/day=*/*")):
        rel = str(p.relative_to(root))
        if rel not in manifest.files and (p.suffix in (".parquet", ".tmp")):
            p.unlink(missing_ok=True)
            n += 1
    # snapshot files of no committed snapshot: a crash after writing them and before the manifest (seq >= next_seq);
    # only the newest snapshot day and days the manifest does not name can hold them, so this stays flat in age
    folder = root / SNAPSHOT_DIR
    if folder.is_dir() and manifest.legacy_snapshots is None:
        named = set(manifest.snapshot_days)
        for d in folder.iterdir():
            day = d.name.removeprefix("day=")
            if d.is_dir() and (day not in named or day == (manifest.snapshot_days or [""])[-1]):
                snaps = manifest.snapshot_index().day(day) if day in named else []
                index = d / SNAPSHOT_INDEX
                if not snaps:
                    index.unlink(missing_ok=True)
                elif len(snaps) < len(read_day_index(root, day)):
                    atomic_write(index, json.dumps([asdict(s) for s in snaps], separators=(",", ":")).encode())
                keep = {s.file for s in snaps}
                for p in d.glob("snap-*"):
                    if str(p.relative_to(root)) not in keep:
                        p.unlink(missing_ok=True)
            elif d.is_file() and d.name.startswith("snap-") and int(d.name[5:17]) >= manifest.next_seq:
                d.unlink(missing_ok=True)  # a version-1 leftover
    return n


def info_for(table: pa.Table, rel: str, topic: str, day: str, level: int) -> FileInfo:
    import pyarrow.compute as pc

    seq = table.column("seq")
    t = table.column("occurred_at").cast(pa.int64())
    offsets: dict[str, list[int]] = {}
    grouped = table.group_by(["epoch", "partition"]).aggregate([("offset", "min"), ("offset", "max")])
    for e, p, lo, hi in zip(*(grouped.column(c).to_pylist() for c in ("epoch", "partition", "offset_min", "offset_max")),
                            strict=True):
        offsets[f"{e}|{p}"] = [lo, hi]
    return FileInfo(rel, topic, day, level, table.num_rows, pc.min(seq).as_py(), pc.max(seq).as_py(), pc.min(t).as_py(),
                    pc.max(t).as_py(), offsets)


def write_parquet(root: Path, topic: str, day: str, level: int, table: pa.Table) -> FileInfo:
    folder = root / f"topic={topic}" / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    seq0 = table.column("seq")[0].as_py() if table.num_rows else 0
    rel = f"topic={topic}/day={day}/L{level}-{seq0:012d}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = root / (rel + ".tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP, write_statistics=True)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.rename(root / rel)
    fsync_dir(folder)
    return info_for(table, rel, topic, day, level)


def merge(root: Path, files: list[FileInfo], level: int, memory_limit: str = "512MB", threads: int = 2) -> FileInfo:
    """Merge *files* (one topic and day) into one file sorted by ``SORT_KEY``, in DuckDB."""
    import duckdb

    topic, day = files[0].topic, files[0].day
    folder = root / f"topic={topic}" / f"day={day}"
    seq0 = min(f.seq_min for f in files)
    rel = f"topic={topic}/day={day}/L{level}-{seq0:012d}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = root / (rel + ".tmp")
    from streams.history.engine import spill_dir

    con = duckdb.connect(config={"memory_limit": memory_limit, "threads": threads, "preserve_insertion_order": False,
                                 "temp_directory": spill_dir()})
    try:
        src = [str(root / f.path) for f in files]
        con.execute(f"COPY (SELECT * FROM read_parquet(?, hive_partitioning=false) ORDER BY {SORT_KEY}) "
                    f"TO '{tmp}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP})", [src])
    finally:
        con.close()
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.rename(root / rel)
    fsync_dir(folder)
    offsets: dict[str, list[int]] = {}
    for f in files:
        for k, (lo, hi) in f.offsets.items():
            cur = offsets.get(k)
            offsets[k] = [lo, hi] if cur is None else [min(cur[0], lo), max(cur[1], hi)]
    return FileInfo(rel, topic, day, level, sum(f.rows for f in files), seq0, max(f.seq_max for f in files),
                    min(f.t_min for f in files), max(f.t_max for f in files), offsets)


def plan_compaction(manifest: Manifest, fanin: int, seal_after: timedelta) -> list[tuple[list[FileInfo], int]]:
    """Which files to merge into which level: a finished day into one sealed file, else ``fanin`` files of a level."""
    newest: dict[str, int] = {}
    groups: dict[tuple[str, str], list[FileInfo]] = {}
    for f in manifest.files.values():
        newest[f.topic] = max(newest.get(f.topic, f.t_max), f.t_max)
        groups.setdefault((f.topic, f.day), []).append(f)
    plans: list[tuple[list[FileInfo], int]] = []
    for (topic, day), files in sorted(groups.items()):
        day_end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        open_files = [f for f in files if f.level < SEALED]
        if to_us(day_end + seal_after) <= newest[topic]:
            if open_files and (len(files) > 1 or open_files[0].level == 0):
                plans.append((open_files, SEALED))
            sealed = [f for f in files if f.level == SEALED]
            if len(sealed) >= fanin:
                plans.append((sealed, SEALED))
            continue
        by_level: dict[int, list[FileInfo]] = {}
        for f in open_files:
            by_level.setdefault(f.level, []).append(f)
        for lvl, fs in sorted(by_level.items()):
            if len(fs) >= fanin and lvl + 1 < SEALED:
                plans.append((sorted(fs, key=lambda f: f.seq_min)[:fanin * (len(fs) // fanin)], lvl + 1))
    return plans


def compact(manifest: Manifest, fanin: int = 8, seal_after: timedelta = timedelta(hours=1),
            memory_limit: str = "512MB") -> int:
    """Run the merges ``plan_compaction`` asks for; the manifest is saved after each, then the old files go.
    Returns the number of files merged away."""
    merged = 0
    while True:
        plans = plan_compaction(manifest, fanin, seal_after)
        if not plans:
            return merged
        for files, level in plans:
            started = time.monotonic()
            new = merge(manifest.root, files, level, memory_limit)
            for f in files:
                del manifest.files[f.path]
            manifest.files[new.path] = new
            manifest.save()
            for f in files:
                (manifest.root / f.path).unlink(missing_ok=True)
            merged += len(files)
            log.info("archive: merged %d files (%d events) of %s %s into level %d in %.1f s", len(files), new.rows,
                     new.topic, new.day, level, time.monotonic() - started)


def relayout(manifest: Manifest, memory_limit: str = "512MB", report: Any = None) -> int:
    """Rewrite every merged file (level > 0) of *manifest* sorted by ``SORT_KEY`` (files merged by a version that
    sorted by entity first): one file at a time, the manifest saved after each, then the old file removed, as
    ``compact`` does (readers that still name the old file retry on a fresh manifest). Same rows, same seq, so the
    snapshots stay valid. For the archive's one writer (or while no writer runs). Returns the files rewritten; *report*
    gets a line per file."""
    done = 0
    todo = [f for f in manifest.files.values() if f.level > 0]
    for f in todo:
        started = time.monotonic()
        new = merge(manifest.root, [f], f.level, memory_limit)
        del manifest.files[f.path]
        manifest.files[new.path] = new
        manifest.save()
        (manifest.root / f.path).unlink(missing_ok=True)
        done += 1
        if report is not None:
            report(f"archive: {f.path} ({f.rows:,} events) sorted by time bucket and entity in "
                   f"{time.monotonic() - started:.1f} s ({done} of {len(todo)})")
    return done


def write_snapshot(root: Path, seq: int, as_of: datetime | None, doc: dict[str, Any]) -> Snapshot:
    as_of_us = to_us(as_of) if as_of else -1
    day = snapshot_day(as_of_us)
    folder = root / SNAPSHOT_DIR / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    rel = f"{SNAPSHOT_DIR}/day={day}/snap-{seq:012d}.json.gz"
    atomic_write(root / rel, gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), compresslevel=3))
    return Snapshot(seq, as_of_us, rel)


_SNAP_CACHE: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}
_SNAP_CACHE_MAX = 8


def read_snapshot(root: Path, snap: Snapshot) -> dict[str, Any]:
    """A snapshot's document. The last few read are kept parsed (a slider walks positions that share a snapshot), keyed
    by the file's size and modification time, since ``rebuild_snapshots`` rewrites a file under the same name. Callers
    must not change the document (``twin.state.from_snapshot`` builds new objects from it)."""
    path = Path(root) / snap.file
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns)
    hit = _SNAP_CACHE.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    raw = gzip.decompress(path.read_bytes())
    try:
        doc = dict(orjson.loads(raw))
    except orjson.JSONDecodeError:  # NaN or Infinity, which json.dumps writes and orjson does not read
        doc = dict(json.loads(raw))
    if len(_SNAP_CACHE) >= _SNAP_CACHE_MAX:
        _SNAP_CACHE.pop(next(iter(_SNAP_CACHE)))
    _SNAP_CACHE[path] = (stamp, doc)
    return doc
