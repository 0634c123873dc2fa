"""The archive's snapshot index per UTC day (issue 8): the manifest names only the days, finding the snapshot for a time
reads at most two day indexes whatever the archive's age, version-1 archives are read as they are and migrated by the
next writer, and index entries a crash left behind (written before the manifest) are not part of the archive."""

from __future__ import annotations

import json
import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.catalogue import SENSOR_TOPICS
from streams.history import store
from streams.history.store import MANIFEST, Manifest, Snapshot, to_us
from streams.history.timetravel import base_snapshot, state_at
from streams.history.writer import ArchiveWriter
from streams.simulator import ReadingFactory
from twin.region import bundled_pack
from twin.state import to_json

PACK = bundled_pack()
SENSORS = sorted(PACK.sensors.values(), key=lambda s: s.id)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _write(root: Path, days: int, per_day: int, every: int, start: int = 0) -> ArchiveWriter:
    """*days* UTC days of readings in time order, *per_day* a day, a snapshot every *every* events."""
    w = ArchiveWriter(root, PACK, epoch="e", snapshot_every=every, auto_compact=False)
    factory = ReadingFactory(PACK, seed=3)
    off = w.committed_offset(SENSOR_TOPICS["parking"].name, 0) + 1
    for d in range(start, start + days):
        for i in range(per_day):
            s = SENSORS[i % len(SENSORS)]
            e = factory.reading(s, T0 + timedelta(days=d, seconds=i * 86400 / per_day))
            w.add(SENSOR_TOPICS[s.sensor_kind].name, 0, off, e)
            off += 1
        w.flush()
    return w


def _linear(snaps: list[Snapshot], t: int) -> Snapshot | None:
    best = None
    for s in snaps:
        if s.as_of <= t:
            best = s
    return best


def test_snapshots_are_indexed_per_day_and_a_lookup_reads_at_most_two_days(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "a"
    _write(root, days=6, per_day=120, every=25)
    doc = json.loads((root / MANIFEST).read_text())
    assert doc["version"] == 2 and "snapshots" not in doc
    m = Manifest.load(root)
    snaps = m.snapshot_index().all()
    assert len(snaps) == 6 * 120 // 25 and m.snapshot_days == sorted({store.snapshot_day(s.as_of) for s in snaps})
    assert len(m.snapshot_days) == 6
    assert [s.seq for s in snaps] == sorted(s.seq for s in snaps)

    reads: list[str] = []
    real = store.read_day_index

    def counting(root_: Path, day: str) -> list[Snapshot]:
        reads.append(day)
        return real(root_, day)

    monkeypatch.setattr(store, "read_day_index", counting)
    rng = random.Random(5)
    times = [T0 + timedelta(seconds=rng.uniform(-3600, 7 * 86400)) for _ in range(60)]
    times += [T0 + timedelta(days=d) for d in range(7)]  # midnights: T before the day's first snapshot
    for at in times:
        reads.clear()
        assert base_snapshot(m, at) == _linear(snaps, to_us(at)), at
        assert len(reads) <= 2
    assert base_snapshot(m, None) == snaps[-1]


def test_the_manifest_does_not_grow_with_the_snapshots(tmp_path: Path) -> None:
    few, many = tmp_path / "few", tmp_path / "many"
    _write(few, days=3, per_day=100, every=100)
    _write(many, days=3, per_day=100, every=5)
    assert len(Manifest.load(many).snapshot_index().all()) == 20 * len(Manifest.load(few).snapshot_index().all())
    # the same files and days: only the day indexes differ in size
    assert abs((many / MANIFEST).stat().st_size - (few / MANIFEST).stat().st_size) < 200


def _as_version_1(root: Path) -> None:
    """Rewrite an archive as the code before wrote it: every snapshot in the manifest, files in _snapshots/."""
    m = Manifest.load(root)
    snaps = m.snapshot_index().all()
    legacy = []
    for s in snaps:
        src = root / s.file
        dst = root / store.SNAPSHOT_DIR / src.name
        shutil.move(src, dst)
        legacy.append({"seq": s.seq, "as_of": s.as_of, "file": str(dst.relative_to(root))})
    for d in (root / store.SNAPSHOT_DIR).glob("day=*"):
        shutil.rmtree(d)
    doc = json.loads((root / MANIFEST).read_text())
    doc.pop("snapshot_days")
    doc.update(version=1, snapshots=legacy)
    (root / MANIFEST).write_text(json.dumps(doc))


def _answers(root: Path, times: list[datetime]) -> list[Any]:
    m = Manifest.load(root)
    return [(base_snapshot(m, at), to_json(state_at(m, PACK, at))) for at in times]


def test_a_version_1_archive_is_read_as_it_is_and_migrated_by_the_next_writer(tmp_path: Path) -> None:
    root = tmp_path / "a"
    _write(root, days=3, per_day=90, every=20)
    times = [T0 + timedelta(hours=h) for h in (-1, 3, 20, 30, 47, 60, 80)]
    before = [to_json(state_at(Manifest.load(root), PACK, at)) for at in times]
    _as_version_1(root)
    m1 = Manifest.load(root)
    assert m1.legacy_snapshots is not None and len(m1.legacy_snapshots) == 3 * 90 // 20
    v1 = _answers(root, times)
    assert [s for _, s in v1] == before  # read as it is

    w = ArchiveWriter(root, PACK, epoch="e", snapshot_every=20, auto_compact=False)  # the next writer migrates
    doc = json.loads((root / MANIFEST).read_text())
    assert doc["version"] == 2 and "snapshots" not in doc and len(doc["snapshot_days"]) == 3
    assert _answers(root, times) == v1  # same snapshots (files stay where they were), same twins
    assert all((root / s.file).exists() for s in Manifest.load(root).snapshot_index().all())
    del w
    _write(root, days=1, per_day=90, every=20, start=3)  # and it goes on writing day indexes
    m = Manifest.load(root)
    assert len(m.snapshot_days) == 4 and len(m.snapshot_index().all()) == m.next_seq // 20  # every 20th event


def test_an_unknown_manifest_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    root = tmp_path / "a"
    _write(root, days=1, per_day=10, every=5)
    doc = json.loads((root / MANIFEST).read_text())
    doc["version"] = 7
    (root / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="version 7.*newer plietsch"):
        Manifest.load(root)


def test_snapshots_a_crash_left_before_the_manifest_are_not_used_and_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "a"
    _write(root, days=2, per_day=60, every=20)
    committed = Manifest.load(root)
    good = committed.snapshot_index().all()
    # a crash after a flush wrote its snapshots and day index but before the manifest: simulate with a later writer
    # whose manifest is then put back
    saved = (root / MANIFEST).read_bytes()
    _write(root, days=1, per_day=60, every=20, start=1)  # day 1 again in time: its day index gains entries
    (root / MANIFEST).write_bytes(saved)
    m = Manifest.load(root)
    assert m.snapshot_index().all() == good  # entries at or above next_seq are ignored
    late = T0 + timedelta(days=5)
    assert base_snapshot(m, late) == good[-1]
    ArchiveWriter(root, PACK, epoch="e", auto_compact=False)  # a writer opening the archive cleans up
    day = root / store.SNAPSHOT_DIR / f"day={m.snapshot_days[-1]}"
    assert sorted(p.name for p in day.glob("snap-*")) == sorted(Path(s.file).name for s in good
                                                                if s.file.startswith(str(day.relative_to(root))))
    assert [s["seq"] for s in json.loads((day / store.SNAPSHOT_INDEX).read_text())] == \
        [s.seq for s in good if store.snapshot_day(s.as_of) == m.snapshot_days[-1]]


def test_a_read_goes_on_when_a_merge_removes_its_files(tmp_path: Path) -> None:
    """The sink merges files while history or time travel reads them: the reader's manifest names files that are gone,
    and the read continues from the last event it gave, on the new files, with nothing lost or repeated."""
    from streams.history.timetravel import events_after

    w = _write(tmp_path, days=3, per_day=400, every=10_000)
    w.flush()
    stale = Manifest.load(tmp_path)
    expected = [(a.seq, a.event.event_id) for a in events_after(stale, -1)]
    assert len(expected) == 1200 and len(stale.files) >= 3
    reading = events_after(stale, -1)
    first = [next(reading) for _ in range(5)]  # a read under way on the stale manifest (its query has run)
    assert store.compact(Manifest.load(tmp_path), fanin=2, seal_after=timedelta(0)) > 0
    assert not all((tmp_path / f.path).exists() for f in stale.files.values())  # files the reader knows are gone
    got = [(a.seq, a.event.event_id) for a in [*first, *reading]]
    assert got == expected
    assert [(a.seq, a.event.event_id) for a in events_after(stale, -1)] == expected  # a read that starts after it


def test_snapshots_of_another_twin_version_are_rebuilt_by_the_next_writer(tmp_path: Path) -> None:
    """After an upgrade that changes the snapshot format (or a new aggregate horizon) every old snapshot is stale and
    time travel would fold from the archive's start at every T. The next writer folds the archive once and writes each
    snapshot again, at the same positions; time travel then starts from them and gives the same twins."""
    import gzip

    from streams.history.timetravel import full_fold, load_snapshot
    from twin.state import DEFAULT_HORIZON

    root = tmp_path / "a"
    _write(root, days=3, per_day=90, every=20)
    m = Manifest.load(root)
    positions = [s.seq for s in m.snapshot_index().all()]
    for s in m.snapshot_index().all():  # as an older version wrote them
        doc = json.loads(gzip.decompress((root / s.file).read_bytes()))
        (root / s.file).write_bytes(gzip.compress(json.dumps({**doc, "version": 1}).encode()))
    assert all(load_snapshot(m, PACK, s, DEFAULT_HORIZON) is None for s in m.snapshot_index().all())
    times = [T0 + timedelta(hours=h) for h in (3, 20, 30, 47, 60, 71)]
    want = [to_json(full_fold(m, PACK, at)) for at in times]
    _as_version_1(root)  # and in the version-1 layout (files above the day folders), as the oldest archives are

    w = ArchiveWriter(root, PACK, epoch="e", snapshot_every=20, auto_compact=False)
    m = Manifest.load(root)
    snaps = m.snapshot_index().all()
    assert [s.seq for s in snaps] == positions
    assert all(load_snapshot(m, PACK, s, DEFAULT_HORIZON) is not None for s in snaps)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("snap-*")) == sorted(s.file for s in snaps)  # old ones gone
    assert [to_json(state_at(m, PACK, at)) for at in times] == want
    assert all(base_snapshot(m, at) is not None for at in times[1:])  # from a snapshot, not from the start
    assert w.folding is not None and to_json(w.folding.freeze()) == to_json(full_fold(m, PACK, None))  # and folds on


def test_a_rewritten_snapshot_is_read_again(tmp_path: Path) -> None:
    """Parsed snapshots are kept for the next call (the slider's positions share them), but a file rewritten under the
    same name (``rebuild_snapshots``) is read again, and NaN written by json.dumps still reads."""
    import gzip
    import os

    snap = store.write_snapshot(tmp_path, 7, T0, {"version": 1, "n": 1})
    assert store.read_snapshot(tmp_path, snap) == {"version": 1, "n": 1}
    assert store.read_snapshot(tmp_path, snap) is store.read_snapshot(tmp_path, snap)  # kept parsed
    path = tmp_path / snap.file
    before = path.stat().st_mtime_ns
    path.write_bytes(gzip.compress(json.dumps({"version": 1, "n": 2, "x": float("nan")}).encode()))
    os.utime(path, ns=(before + 1_000_000, before + 1_000_000))  # a new stamp even on a coarse clock
    doc = store.read_snapshot(tmp_path, snap)
    assert doc["n"] == 2 and doc["x"] != doc["x"]


def _edited_pack() -> Any:
    """The bundled pack as someone might rebuild it: a traffic counter moved to another road, a coast segment's crest
    raised by 40 cm."""
    import dataclasses

    traffic = next(s for s in SENSORS if s.sensor_kind == "traffic_count" and s.road)
    other_road = next(r for r in sorted(PACK.roads) if r != str(traffic.road))
    seg = next(c for c in sorted(PACK.coast.values(), key=lambda c: c.id) if c.gauge)
    sensors = {**PACK.sensors, str(traffic.id): traffic.model_copy(update={"road": other_road})}
    coast = {**PACK.coast, str(seg.id): seg.model_copy(update={"crest_m": seg.crest_m + 0.4})}
    by_gauge: dict[str, list[Any]] = {}
    for c in coast.values():
        if c.gauge:
            by_gauge.setdefault(str(c.gauge), []).append(c)
    return dataclasses.replace(PACK, sensors=sensors, coast=coast, coast_by_gauge=by_gauge, _fingerprint=None)


def test_snapshots_folded_with_another_pack_are_not_continued(tmp_path: Path) -> None:
    """A snapshot holds the twin as one region pack's sensors and coast segments made it (aggregate groups, crests).
    After the pack is edited or rebuilt (`region synth`, issue 14) continuing from it would mix two packs: such
    snapshots count as stale (time travel folds from the start), and the next writer rebuilds them with the new pack."""
    from streams.history.timetravel import full_fold, load_snapshot
    from twin.state import DEFAULT_HORIZON

    root = tmp_path / "a"
    _write(root, days=3, per_day=90, every=20)
    m = Manifest.load(root)
    edited = _edited_pack()
    assert edited.fold_fingerprint() != PACK.fold_fingerprint()
    assert all(load_snapshot(m, PACK, s, DEFAULT_HORIZON) is not None for s in m.snapshot_index().all())
    assert all(load_snapshot(m, edited, s, DEFAULT_HORIZON) is None for s in m.snapshot_index().all())
    times = [T0 + timedelta(hours=h) for h in (3, 20, 30, 47, 60, 71)]
    want = [to_json(full_fold(m, edited, at)) for at in times]
    assert want != [to_json(full_fold(m, PACK, at)) for at in times]  # the edit changes the twin
    assert [to_json(state_at(m, edited, at)) for at in times] == want  # from the start, not from PACK's snapshots

    ArchiveWriter(root, edited, epoch="e", snapshot_every=20, auto_compact=False)
    m = Manifest.load(root)
    assert all(load_snapshot(m, edited, s, DEFAULT_HORIZON) is not None for s in m.snapshot_index().all())
    assert [to_json(state_at(m, edited, at)) for at in times] == want
    assert all(load_snapshot(m, PACK, s, DEFAULT_HORIZON) is None for s in m.snapshot_index().all())
