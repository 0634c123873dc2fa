"""Benchmark: readings into twin state, in one run on the same broker build (each worker case on a fresh broker of its
own, with the same readings).

1. ceiling: a raw confluent-kafka consumer decoding every datum of the project's batch records into a dict (latest
   per sensor), no validation, no state, no outputs;
2. the peer: Quix Streams 3.28.1 (installed by this benchmark into ``.bench-venv``), a stateful app that keeps the
   latest value per sensor in its state, on the same readings as JSON, one record per reading;
3. the worker as built, all agents (sensor state, coast, aggregates, municipal, the example processor), with
   transactions; one worker, then two workers of the same app id (``--workers 2``);
4. optionally (``--naive``) the worker fed one record per reading;
5. optionally (``--baseline REV``) the worker as of git revision REV (``git archive`` into a temporary directory), on the
   same readings in the same run, before this tree's worker: the before/after pair of a change.

Run: ``.venv/bin/python -m bench.pipeline --events 200000 --repeat 3``. Prints events per second and the ratios of
each run, and with ``--repeat`` the median of every figure and of every ratio (each ratio taken within its run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.broker import EmbeddedBroker, free_port
from schemas.codec import SingleObjectCodec, is_batch, iter_batch
from streams.catalogue import SENSOR_TOPICS, ensure_topics
from streams.publisher import EventPublisher
from streams.simulator import ReadingFactory
from twin.region import load_pack
from twin.synth import build_kiel_pack

ROOT = Path(__file__).resolve().parent.parent


JSON_TOPIC = "bench.json-readings"
QUIX_VERSION = "3.28.1"
BENCH_VENV = ROOT / ".bench-venv"


def produce(bootstrap: str, pack_dir: Path, n: int, batched: bool, json_too: bool = False) -> float:
    pack = load_pack(pack_dir)
    sensors = sorted(pack.sensors.values(), key=lambda s: s.id)
    factory = ReadingFactory(pack, seed=1)
    pub = EventPublisher(bootstrap, SingleObjectCodec(), linger_ms=50, max_datums=2000)
    raw = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4", "enable.idempotence": True,
                    "partitioner": "murmur2_random", "queue.buffering.max.messages": 1_000_000})
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
        if json_too:
            while True:
                try:
                    raw.produce(JSON_TOPIC, key=s.id.encode(), value=r.model_dump_json().encode())
                    break
                except BufferError:
                    raw.poll(0.05)
        if i % 5000 == 0:
            pub.tick()
            raw.poll(0)
    pub.flush()
    raw.flush(60)
    return time.perf_counter() - start


def quix_peer(bootstrap: str, n: int) -> float:
    """Quix Streams in its own virtualenv: latest value per sensor in its state; readings per second."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", f"import quixstreams; assert quixstreams.__version__ == "
                                              f"'{QUIX_VERSION}'"], capture_output=True).returncode:
        print(f"installing quixstreams=={QUIX_VERSION} into {BENCH_VENV} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", f"quixstreams=={QUIX_VERSION}"], check=True)
    state_dir = tempfile.mkdtemp(prefix="quix-state-")
    out = subprocess.run([str(python), str(ROOT / "bench" / "quix_peer.py"), bootstrap, JSON_TOPIC, str(n), state_dir],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise RuntimeError(f"the Quix peer failed: {out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return float(got["readings"]) / float(got["seconds"])


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


def checkout(rev: str) -> Path:
    """The source tree of git revision *rev* in a temporary directory (to run its worker beside this tree's)."""
    where = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def faust_pipeline(bootstrap: str, pack_dir: Path, n: int, workers: int = 1,
                   source: Path = ROOT, broker_pid: int | None = None) -> tuple[float, float, float]:
    """The worker(s) with all agents and the example processor; readings per second from the first batch to the last
    (summed over the workers), the wall time including start and group join, and the workers' CPU time per reading in
    microseconds from their first processed batch to the last (less sensitive to other load on the machine than the
    rate: it counts what the worker spends, not what it waits). With *broker_pid*, also prints how many cores the
    workers and the broker kept busy from the first processed batch to the last."""
    import psutil
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    procs, ports = [], []
    launched = time.perf_counter()
    for w in range(workers):
        port = free_port()
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_REGION_PACK=str(pack_dir), PLIETSCH_APP_ID=app_id,
                   PLIETSCH_WEB_PORT=str(port), PLIETSCH_PROCESSORS="streams.examples.parking_full:ParkingFull")
        log = open(Path(tempfile.gettempdir()) / f"{app_id}-{w}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], cwd=source, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
        ports.append(port)
    try:
        stats: list[dict] = [{} for _ in ports]
        cpu0: dict[int, float] = {}
        handles = [psutil.Process(proc.pid) for proc in procs]
        broker = psutil.Process(broker_pid) if broker_pid is not None else None
        window: list[tuple[float, float, float]] = []  # (time, workers' CPU, broker's CPU) at the first batch and at the end

        def cpu(i: int) -> float:
            t = handles[i].cpu_times()
            return float(t.user + t.system)

        def sample() -> tuple[float, float, float]:
            b = broker.cpu_times() if broker is not None else None
            return time.perf_counter(), sum(cpu(i) for i in range(len(handles))), float(b.user + b.system) if b else 0.0

        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            time.sleep(0.2)
            for i, port in enumerate(ports):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/twin/stats", timeout=2) as resp:
                        stats[i] = json.load(resp)
                except OSError:
                    continue
                if i not in cpu0 and stats[i].get("datums"):
                    cpu0[i] = cpu(i)
                    if not window:
                        window.append(sample())
            done = sum(int(st.get("datums", 0)) for st in stats)
            if done >= n:  # once more, a moment later: the last take's transactions may still be committing
                window.append(sample())
                time.sleep(0.5)
                for i, port in enumerate(ports):
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/twin/stats", timeout=5) as resp:
                        stats[i] = json.load(resp)
                break
            print(f"  worker(s): {done}/{n} readings", file=sys.stderr, flush=True)
        else:
            raise TimeoutError(f"the worker(s) did not process {n} readings; stats {stats}")
        busy = [st for st in stats if st.get("datums")]
        span = max(st["last_at"] for st in busy) - min(st["first_at"] for st in busy)
        if workers > 1:  # where a pair's span goes: each worker's share, start and end against the earliest start
            t0 = min(st["first_at"] for st in busy)
            print("  " + "; ".join(f"worker {i}: {int(st.get('datums', 0))} readings, first batch +{st['first_at'] - t0:.2f} s, "
                                   f"last +{st['last_at'] - t0:.2f} s" for i, st in enumerate(stats) if st.get("datums")),
                  file=sys.stderr, flush=True)
        spent = sum(cpu(i) - c0 for i, c0 in cpu0.items())
        done = sum(st["datums"] for st in busy)
        if broker is not None and len(window) == 2 and window[1][0] > window[0][0]:
            (t0_, w0, b0), (t1, w1, b1) = window
            print(f"  cores busy from the first batch to the last ({t1 - t0_:.1f} s): worker(s) {(w1 - w0) / (t1 - t0_):.2f}, "
                  f"broker {(b1 - b0) / (t1 - t0_):.2f} ({(b1 - b0) / done * 1e6:.1f} us broker CPU per reading)",
                  flush=True)
        return done / span, time.perf_counter() - launched, spent / done * 1e6
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def on_own_broker(pack_dir: Path, n: int, workers: int, source: Path = ROOT,
                  batched: bool = True) -> tuple[float, float, float]:
    """:func:`faust_pipeline` on a fresh broker holding the same *n* readings (the factory is seeded)."""
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        produce(broker.bootstrap_servers, pack_dir, n, batched=batched)
        return faust_pipeline(broker.bootstrap_servers, pack_dir, n, workers, source, broker.pid)


def run_once(args: argparse.Namespace, pack_dir: Path, n: int) -> dict[str, float]:
    """One run of every case; prints each figure as it comes."""
    results: dict[str, float] = {}
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap_servers
        ensure_topics(bs)
        admin = AdminClient({"bootstrap.servers": bs})
        json_cfg = {"retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1"}  # Quix reads both
        admin.create_topics([NewTopic(JSON_TOPIC, 4, 1, config=json_cfg)])[JSON_TOPIC].result()
        t = produce(bs, pack_dir, n, batched=True, json_too=not args.skip_quix)
        print(f"produced {n / t:,.0f} readings/s (batch records{', and JSON' if not args.skip_quix else ''})", flush=True)
        results["raw"] = raw_ceiling(bs, n)
        print(f"ceiling, raw confluent-kafka consume + decode + dict: {results['raw']:,.0f} readings/s", flush=True)
        if not args.skip_quix:
            results["quix"] = quix_peer(bs, n)
            print(f"Quix Streams {QUIX_VERSION}, latest value per sensor in state (JSON): {results['quix']:,.0f} readings/s",
                  flush=True)
    # Every worker case on a broker of its own with the same readings: Tansu's memory storage slows as it fills, so a
    # case that ran after another's outputs (changelogs, updates, aggregates) ran on a slower broker (session 13).
    if args.baseline:
        results["baseline"], wall, results["baseline_cpu_us"] = on_own_broker(pack_dir, n, 1, checkout(args.baseline))
        print(f"the worker as of {args.baseline}: {results['baseline']:,.0f} readings/s (wall {wall:.1f} s, "
              f"{results['baseline_cpu_us']:.1f} us CPU per reading); "
              f"{results['baseline'] / results['raw']:.2f} of the ceiling"
              + (f", {results['baseline'] / results['quix']:.2f}x Quix Streams" if "quix" in results else ""), flush=True)
    results["worker"], wall, results["worker_cpu_us"] = on_own_broker(pack_dir, n, 1)
    print(f"this worker, all agents, transactions: {results['worker']:,.0f} readings/s (wall {wall:.1f} s incl. start "
          f"and group join, {results['worker_cpu_us']:.1f} us CPU per reading); "
          f"{results['worker'] / results['raw']:.2f} of the ceiling"
          + (f", {results['worker'] / results['quix']:.2f}x Quix Streams" if "quix" in results else ""), flush=True)
    if args.workers > 1:
        results[f"workers_{args.workers}"], wall, _ = on_own_broker(pack_dir, n, args.workers)
        print(f"{args.workers} workers: {results[f'workers_{args.workers}']:,.0f} readings/s "
              f"({results[f'workers_{args.workers}'] / results['worker']:.2f}x one worker; wall {wall:.1f} s)", flush=True)
    if args.naive:
        results["worker_single"], _, _ = on_own_broker(pack_dir, n, 1, batched=False)
        print(f"one record per reading: {results['worker_single']:,.0f} readings/s", flush=True)
    return results


def summarise(runs: list[dict[str, float]], workers: int) -> dict[str, float]:
    """Medians over the runs, of each figure and of each ratio taken within its own run (a ratio of medians would
    pair figures of different runs)."""
    ratios = {"worker_per_quix": ("worker", "quix"), "worker_per_ceiling": ("worker", "raw"),
              f"workers_{workers}_per_one": (f"workers_{workers}", "worker")}
    for run in runs:
        for name, (top, bottom) in ratios.items():
            if top in run and bottom in run:
                run[name] = run[top] / run[bottom]
    out: dict[str, float] = {}
    for key in runs[0]:
        values = sorted(run[key] for run in runs)
        out[key] = statistics.median(values)
        shown = (lambda v: f"{v:.2f}") if "_per_" in key or key.endswith("_us") else (lambda v: f"{v:,.0f}")
        print(f"median of {len(runs)} runs, {key}: {shown(out[key])} (runs: {', '.join(shown(v) for v in values)})",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--sensors-per-kind", type=int, default=25)
    ap.add_argument("--workers", type=int, default=2, help="also measure this many workers (1: one worker only)")
    ap.add_argument("--naive", action="store_true", help="also run the worker on one record per reading")
    ap.add_argument("--skip-quix", action="store_true", help="skip the Quix Streams peer")
    ap.add_argument("--repeat", type=int, default=1, help="run every case this many times; print the medians")
    ap.add_argument("--baseline", metavar="REV", help="also run the worker of this git revision (before this tree's)")
    args = ap.parse_args()
    pack_dir = build_kiel_pack(Path(tempfile.mkdtemp()) / "kiel", ROOT / "twin/regions/kiel/shoreline_gshhg.txt",
                               sensors_per_kind=args.sensors_per_kind)
    n = args.events
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {n} readings, {len(load_pack(pack_dir).sensors)} sensors, "
          "4 partitions per topic", flush=True)
    runs = []
    for r in range(args.repeat):
        if args.repeat > 1:
            print(f"run {r + 1} of {args.repeat}", flush=True)
        runs.append(run_once(args, pack_dir, n))
    results = runs[-1] if len(runs) == 1 else summarise(runs, args.workers)
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps({k: round(v, 2) if "_per_" in k else round(v, 1) if k.endswith("_us") else round(v)
                      for k, v in results.items()}))


if __name__ == "__main__":
    main()
