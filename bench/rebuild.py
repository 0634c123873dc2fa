"""Benchmark: rebuilding the twin from the archive (Avro container files), against reading the same files alone.

Run: ``.venv/bin/python -m bench.rebuild --events 100000``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from fastavro import reader

from streams.archive import ArchiveWriter, archive_files, read_events, rebuild
from streams.catalogue import SENSOR_TOPICS
from streams.serde import to_record
from streams.simulator import readings
from twin.region import bundled_pack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=100_000)
    n = ap.parse_args().events
    pack = bundled_pack()
    root = Path(tempfile.mkdtemp()) / "archive"
    w = ArchiveWriter(root)
    for i, e in enumerate(readings(pack, n, seed=1, start=datetime(2026, 11, 1, tzinfo=UTC), spacing_s=3)):
        w.add(SENSOR_TOPICS[type(e).sensor_kind].name, 0, i, type(e).__name__, to_record(e))
        if w.pending >= 10_000:
            w.flush()
    w.flush()
    files = archive_files(root)
    size = sum(f.stat().st_size for f in files)
    start = time.perf_counter()
    count = 0
    for f in files:
        with f.open("rb") as fh:
            count += sum(1 for _ in reader(fh))
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    parsed = sum(1 for _ in read_events(root))
    parse_s = time.perf_counter() - start
    start = time.perf_counter()
    state = rebuild(root, pack)
    rebuild_s = time.perf_counter() - start
    assert count == parsed == state.events_applied == n
    print(f"{platform.machine()} Python {platform.python_version()}: {n} events in {len(files)} files, {size / 1e6:.1f} MB")
    print(f"baseline, fastavro read of the files:          {read_s:6.2f} s ({n / read_s:,.0f} ev/s)")
    print(f"read + validate into events, sorted by time:   {parse_s:6.2f} s ({n / parse_s:,.0f} ev/s)")
    print(f"rebuild (read, validate, sort, fold the twin): {rebuild_s:6.2f} s ({n / rebuild_s:,.0f} ev/s); "
          f"{len(state.sensors)} sensors, {len(state.coast)} coast segments")


if __name__ == "__main__":
    main()
