"""Benchmark: what one take costs the sensor unit at a low rate, on columns against reading by reading.

A take of the bundled pack's readings on one partition (records of a few datums, as the publisher lingers them at the
200 readings/s of ``make run``) goes through ``SensorUnit.process`` (decode, checks, sensor fold, coast, horizon rule,
aggregate fold; an in-memory transaction) with ``min_columnar=0`` (every group and fold on polars columns: the worker
before 6441450) and with the default ``MIN_COLUMNAR`` (small groups and folds reading by reading), in the same process,
alternating, each the median of ``--repeat`` takes.

Run: ``.venv/bin/python -m bench.take_cost``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, SingleObjectCodec, frame_batch
from streams.agents import SensorUnit
from streams.catalogue import SENSOR_TOPICS
from streams.columnar import MIN_COLUMNAR
from streams.serde import encode_event
from streams.simulator import ReadingFactory
from streams.tables import Encoded
from twin.region import bundled_pack

BATCH = [(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE)]


class Msg:
    def __init__(self, topic: str, offset: int, key: bytes, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.key, self.value, self.headers = topic, 0, offset, key, value, BATCH


class Tx:
    """The transaction contract in memory (what ``SensorUnit.process`` needs): commit applies the changes."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[bytes, Any]] = {n: {} for n in SensorUnit.tables}

    def part(self, p: int) -> dict[str, dict[bytes, Any]]:
        return self.tables

    def applied(self, p: int, epoch: str, topic: str, partition: int, table: str | None = None) -> int:
        return -1

    def commit(self, p: int, changes: dict[str, dict[bytes, Any]], outputs: list[Any], markers: dict[str, Any]) -> None:
        for n, kv in changes.items():
            for k, v in kv.items():
                self.tables[n][k] = v.value if isinstance(v, Encoded) else v


def takes(datums: int, per_record: int, count: int) -> list[list[Msg]]:
    pack = bundled_pack()
    codec = SingleObjectCodec()
    sensors = sorted(pack.sensors.values(), key=lambda s: s.id)
    factory = ReadingFactory(pack, seed=5)
    t0 = datetime.now(UTC)
    out, offset, i = [], 0, 0
    for _ in range(count):
        take = []
        for _ in range(max(1, datums // per_record)):
            s = sensors[i % len(sensors)]
            values = [encode_event(codec, factory.reading(s, t0 + timedelta(seconds=i + j))) for j in range(per_record)]
            i += per_record
            take.append(Msg(SENSOR_TOPICS[s.sensor_kind].name, offset, s.id.encode(), frame_batch(values)))
            offset += 1
        out.append(take)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=40)
    args = ap.parse_args()
    pack = bundled_pack()
    codec = SingleObjectCodec()
    print(f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; one partition, takes of the bundled pack's readings")
    print("| datums per take (per record) | on columns (min_columnar=0) | this tree (min_columnar="
          f"{MIN_COLUMNAR}) |\n|---|---:|---:|")
    for datums, per_record in ((14, 1), (50, 1), (50, 4), (200, 4), (2000, 50)):
        batches = takes(datums, per_record, args.repeat)
        times: dict[int, list[float]] = {0: [], MIN_COLUMNAR: []}
        units = {m: (SensorUnit(codec, pack, "bench", 48.0, min_columnar=m), Tx()) for m in times}
        for take in batches:
            for m, (unit, tx) in units.items():  # alternating: the same take, both ways
                t = time.perf_counter()
                unit.process(tx, 0, take)  # type: ignore[arg-type]  # Msg has the fields a Message has
                times[m].append(time.perf_counter() - t)
        cols, rows = (statistics.median(times[m][1:]) * 1000 for m in (0, MIN_COLUMNAR))
        print(f"| {datums} ({per_record}) | {cols:.2f} ms | {rows:.2f} ms |", flush=True)


if __name__ == "__main__":
    main()
