"""Benchmark: the public's feedback (issue 12), sequentially as people send it.

Run: ``.venv/bin/python -m bench.feedback --n 300``. Starts the embedded broker and one API process (uvicorn, the
bundled Kiel pack, a publication delay of 0), then
1. baseline: GET /public/summary (the framework and the public rate limit, no Kafka write), n times;
2. POST /feedback with a text that holds a phone number and a name: scrubbed, produced and flushed to Kafka, and
   answered once the API's own read_committed consumer has folded it (read-your-writes), n times;
3. GET /feedback/receipt/{code} for each of them;
4. a restart of the API: the time until /health is ok and the feedback store answers a receipt (reads the topic back);
and the scrubber alone (texts per second, in this process). One 2-core machine: client, API and broker share it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from api.feedback import scrub
from infra.broker import EmbeddedBroker, free_port
from streams.catalogue import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
TEXT = "Ich bin Jens Petersen, ein Zebrastreifen am Vinetaplatz wäre gut! Ruf an: 0431 1234567 oder jens@example.org"


def _start(bootstrap: str, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_DATA_DIR=str(data), PLIETSCH_FEEDBACK_DELAY_S="0",
               PLIETSCH_FEEDBACK_PER_DEVICE_HOUR="100000", PLIETSCH_PUBLIC_RATE="10000", PLIETSCH_PUBLIC_BURST="10000")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def _ready(url: str, code: str | None, timeout: float = 120) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if httpx.get(f"{url}/health", timeout=2).json().get("status") == "ok" and (
                    code is None or httpx.get(f"{url}/feedback/receipt/{code}", timeout=5).status_code == 200):
                return time.monotonic() - t0
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the API at {url} was not ready within {timeout} s")


def _ms(xs: list[float]) -> str:
    a = np.array(xs) * 1000
    return f"p50 {np.percentile(a, 50):.1f} ms, p99 {np.percentile(a, 99):.1f} ms ({len(xs) / (a.sum() / 1000):.0f}/s)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    for _ in range(2000):
        scrub(TEXT)
    print(f"scrub alone: {2000 / (time.perf_counter() - t0):.0f} texts/s")
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        ensure_topics(broker.bootstrap_servers)
        proc, url = _start(broker.bootstrap_servers, Path(tmp))
        try:
            _ready(url, None)
            with httpx.Client(base_url=url, timeout=30) as c:
                base, post, get, codes = [], [], [], []
                for _ in range(args.n):
                    t = time.perf_counter()
                    c.get("/public/summary").raise_for_status()
                    base.append(time.perf_counter() - t)
                for i in range(args.n):
                    t = time.perf_counter()
                    r = c.post("/feedback", json={"kind": "idea", "category": "traffic", "text": f"{TEXT} {i}",
                                                  "lon": 10.148, "lat": 54.3148})
                    post.append(time.perf_counter() - t)
                    r.raise_for_status()
                    codes.append(r.json()["code"])
                for code in codes:
                    t = time.perf_counter()
                    c.get(f"/feedback/receipt/{code}").raise_for_status()
                    get.append(time.perf_counter() - t)
            print(f"baseline GET /public/summary: {_ms(base)}")
            print(f"POST /feedback (scrub, produce+flush, folded back): {_ms(post)}")
            print(f"GET /feedback/receipt: {_ms(get)}")
        finally:
            proc.terminate()
            proc.wait(30)
        proc, url = _start(broker.bootstrap_servers, Path(tmp))
        try:
            print(f"restart with {args.n} feedback on the topic: ready and answering receipts after {_ready(url, codes[-1]):.2f} s")
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
