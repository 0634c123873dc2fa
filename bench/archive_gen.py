"""Write a synthetic archive of N readings straight to files, through the archive's own writer (``ArchiveWriter``):
the bundled Kiel pack's sensors round-robin, 200 readings per second of simulated time (``make run``'s default
stream), each reading its own record on the partition its sensor id hashes to, with snapshots and compaction as the
sink makes them.

Run: ``.venv/bin/python -m bench.archive_gen --readings 10000000 --out /tmp/archive-10m`` (it prints
its progress).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from streams.catalogue import SENSOR_TOPICS
from streams.history.writer import ArchiveWriter
from streams.publisher import partition_for
from streams.simulator import readings
from twin.region import RegionPack, bundled_pack

START = datetime(2026, 11, 1, tzinfo=UTC)
RATE = 200.0  # readings per second of simulated time


def generate(root: Path, n: int, pack: RegionPack | None = None, start: datetime = START, seed: int = 1,
             flush_every: int = 250_000, epoch: str = "gen", progress: bool = True,
             copies: tuple[int, ...] = ()) -> ArchiveWriter:
    """Write *n* readings into a new archive at *root*; at each count in *copies*, also copy the archive as it stands
    then to ``<root>-<count>`` (one run gives the smaller sizes of a benchmark too)."""
    pack = pack or bundled_pack()
    writer = ArchiveWriter(root, pack, epoch=epoch)
    # an archive this generator began (stopped, or smaller): go on from its end with the same stream, so the result
    # equals one straight run (the readings before it are generated again and skipped, not archived)
    done = writer.manifest.next_seq
    offsets: dict[tuple[str, int], int] = {(t, p): hi + 1 for (e, t, p), hi in writer.manifest.covered().items() if e == epoch}
    if done and progress:
        print(f"  resuming after {done:,} archived readings", file=sys.stderr, flush=True)
    parts: dict[bytes, int] = {}
    t0 = time.monotonic()
    stream = itertools.islice(readings(pack, n, seed=seed, start=start, spacing_s=1 / RATE), done, None)
    for i, e in enumerate(stream, done + 1):
        topic = SENSOR_TOPICS[type(e).sensor_kind].name
        key = e.entity_id.encode()
        part = parts.get(key)
        if part is None:
            part = parts[key] = partition_for(key, 4)
        off = offsets.get((topic, part), 0)
        offsets[(topic, part)] = off + 1
        writer.add(topic, part, off, e, key=key)
        if i % flush_every == 0 or i in copies:
            writer.flush()
            if i in copies:
                shutil.copytree(root, root.with_name(f"{root.name}-{i}"))
            if progress:
                el = time.monotonic() - t0
                rate = (i - done) / el
                print(f"  {i:>11,} readings, {len(writer.manifest.files)} files, {el:6.1f} s, {rate:,.0f}/s, "
                      f"eta {(n - i) / rate:5.0f} s", file=sys.stderr, flush=True)
    writer.flush()
    return writer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--copies", default="", help="comma-separated counts at which to copy the archive to OUT-<count>")
    ap.add_argument("--resume", action="store_true", help="go on writing an archive this generator began (same stream)")
    a = ap.parse_args()
    if (a.out / "_manifest.json").exists() and not a.resume:
        raise SystemExit(f"{a.out} holds an archive already; choose an empty folder, or --resume one this generator began")
    t = time.monotonic()
    w = generate(a.out, a.readings, copies=tuple(int(c) for c in a.copies.split(",") if c))
    size = sum(p.stat().st_size for p in a.out.rglob("*") if p.is_file())
    print(f"{a.readings:,} readings into {a.out}: {len(w.manifest.files)} files, {len(w.manifest.snapshot_index().all())} snapshots, "
          f"{size / 1e6:.0f} MB, {time.monotonic() - t:.0f} s")


if __name__ == "__main__":
    main()
