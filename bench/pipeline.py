"""Benchmark: readings into twin state, in one run on the same broker.

1. ceiling: a raw confluent-kafka consumer decoding every datum into a dict (latest per sensor);
2. the Faust pipeline as built (batch records: one Kafka record carries many readings);
3. the Faust pipeline fed one record per reading (the naive layout), for comparison.

Run: ``.venv/bin/python -m bench.pipeline --events 200000``. Prints events per second and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from infra.broker import EmbeddedBroker, free_port
from schemas.codec import SingleObjectCodec, is_batch, iter_batch
from streams.catalogue import SENSOR_TOPICS, ensure_topics
from streams.publisher import EventPublisher
from streams.simulator import ReadingFactory
from twin.region import load_pack
from twin.synth import build_kiel_pack

ROOT = Path(__file__).resolve().parent.parent


def produce(bootstrap: str, pack_dir: Path, n: int, batched: bool) -> float:
    pack = load_pack(pack_dir)
    sensors = sorted(pack.sensors.values(), key=lambda s: s.id)
    factory = ReadingFactory(pack, seed=1)
    pub = EventPublisher(bootstrap, SingleObjectCodec(), linger_ms=50, max_datums=2000)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    start = time.perf_counter()
    for i in range(n):
        s = sensors[i % len(sensors)]
        r = factory.reading(s, t0 + timedelta(seconds=i))
        topic = SENSOR_TOPICS[s.sensor_kind].name
        if batched:
            pub.add(topic, s.id, r)
        else:
            pub.send(topic, s.id, r)
        if i % 5000 == 0:
            pub.tick()
    pub.flush()
    return time.perf_counter() - start


def raw_ceiling(bootstrap: str, n: int) -> float:
    codec = SingleObjectCodec()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False,
                  "fetch.max.bytes": 16 * 1024 * 1024})
    tps = [TopicPartition(t.name, p, OFFSET_BEGINNING) for t in SENSOR_TOPICS.values() for p in range(t.partitions)]
    c.assign(tps)
    latest: dict[str, dict] = {}
    seen = 0
    start = None
    while seen < n:
        msgs = c.consume(1000, 1.0)
        if start is None and msgs:
            start = time.perf_counter()
        for m in msgs:
            if m.error():
                continue
            value = m.value() or b""
            datums = iter_batch(value) if is_batch(m.headers()) else (value,)
            for d in datums:
                _, rec = codec.decode(d)
                latest[rec["entity_id"]] = rec
                seen += 1
    elapsed = time.perf_counter() - (start or time.perf_counter())
    c.close()
    return seen / elapsed


def faust_pipeline(bootstrap: str, pack_dir: Path, n: int) -> tuple[float, float]:
    port = free_port()
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_REGION_PACK=str(pack_dir), PLIETSCH_APP_ID=app_id,
               PLIETSCH_WEB_PORT=str(port))
    log = open(Path(tempfile.gettempdir()) / f"{app_id}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    launched = time.perf_counter()
    try:
        stats: dict = {}
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/twin/stats", timeout=2) as resp:
                    stats = json.load(resp)
            except OSError:
                continue
            if stats.get("datums", 0) >= n:
                break
            print(f"  faust: {int(stats.get('datums', 0))}/{n} readings", file=sys.stderr, flush=True)
        else:
            raise TimeoutError(f"Faust worker did not process {n} readings; stats {stats}")
        busy = stats["last_at"] - stats["first_at"]
        return stats["datums"] / busy, time.perf_counter() - launched
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--sensors-per-kind", type=int, default=25)
    ap.add_argument("--skip-naive", action="store_true", help="skip the one-record-per-reading Faust run")
    args = ap.parse_args()
    pack_dir = build_kiel_pack(Path(tempfile.mkdtemp()) / "kiel", ROOT / "twin/regions/kiel/shoreline_gshhg.txt",
                               sensors_per_kind=args.sensors_per_kind)
    n = args.events
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{n} readings, {len(load_pack(pack_dir).sensors)} sensors, 4 partitions per topic")
    results: dict[str, float] = {}
    layouts = [("batch records", True)] + ([] if args.skip_naive else [("one record per reading", False)])
    for label, batched in layouts:
        with EmbeddedBroker() as broker:  # a fresh broker per layout: the same topics, only this layout's data
            ensure_topics(broker.bootstrap_servers)
            t = produce(broker.bootstrap_servers, pack_dir, n, batched=batched)
            raw = raw_ceiling(broker.bootstrap_servers, n)
            faust, wall = faust_pipeline(broker.bootstrap_servers, pack_dir, n)
        suffix = "" if batched else "_single"
        results["raw" + suffix], results["faust" + suffix] = raw, faust
        print(f"{label}: produced {n / t:,.0f} ev/s; raw confluent-kafka consume+decode+dict (ceiling) {raw:,.0f} ev/s; "
              f"Faust pipeline {faust:,.0f} ev/s into twin state (wall {wall:.1f} s incl. group join); "
              f"ratio to ceiling {faust / raw:.2f}")
    if "faust_single" in results:
        print(f"batch records make the Faust pipeline {results['faust'] / results['faust_single']:.1f}x faster")
    print(json.dumps({k: round(v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
