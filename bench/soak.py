"""Benchmark: memory of the worker and the API over a long run at accelerated simulated time.

The whole embedded stack (Tansu broker, Faust worker, API) is fed by the simulator at a high rate with simulated time
running many times faster than the wall clock, so that many days of event time pass in minutes: aggregate windows pile
up unless the hot state keeps a horizon. Every ``--every`` seconds the resident memory (RSS) of the worker and of the API
is sampled with psutil, beside the readings the worker has processed; the table and the verdict (RSS at the end within
+-10 % of RSS after the warm-up) are printed.

Run: ``.venv/bin/python -m bench.soak --events 10000000 --rate 20000 --sim-days 30``.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from infra.broker import EmbeddedBroker, free_port
from streams.catalogue import ensure_topics

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
        return sum(q.memory_info().rss for q in procs if q.is_running()) / 1e6
    except psutil.NoSuchProcess:
        return float("nan")


def worker_datums(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/twin/stats", timeout=2) as resp:
            return int(json.load(resp).get("datums", 0))
    except (OSError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000, help="readings the simulator sends")
    ap.add_argument("--rate", type=float, default=20_000, help="readings per wall second")
    ap.add_argument("--sim-days", type=float, default=30.0, help="days of simulated time the run covers")
    ap.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=0.1, help="share of the run after which RSS is the reference")
    args = ap.parse_args()
    wall_s = args.events / args.rate
    time_scale = args.sim_days * 86400 / wall_s
    data_dir = Path(tempfile.mkdtemp(prefix="plietsch-soak-"))
    logs = data_dir / "logs"
    logs.mkdir()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.events:,} readings at {args.rate:,.0f}/s, simulated time x{time_scale:,.0f} ({args.sim_days:g} days); "
          f"data in {data_dir}", flush=True)
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        web_port, api_port = free_port(), free_port()
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, PLIETSCH_DATA_DIR=str(data_dir),
                   PLIETSCH_WEB_PORT=str(web_port), PLIETSCH_APP_ID=f"soak-{web_port}")
        exe = [sys.executable, "-m", "streams.cli"]

        def spawn(name: str, args_: list[str]) -> subprocess.Popen[bytes]:
            return subprocess.Popen(args_, cwd=ROOT, env=env, stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)

        start = (datetime.now(UTC) - timedelta(days=args.sim_days)).isoformat()
        procs = {
            "worker": spawn("worker", [*exe, "worker"]),
            "api": spawn("api", [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--port", str(api_port),
                                 "--log-level", "warning"]),
        }
        time.sleep(5)
        procs["simulator"] = spawn("simulator", [*exe, "simulate", "--rate", str(args.rate), "--count", str(args.events),
                                                 "--time-scale", f"{time_scale:.3f}", "--start", start])
        rows: list[tuple[float, int | None, float, float]] = []
        t0 = time.monotonic()
        try:
            while True:
                time.sleep(args.every)
                done = worker_datums(web_port)
                row = (time.monotonic() - t0, done, rss_mb(procs["worker"].pid), rss_mb(procs["api"].pid))
                rows.append(row)
                print(f"  {row[0]:7.0f} s  {row[1] or 0:>12,} readings  worker {row[2]:7.1f} MB  api {row[3]:7.1f} MB", flush=True)
                if procs["simulator"].poll() is not None and (done or 0) >= args.events:
                    break
                dead = [n for n in ("worker", "api") if procs[n].poll() is not None]
                if dead:
                    raise SystemExit(f"{', '.join(dead)} died; logs in {logs}")
                if time.monotonic() - t0 > 4 * wall_s + 600:
                    raise SystemExit(f"run did not finish in time; logs in {logs}")
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
            for p in procs.values():
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    ref = next((r for r in rows if (r[1] or 0) >= args.warmup * args.events), rows[0])
    end = rows[-1]
    print("\n| elapsed s | readings processed | worker RSS MB | API RSS MB |\n|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]:.0f} | {r[1] or 0:,} | {r[2]:.0f} | {r[3]:.0f} |")
    for name, i in (("worker", 2), ("API", 3)):
        change = (end[i] - ref[i]) / ref[i] * 100  # type: ignore[operator]
        verdict = "flat" if abs(change) <= 10 else "NOT flat"
        print(f"{name}: {ref[i]:.0f} MB after warm-up ({ref[1] or 0:,} readings) -> {end[i]:.0f} MB at the end: "
              f"{change:+.1f} % ({verdict}, bound +-10 %)")


if __name__ == "__main__":
    main()
