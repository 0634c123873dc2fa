"""Benchmark: the API under load on loopback, and the time from a reading produced to its delta at an SSE client.

Run: ``.venv/bin/python -m bench.api``. Starts the embedded broker, a Faust worker and one API process, fills the twin
with the simulator's readings, then
1. drives GET /health (baseline: the framework alone), GET /entities/{id} and GET /entities?bbox=... with concurrent
   clients for a fixed time, and reports requests/s with p50/p99 latency;
2. produces readings at a steady 1,000 events/s for a fixed time while an SSE client subscribes to /stream, and reports
   p50/p99 of (delta received - reading produced).
Everything runs on one 2-core machine: the load generator competes with the API, the worker and the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from bench.auth import ENV, HEADERS
from infra.broker import EmbeddedBroker, free_port
from schemas.codec import SingleObjectCodec
from streams.catalogue import SENSOR_TOPICS, ensure_topics
from streams.publisher import EventPublisher
from streams.simulator import ReadingFactory
from twin.region import bundled_pack

ROOT = Path(__file__).resolve().parent.parent


async def load(url: str, paths: list[str], seconds: float, concurrency: int) -> tuple[float, float, float, int]:
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, timeout=10, headers=HEADERS) as c:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = await c.get(random.choice(paths))
                lat.append(time.perf_counter() - t)
                errors += r.status_code != 200

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    took = time.perf_counter() - start
    a = np.array(lat) * 1000
    return len(lat) / took, float(np.percentile(a, 50)), float(np.percentile(a, 99)), errors


def produce_steady(bootstrap: str, rate: float, seconds: float, stop: threading.Event) -> int:
    pack = bundled_pack()
    sensors = sorted(pack.sensors.values(), key=lambda s: s.id)
    factory = ReadingFactory(pack, seed=5)
    pub = EventPublisher(bootstrap, SingleObjectCodec(), linger_ms=5, max_datums=500)
    t0 = time.perf_counter()
    base = datetime.now(UTC) + timedelta(days=30)
    n = 0
    while not stop.is_set() and time.perf_counter() - t0 < seconds:
        due = int((time.perf_counter() - t0) * rate)
        while n < due:
            s = sensors[n % len(sensors)]
            r = factory.reading(s, base + timedelta(milliseconds=n))
            r = r.model_copy(update={"event_id": f"lat-{time.time_ns()}"})
            pub.add(SENSOR_TOPICS[s.sensor_kind].name, s.id, r)
            n += 1
        pub.tick()
        time.sleep(0.002)
    pub.flush()
    return n


def sse_latencies(url: str, seconds: float, ready: threading.Event, out: list[float], cut: list[int] | None = None) -> None:
    """An SSE client that times every delta of a reading whose event id carries its send time (``lat-<ns>``) for
    *seconds* after its snapshot; a stream that ends before counts in *cut*."""
    with httpx.Client(base_url=url, timeout=None, headers=HEADERS) as c, c.stream("GET", "/stream", params={"type": "sensor"}) as r:
        end = None
        data = None
        try:
            for line in r.iter_lines():
                if line.startswith("event: snapshot_end"):
                    ready.set()
                    end = time.monotonic() + seconds
                elif line.startswith("data: "):
                    data = line[6:]
                elif not line and end is not None:  # a frame's end (a delta's or a keep-alive's)
                    if data:
                        d = json.loads(data)
                        eid = d.get("data", {}).get("cause_event_id", "")
                        if eid.startswith("lat-"):
                            out.append((time.time_ns() - int(eid[4:])) / 1e6)
                        data = None
                    if time.monotonic() > end:  # also on a keep-alive: with no deltas the client ended only at join
                        return
        except httpx.TransportError:  # the server went away (a benchmark ends it while clients still read)
            pass
        if cut is not None:
            cut.append(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rate", type=float, default=1000.0)
    args = ap.parse_args()
    pack = bundled_pack()
    data = Path(tempfile.mkdtemp())
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap_servers
        ensure_topics(bs)
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bs, PLIETSCH_DATA_DIR=str(data), PLIETSCH_WEB_PORT=str(free_port()), **ENV)
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = free_port()
        api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--port", str(port),
                                "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            stop = threading.Event()
            produce_steady(bs, 2000, 3, stop)  # fill the twin
            for _ in range(120):
                try:
                    h = httpx.get(f"{url}/health", timeout=2, headers=HEADERS).json()
                    if h["status"] == "ok" and h["read_model"]["entities"] >= len(pack.sensors):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.5)
            print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; one API process "
                  f"(uvicorn), {args.concurrency} concurrent clients, {args.seconds:.0f} s each")
            ids = list(pack.sensors) + list(pack.buildings)[:50]
            boxes = [f"{10.14 + 0.002 * i:.3f},54.310,{10.15 + 0.002 * i:.3f},54.320" for i in range(5)]
            cases = {"GET /health (baseline)": ["/health"],
                     "GET /entities/{id}": [f"/entities/{i}" for i in ids],
                     "GET /entities?bbox (buildings, 100 a page)": [f"/entities?type=building&limit=100&bbox={b}" for b in boxes]}
            for name, paths in cases.items():
                rps, p50, p99, errors = asyncio.run(load(url, paths, args.seconds, args.concurrency))
                print(f"{name:45s} {rps:8.0f} req/s  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  errors {errors}")
            ready = threading.Event()
            lat: list[float] = []
            th = threading.Thread(target=sse_latencies, args=(url, args.seconds, ready, lat))
            th.start()
            ready.wait(30)
            n = produce_steady(bs, args.rate, args.seconds, stop)
            th.join(args.seconds + 30)
            a = np.array(lat)
            print(f"reading produced -> delta at an SSE client, {args.rate:.0f} ev/s for {args.seconds:.0f} s ({n} readings, "
                  f"{len(a)} deltas timed): p50 {np.percentile(a, 50):.0f} ms, p99 {np.percentile(a, 99):.0f} ms")
        finally:
            for p in (api, worker):
                p.terminate()
                p.wait(20)


if __name__ == "__main__":
    main()
