"""In-process, no broker: bench/pipeline.py's data shape (readings of 230 sensors in 2,000-datum batch records) through
the worker's own units (the sensor unit with sensor state, coast, aggregates; the parking-full processor) with a
memory transaction, beside the baseline of the same run: fastavro decode of every datum into a dict, latest per sensor.

Command: ``.venv/bin/python -m bench.hotpath [--events N] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, SingleObjectCodec, frame_batch, iter_batch
from streams.agents import ProcessorUnit, SensorUnit
from streams.catalogue import SENSOR_TOPICS
from streams.examples.parking_full import ParkingFull
from streams.publisher import partition_for
from streams.serde import encode_event
from streams.simulator import ReadingFactory
from streams.tables import Encoded
from tests.streams.test_agent_logic import MemoryTx, Msg
from twin.region import load_pack
from twin.synth import build_kiel_pack

ROOT = Path(__file__).resolve().parent.parent
CODEC = SingleObjectCodec()


class CountingTx(MemoryTx):
    """MemoryTx that keeps table values as they are and counts outputs instead of keeping them."""

    def __init__(self, tables: tuple[str, ...]) -> None:
        super().__init__(tables)
        self.n_out = 0

    def stored(self, v: Any) -> Any:
        return v.value if isinstance(v, Encoded) else v  # no JSON round trip: the worker's tables keep the dict too

    def keep(self, outputs: list[Any]) -> None:
        self.n_out += len(outputs)


def records(n: int) -> tuple[Any, list[Msg]]:
    pack = load_pack(build_kiel_pack(Path(tempfile.mkdtemp()) / "kiel", ROOT / "twin/regions/kiel/shoreline_gshhg.txt",
                                     sensors_per_kind=25))
    sensors = sorted(pack.sensors.values(), key=lambda s: s.id)
    factory = ReadingFactory(pack, seed=1)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    pending: dict[tuple[str, int], list[bytes]] = {}
    offsets: dict[tuple[str, int], int] = {}
    msgs: list[Msg] = []

    def flush(slot: tuple[str, int]) -> None:
        offsets[slot] = offsets.get(slot, -1) + 1
        msgs.append(Msg(slot[0], slot[1], offsets[slot], frame_batch(pending.pop(slot)), None,
                        [(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE)]))

    for i in range(n):
        s = sensors[i % len(sensors)]
        topic = SENSOR_TOPICS[s.sensor_kind].name
        slot = (topic, partition_for(s.id.encode(), 4))
        pending.setdefault(slot, []).append(encode_event(CODEC, factory.reading(s, t0 + timedelta(seconds=i))))
        if len(pending[slot]) >= 2000:
            flush(slot)
    for slot in list(pending):
        flush(slot)
    return pack, msgs


def units(pack: Any, msgs: list[Msg]) -> tuple[float, int]:
    unit, tx = SensorUnit(CODEC, pack, "e1", 48.0), CountingTx(SensorUnit.tables)
    proc = ProcessorUnit(ParkingFull(), CODEC, pack, "e1", {t.name for t in SENSOR_TOPICS.values()})
    ptx = CountingTx(proc.tables)
    by: dict[tuple[str, int], list[Any]] = {}
    for m in msgs:
        by.setdefault((m.topic, m.partition), []).append(m)
    start = time.perf_counter()
    for (topic, p), ms in by.items():
        for i in range(0, len(ms), 64):
            unit.process(tx, p, ms[i:i + 64])
            if topic == "sensor.parking":
                proc.process(ptx, p, ms[i:i + 64])
    return time.perf_counter() - start, tx.n_out + ptx.n_out


def decode_only(msgs: list[Msg]) -> float:
    start = time.perf_counter()
    latest = {}
    for m in msgs:
        for d in iter_batch(m.value or b""):
            _, rec = CODEC.decode(d)
            latest[rec["entity_id"]] = rec
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    pack, msgs = records(args.events)
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(units, pack, msgs)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    base = decode_only(msgs)
    took, outputs = units(pack, msgs)
    print(f"{len(msgs)} batch records, {args.events} readings; baseline fastavro decode + dict: {args.events / base:,.0f}/s; "
          f"sensor unit + parking processor: {args.events / took:,.0f}/s ({outputs} outputs); {base / took:.2f} of the "
          "baseline")


if __name__ == "__main__":
    main()
