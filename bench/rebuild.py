"""Benchmark: rebuilding the twin from the archive (Parquet files through DuckDB), the full fold from the first event
against the fold from the newest snapshot (what ``plietsch at`` and ``streams.archive.rebuild`` do).

Run: ``.venv/bin/python -m bench.rebuild --events 100000``.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

from bench.archive_gen import generate
from streams.archive import archive_files, rebuild
from streams.history.store import Manifest
from streams.history.timetravel import full_fold
from twin.region import bundled_pack
from twin.state import to_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=100_000)
    n = ap.parse_args().events
    pack = bundled_pack()
    root = Path(tempfile.mkdtemp()) / "archive"
    start = time.perf_counter()
    generate(root, n, pack, progress=False)
    gen_s = time.perf_counter() - start
    files = archive_files(root)
    size = sum(f.stat().st_size for f in files)
    start = time.perf_counter()
    full = full_fold(Manifest.load(root), pack, None)
    full_s = time.perf_counter() - start
    start = time.perf_counter()
    state = rebuild(root, pack)
    rebuild_s = time.perf_counter() - start
    if to_json(full) != to_json(state):
        raise SystemExit("the rebuild from the snapshot differs from the full fold")
    print(f"{platform.machine()} Python {platform.python_version()}: {n} events in {len(files)} files, {size / 1e6:.1f} MB "
          f"(written with snapshots in {gen_s:.1f} s)")
    print(f"baseline, full fold (query, decode, validate, fold every event): {full_s:6.2f} s ({n / full_s:,.0f} ev/s)")
    print(f"rebuild from the newest snapshot + the events after it:        {rebuild_s:6.2f} s; "
          f"{len(state.sensors)} sensors, {len(state.coast)} coast segments, {len(state.aggregates)} partials")


if __name__ == "__main__":
    main()
