"""History through a query engine: DuckDB over the archive's Parquet files, behind a small port (``HistoryEngine``).

Queries name only the files the manifest lists and whose time range overlaps the question (partition pruning); inside
a file DuckDB skips row groups by their min/max statistics (merged files are sorted by
10-minute time bucket, then entity and time: ``streams.history.store.SORT_KEY``).
DuckDB runs with a memory limit and a thread count, so a query's memory is bounded whatever the archive's size.
``range`` is answered from the manifest without reading any data file. Time travel: ``streams.history.timetravel``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import duckdb

from streams.history.store import MANIFEST, FileInfo, Manifest, to_us
from streams.history.writer import ArchivedEvent, DatumDecoder
from twin.region import RegionPack
from twin.state import DEFAULT_HORIZON, TwinState


@dataclass(frozen=True)
class EnginePage:
    total: int
    events: list[ArchivedEvent]


class HistoryEngine(Protocol):
    """What the API needs from history."""

    def events(self, start: datetime, end: datetime, entity_ids: Sequence[str] | None, limit: int,
               offset: int) -> EnginePage: ...

    def range(self) -> dict[str, Any]: ...

    def manifest(self) -> Manifest: ...

    def state_at(self, at: datetime | None) -> TwinState: ...


def spill_dir() -> str:
    """Where DuckDB spills a query that exceeds its memory limit: the system's temporary directory, never the current
    directory (its default, ``.tmp/``, once left 450 MB in a source tree)."""
    import os
    import tempfile

    return os.path.join(tempfile.gettempdir(), "plietsch-duckdb-spill")


def connect(memory_limit: str = "512MB", threads: int = 2) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(config={"memory_limit": memory_limit, "threads": threads, "preserve_insertion_order": False,
                                  "enable_object_cache": True, "temp_directory": spill_dir()})


class ArchiveGone(RuntimeError):
    pass


class DuckDBHistory:
    """``HistoryEngine`` over an archive root. Thread-safe: each call runs on its own cursor of one connection."""

    def __init__(self, root: Path, pack: RegionPack, memory_limit: str = "512MB", threads: int = 2,
                 horizon: timedelta = DEFAULT_HORIZON) -> None:
        self.root = Path(root)
        self.pack = pack
        self.horizon = horizon  # the aggregate horizon of the worker (PLIETSCH_AGGREGATE_HORIZON_H)
        self.con = connect(memory_limit, threads)
        self._lock = threading.Lock()
        self._manifest: Manifest | None = None
        self._stamp: tuple[int, int] | None = None
        self.decoder = DatumDecoder.shared()

    def manifest(self) -> Manifest:
        """The archive's manifest, read again only when the file changed."""
        path = self.root / MANIFEST
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return Manifest(self.root)
        with self._lock:
            if self._manifest is None or stamp != self._stamp:
                self._manifest, self._stamp = Manifest.load(self.root), stamp
            return self._manifest

    def query(self, build: Any) -> Any:
        """Run ``build(cursor, manifest)``; once more on a fresh manifest if a merge removed a file meanwhile."""
        for attempt in range(2):
            manifest = self.manifest()
            cur = self.con.cursor()
            try:
                return build(cur, manifest)
            except duckdb.IOException:
                if attempt:
                    raise
                with self._lock:
                    self._stamp = None
            finally:
                cur.close()
        return None

    def files(self, manifest: Manifest, start: datetime | None, end: datetime | None) -> list[FileInfo]:
        lo = to_us(start) if start else None
        hi = to_us(end) if end else None
        return [f for f in manifest.files.values() if (lo is None or f.t_max >= lo) and (hi is None or f.t_min <= hi)]

    def events(self, start: datetime, end: datetime, entity_ids: Sequence[str] | None, limit: int,
               offset: int) -> EnginePage:
        def run(cur: duckdb.DuckDBPyConnection, manifest: Manifest) -> EnginePage:
            files = self.files(manifest, start, end)
            if not files or (entity_ids is not None and not entity_ids):
                return EnginePage(0, [])
            where = "occurred_at >= ? AND occurred_at <= ?"
            params: list[Any] = [manifest.paths(files), start, end]
            if entity_ids is not None:
                where += f" AND entity_id IN ({', '.join('?' * len(entity_ids))})"
                params += list(entity_ids)
            src = "read_parquet(?, hive_partitioning=true, hive_types_autocast=false)"
            row = cur.execute(f"SELECT count(*) FROM {src} WHERE {where}", params).fetchone()
            total = int(row[0]) if row else 0
            if offset >= total:
                return EnginePage(total, [])
            rows = cur.execute(f"SELECT seq, topic, partition, datum FROM {src} WHERE {where} "
                               f"ORDER BY occurred_at, seq LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
            return EnginePage(total, [ArchivedEvent(s, t, p, self.decoder.event(d)) for s, t, p, d in rows])

        page: EnginePage = self.query(run)
        return page

    def range(self) -> dict[str, Any]:
        s = self.manifest().summary()
        return {"start": s["start"].isoformat() if s["start"] else None,
                "end": s["end"].isoformat() if s["end"] else None, "events": s["events"]}

    def state_at(self, at: datetime | None) -> TwinState:
        from streams.history.timetravel import state_at

        state: TwinState = self.query(lambda cur, manifest: state_at(manifest, self.pack, at, cur, self.horizon))
        return state

    def close(self) -> None:
        self.con.close()
