"""Benchmark: the pure fold in-process, against a plain dict update as the baseline, in the same run.

Run: ``.venv/bin/python -m bench.apply --events 200000``.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime, timedelta

from streams.app import fold_readings
from streams.simulator import ReadingFactory
from twin.region import bundled_pack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    n = ap.parse_args().events
    pack = bundled_pack()
    sensors = sorted(pack.sensors.values(), key=lambda s: s.id)
    f = ReadingFactory(pack, seed=1)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    events = [f.reading(sensors[i % len(sensors)], t0 + timedelta(seconds=i)) for i in range(n)]
    start = time.perf_counter()
    latest: dict = {}
    for e in events:
        latest[e.entity_id] = e
    base = n / (time.perf_counter() - start)
    start = time.perf_counter()
    fold_readings({}, events)
    folded = n / (time.perf_counter() - start)
    print(f"{platform.machine()} Python {platform.python_version()}: {n} readings over {len(sensors)} sensors")
    print(f"baseline dict[entity] = event: {base:,.0f} ev/s")
    print(f"twin.sensors.apply fold:       {folded:,.0f} ev/s ({folded / base:.2f} of baseline)")


if __name__ == "__main__":
    main()
