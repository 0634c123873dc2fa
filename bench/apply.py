"""Benchmark: the pure fold in-process, against a plain dict update as the baseline, in the same run.

Run: ``.venv/bin/python -m bench.apply --events 200000``.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime

from streams.app import fold_readings
from streams.simulator import readings
from twin.region import bundled_pack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    n = ap.parse_args().events
    pack = bundled_pack()
    events = list(readings(pack, n, seed=1, start=datetime(2026, 11, 1, tzinfo=UTC)))
    start = time.perf_counter()
    latest: dict = {}
    for e in events:
        latest[e.entity_id] = e
    base = n / (time.perf_counter() - start)
    start = time.perf_counter()
    fold_readings({}, events)
    folded = n / (time.perf_counter() - start)
    print(f"{platform.machine()} Python {platform.python_version()}: {n} readings over {len(pack.sensors)} sensors")
    print(f"baseline dict[entity] = event: {base:,.0f} ev/s")
    print(f"twin.sensors.apply fold:       {folded:,.0f} ev/s ({folded / base:.2f} of baseline)")


if __name__ == "__main__":
    main()
