"""Time travel: the twin at T = the one fold (``twin.state``) over the archived events with occurred_at <= T, in the
order they were archived (arrival order; per partition the offset order).

Defined precisely: state(T) is what the live worker would hold had every event that occurred after T never been sent,
the others arriving as they did. Late events that occurred before T but arrived after T count (the twin at T as the
archive knows it now, not the screen as it looked at T: the archive keeps no arrival clock). The aggregate horizon is
the live one (``twin.aggregates``: per shard, relative to the newest reading of that shard at or before T), so a
window near T is answered here exactly as the worker held it. ``tests/twin/test_onefold.py`` proves it equal to the live
agents' units fed the same events (random batches, redeliveries, restarts).

Fast through the snapshots beside the archive: each holds the twin after every event up to an archive position (seq)
and records the largest occurred_at among them. The latest snapshot whose events all occurred at or before T is the
fold of a prefix with nothing to filter out, so state(T) = that snapshot + the events after its position that occurred
at or before T (a query on seq and occurred_at, usually a few thousand rows). ``tests/streams/test_timetravel.py``
proves it equal to the full fold for random T.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from streams.history.store import Manifest, Snapshot, read_snapshot, to_us
from streams.history.writer import ArchivedEvent, DatumDecoder
from twin.region import RegionPack
from twin.state import DEFAULT_HORIZON, SNAPSHOT_VERSION, TwinState, fold, from_snapshot

BATCH = 20_000


def events_after(manifest: Manifest, after_seq: int, until: datetime | None = None, cur: Any = None,
                 attempts: int = 3) -> Iterator[ArchivedEvent]:
    """Archived events with seq > *after_seq* (and occurred_at <= *until*), in archive order.

    A sink that merges files meanwhile deletes the ones it merged: the read then goes on from the last event it gave,
    on a fresh manifest (the merged file holds the same events with the same seq), up to *attempts* times."""
    import duckdb

    until_us = to_us(until) if until is not None else None
    own = cur is None
    if own:
        from streams.history.engine import connect

        cur = connect()
    decoder = DatumDecoder.shared()
    sql = ("SELECT seq, topic, partition, datum FROM read_parquet(?, hive_partitioning=true, hive_types_autocast=false)"
           " WHERE seq > ?" + (" AND occurred_at <= ?" if until is not None else "") + " ORDER BY seq")
    try:
        for attempt in range(1, attempts + 1):
            files = [f for f in manifest.files.values()
                     if f.seq_max > after_seq and (until_us is None or f.t_min <= until_us)]
            if not files:
                return
            params: list[Any] = [manifest.paths(files), after_seq] + ([until] if until is not None else [])
            try:
                res = cur.execute(sql, params)
                while rows := res.fetchmany(BATCH):
                    for seq, topic, partition, datum in rows:
                        yield ArchivedEvent(seq, topic, partition, decoder.event(datum))
                        after_seq = seq
                return
            except duckdb.IOException:
                if attempt == attempts:
                    raise
                manifest = Manifest.load(manifest.root)  # a merge replaced files: go on from after_seq
    finally:
        if own:
            cur.close()


def base_snapshot(manifest: Manifest, at: datetime | None) -> Snapshot | None:
    """The latest snapshot whose events all occurred at or before *at* (snapshots' as_of never decreases with seq);
    reads at most two day indexes (``streams.history.store.SnapshotIndex``)."""
    index = manifest.snapshot_index()
    return index.latest() if at is None else index.at_or_before(to_us(at))


def load_snapshot(manifest: Manifest, pack: RegionPack, snap: Snapshot, horizon: timedelta) -> TwinState | None:
    """The twin a snapshot holds; None when it was written by another version, with another aggregate horizon or
    with another region pack's sensors and coast segments (then the caller folds from an earlier point)."""
    doc = read_snapshot(manifest.root, snap)
    if (doc.get("version") != SNAPSHOT_VERSION or float(doc.get("horizon_s", -1)) != horizon.total_seconds()
            or doc.get("pack") != pack.fold_fingerprint()):
        return None
    return from_snapshot(pack, doc)


def state_at(manifest: Manifest, pack: RegionPack, at: datetime | None, cur: Any = None,
             horizon: timedelta = DEFAULT_HORIZON, alert_log: list[Any] | None = None) -> TwinState:
    """The twin at *at* (None: after every archived event); *alert_log* collects the alerts raised or cleared by the
    events folded after the snapshot."""
    snap = base_snapshot(manifest, at)
    state = None if snap is None else load_snapshot(manifest, pack, snap, horizon)
    if state is None:
        snap = None
        state = TwinState.empty(pack, horizon)
    rest = events_after(manifest, -1 if snap is None else snap.seq, at, cur)
    return fold(state, ((a.event, a.partition) for a in rest), alert_log=alert_log)


def full_fold(manifest: Manifest, pack: RegionPack, at: datetime | None, horizon: timedelta = DEFAULT_HORIZON,
              alert_log: list[Any] | None = None) -> TwinState:
    """The reference: every archived event from the start, no snapshot (for tests and benchmarks); *alert_log*
    collects the whole alert history up to *at*."""
    return fold(TwinState.empty(pack, horizon), ((a.event, a.partition) for a in events_after(manifest, -1, at)),
                alert_log=alert_log)


def rebuild_snapshots(manifest: Manifest, pack: RegionPack, horizon: timedelta = DEFAULT_HORIZON,
                      report: Any = None, every_s: float = 10.0) -> tuple[TwinState, int]:
    """Fold the whole archive once and write every snapshot again, at the positions the archive has them, with this
    version's fold and *horizon* (after an upgrade that changed the snapshot format, or a new aggregate horizon). The
    day indexes are rewritten at the end (until then readers use the old ones, and fold from the start where a snapshot
    is stale, as before); files no index names are deleted. Returns the twin after every archived event and how many
    events follow the last snapshot. *report* gets a line of progress every *every_s* seconds."""
    import time

    from streams.history.store import SNAPSHOT_DIR, write_snapshot
    from twin.state import Folding, to_snapshot

    index = manifest.snapshot_index()
    old = index.all()
    positions = sorted({s.seq for s in old})
    total = manifest.next_seq
    w = Folding(TwinState.empty(pack, horizon))
    new = []
    i = 0
    since = 0
    started = last_report = time.monotonic()
    for a in events_after(manifest, -1):
        w.apply(a.event, a.partition)
        since += 1
        if i < len(positions) and a.seq >= positions[i]:
            while i < len(positions) and positions[i] <= a.seq:
                i += 1
            new.append(write_snapshot(manifest.root, a.seq, w.as_of, to_snapshot(w.freeze())))
            since = 0
        if report is not None and time.monotonic() - last_report >= every_s:
            last_report = time.monotonic()
            report(f"archive: rebuilding the twin snapshots: {a.seq + 1:,} of {total:,} events folded, {len(new)} of "
                   f"{len(positions)} snapshots written ({time.monotonic() - started:.0f} s)")
    keep = {s.file for s in new}
    manifest.replace_snapshots(new)
    removed = 0
    for f in (manifest.root / SNAPSHOT_DIR).rglob("snap-*.json.gz"):  # in day folders, and version-1 ones above them
        if str(f.relative_to(manifest.root)) not in keep:
            f.unlink(missing_ok=True)
            removed += 1
    if report is not None:
        report(f"archive: {len(new)} twin snapshots rebuilt from {total:,} events in {time.monotonic() - started:.0f} s "
               f"({removed} old files removed)")
    return w.freeze(), since


def densify_snapshots(manifest: Manifest, pack: RegionPack, every: int, horizon: timedelta = DEFAULT_HORIZON,
                      report: Any = None, every_s: float = 10.0) -> int:
    """Add snapshots so that no more than *every* archived events follow one (an archive written with a sparser
    ``snapshot_every``: time travel's cost is the events after the snapshot). Folds from the last snapshot before the
    first wider gap to the archive's end (not from the start) and writes a snapshot wherever *every* events passed
    since the previous one; the existing snapshots stay. For the archive's one writer, or while no writer runs.
    Returns the number of snapshots added; *report* gets a line of progress every *every_s* seconds."""
    import time

    from streams.history.store import write_snapshot
    from twin.state import Folding, to_snapshot

    if every < 1:
        raise ValueError(f"every must be at least 1 event, got {every}")
    old = manifest.snapshot_index().all()
    ends = [s.seq for s in old] + [manifest.next_seq - 1]
    start = None  # the snapshot before the first gap wider than every (None: the archive's start)
    prev = -1
    for k, seq in enumerate(ends):
        if seq - prev > every:
            start = old[k - 1] if k else None
            break
        prev = seq
    else:
        return 0
    state = TwinState.empty(pack, horizon) if start is None else load_snapshot(manifest, pack, start, horizon)
    if state is None:
        raise ValueError(f"snapshot {start} was written by another version or horizon; run rebuild_snapshots first")
    existing = {s.seq for s in old}
    w = Folding(state)
    new: list[Snapshot] = []
    last = -1 if start is None else start.seq
    started = last_report = time.monotonic()
    for a in events_after(manifest, last):
        w.apply(a.event, a.partition)
        if a.seq in existing:
            last = a.seq
        elif a.seq - last >= every:
            new.append(write_snapshot(manifest.root, a.seq, w.as_of, to_snapshot(w.freeze())))
            last = a.seq
        if report is not None and time.monotonic() - last_report >= every_s:
            last_report = time.monotonic()
            report(f"archive: adding twin snapshots: at event {a.seq + 1:,} of {manifest.next_seq:,}, {len(new)} "
                   f"written ({time.monotonic() - started:.0f} s)")
    if new:
        manifest.replace_snapshots(sorted(old + new, key=lambda s: s.seq))
    if report is not None:
        report(f"archive: {len(new)} twin snapshots added in {time.monotonic() - started:.0f} s (at most {every:,} "
               f"events after each)")
    return len(new)
