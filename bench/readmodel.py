"""Benchmark: the API's read model in-process (no broker), each figure beside its baseline in the same run.

1. Applying ``twin.updates`` records: ``ReadModel.handle`` (decode, check the topic's type, validate the event, parse
   and check ``state_json``, newest revision wins, delta) against the code before this change (decode, revision,
   ``json.loads``, delta; no checks) as the baseline.
2. ``/aggregates?latest=true`` and ``/public/summary`` after 1, 7 and 30 days of accelerated traffic and air-quality
   windows (the bundled Kiel pack's groups, 4 shards): the read model now (windows beyond the 48 h horizon leave,
   figures combined on change) against the recombination of every partial ever seen on each call (the baseline: the
   code before this change).

Run: ``.venv/bin/python -m bench.readmodel``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from api.readmodel import Delta, ReadModel
from api.routes.coast import public_summary
from schemas.codec import SingleObjectCodec
from streams.catalogue import AGGREGATES, TWIN_UPDATES
from streams.serde import encode_event
from twin.aggregates import Partial, combine
from twin.events import AggregateUpdated, TwinEntityUpdated
from twin.region import bundled_pack

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def per_call(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds of one call."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def updates(codec: SingleObjectCodec, n: int, entities: list[str]) -> list[bytes]:
    state = {"values": {"vehicles": 12, "interval_s": 60}, "observed_at": T0.isoformat(), "unit": "vehicles"}
    return [encode_event(codec, TwinEntityUpdated(
        entity_id=entities[i % len(entities)], region="kiel", occurred_at=T0 + timedelta(seconds=i), source="bench",
        entity_type="sensor", revision=i // len(entities), state_json=json.dumps(state), cause_event_id=str(i)))
        for i in range(n)]


def bench_updates(n: int) -> None:
    codec = SingleObjectCodec()
    pack = bundled_pack()
    records = updates(codec, n, [str(s) for s in pack.sensors])
    start = time.perf_counter()
    old: dict[str, dict[str, Any]] = {}
    ring: deque[Delta] = deque(maxlen=200_000)
    lock = threading.Lock()
    seq = 0
    for value in records:  # the code before this change: decode, newest revision, parse, sequence, delta
        _, rec = codec.decode(value)
        with lock:
            prev = old.get(rec["entity_id"])
            if prev is not None and prev["revision"] >= rec["revision"]:
                continue
            rec = dict(rec)
            rec["state"] = json.loads(rec.pop("state_json"))
            seq += 1
            rec["_seq"] = seq
            old[rec["entity_id"]] = rec
            ring.append(Delta(seq, "entity", rec["entity_id"], rec["entity_type"], rec))
    base = n / (time.perf_counter() - start)
    rm = ReadModel("127.0.0.1:1", codec)
    start = time.perf_counter()
    for i, value in enumerate(records):
        rm.handle(TWIN_UPDATES.name, 0, i, None, value)
    now = n / (time.perf_counter() - start)
    if rm.applied[TWIN_UPDATES.name] != n or rm.broken:
        raise SystemExit(f"applied {rm.applied}, broken {rm.broken}: the benchmark's records should all apply")
    print(f"\ntwin.updates, {n:,} records over {len(pack.sensors)} sensors")
    print(f"| baseline: the code before (decode, revision, parse, delta) | {base:,.0f} rec/s |")
    print(f"| ReadModel.handle (type, event rules, state checks, counts) | {now:,.0f} rec/s ({now / base:.2f} of baseline) |")


def aggregate_records(codec: SingleObjectCodec, days: int) -> list[tuple[str, bytes]]:
    pack = bundled_pack()
    roads = sorted({str(s.road) for s in pack.sensors.values() if s.road})
    hoods = sorted({str(s.neighbourhood) for s in pack.sensors.values() if s.neighbourhood})
    out = []
    rev = 0
    for q in range(days * 24 * 4):
        w = T0 + q * timedelta(minutes=15)
        series = [("traffic_vehicles", r, 900) for r in roads]
        if q % 4 == 0:
            series += [(m, h, 3600) for h in hoods for m in ("air_no2_ugm3", "air_pm10_ugm3", "air_pm25_ugm3")]
        for metric, group, size in series:
            for shard in range(4):
                rev += 1
                p = Partial(metric, group, w, size, shard, total=float(q % 50), count=3, minimum=1.0, maximum=20.0)
                doc = {**p.to_json(), "rev": rev}
                out.append((p.key, encode_event(codec, AggregateUpdated(
                    entity_id=group, region="kiel", occurred_at=w, source="bench", metric=metric,
                    window_start=w.isoformat(), window_s=size, shard=shard, partial_json=json.dumps(doc)))))
    return out


def old_latest(partials: dict[str, Partial]) -> list[dict[str, Any]]:
    """The code before this change: recombine every partial held, then pick the newest window per metric and group."""
    by_key: dict[tuple[str, str, str], list[Partial]] = {}
    for p in partials.values():
        by_key.setdefault((p.metric, p.group, p.window.isoformat() if p.window else ""), []).append(p)
    items = [combine(v) for _, v in sorted(by_key.items())]
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for a in items:
        k = (a["metric"], a["group"])
        if k not in newest or str(a.get("window", "")) > str(newest[k].get("window", "")):
            newest[k] = a
    return list(newest.values())


class Before:
    """The read model as /public/summary saw it before this change: every partial ever seen, recombined per call."""

    def __init__(self, partials: dict[str, Partial], rm: ReadModel) -> None:
        self.partials, self.rm = partials, rm

    def aggregates(self, metric: str | None = None, group: str | None = None, latest: bool = False) -> list[dict[str, Any]]:
        return old_latest(self.partials)

    def get(self, entity_id: str) -> dict[str, Any] | None:
        return self.rm.get(entity_id)

    def active_alerts(self) -> list[dict[str, Any]]:
        return self.rm.active_alerts()


def bench_aggregates(days_list: list[int], repeat: int) -> None:
    codec = SingleObjectCodec()
    pack = bundled_pack()
    print("\n| history | partials seen | held now / before | /aggregates?latest now | before | /public/summary now "
          "| before | apply rate now / before |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for days in days_list:
        records = aggregate_records(codec, days)
        rm = ReadModel("127.0.0.1:1", codec)
        start = time.perf_counter()
        for i, (key, value) in enumerate(records):
            rm.handle(AGGREGATES.name, 0, i, key.encode(), value)
        rate = len(records) / (time.perf_counter() - start)
        if rm.broken:
            raise SystemExit(f"broken records in the benchmark: {rm.broken}")
        old: dict[str, Partial] = {}
        start = time.perf_counter()
        for key, value in records:  # the code before: decode, parse, keep the last one under its key
            _, rec = codec.decode(value)
            old[key] = Partial.from_json(json.loads(rec["partial_json"]))
        old_rate = len(records) / (time.perf_counter() - start)
        now_latest = per_call(lambda: rm.aggregates(latest=True), repeat)  # noqa: B023
        old_l = per_call(lambda: old_latest(old), max(3, repeat // 10))  # noqa: B023
        now_summary = per_call(lambda: public_summary(pack, rm), repeat)  # noqa: B023
        before = Before(old, rm)
        old_s = per_call(lambda: public_summary(pack, before), max(3, repeat // 10))  # type: ignore[arg-type]  # noqa: B023
        if sorted(map(str, rm.aggregates(latest=True))) != sorted(map(str, old_latest(old))) or \
                public_summary(pack, rm) != public_summary(pack, before):  # type: ignore[arg-type]
            raise SystemExit("the read model's newest windows differ from the recombination: not comparable")
        print(f"| {days} d | {len(records):,} | {len(rm.aggs):,} / {len(old):,} | {now_latest * 1e3:.2f} ms "
              f"| {old_l * 1e3:.1f} ms | {now_summary * 1e3:.2f} ms | {old_s * 1e3:.1f} ms "
              f"| {rate:,.0f} / {old_rate:,.0f} rec/s |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--updates", type=int, default=100_000)
    ap.add_argument("--days", type=int, nargs="+", default=[1, 7, 30])
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    print(f"{platform.machine()} Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    bench_updates(args.updates)
    bench_aggregates(args.days, args.repeat)


if __name__ == "__main__":
    main()
