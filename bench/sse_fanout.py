"""Benchmark (issue 15 item 5): many SSE subscribers on one API process, on this machine.

The embedded broker, a worker and one API process; the simulator's readings of the bundled pack at a steady rate
(``--rate``, 200/s as ``make run``); then, for each case, ``--seconds`` of:
- the read model's update rate: the sequence numbers /health reports, per second;
- the delay from a reading produced to its delta at a client (the reading's event id carries its send time), at
  ``--timed`` clients that parse every frame, beside ``subscribers - timed`` clients that read and discard the bytes
  (raw asyncio sockets in a process of their own: their cost on the shared 2 cores stays small, and they do not hold
  the timed clients' GIL);
- clients cut off (their stream ended before the case did);
- in the case with many subscribers, ``--stuck`` of them never read after their request. The kernel takes a few
  megabytes per connection before a write blocks and the API's write timeout (``sse_write_timeout_s``, 10 s) starts,
  more than such a client gets in one case: they show what they cost the others while they are served; their cut-off
  is ``tests/api/test_live_cutoff.py``'s. The API's own counts of cut-off clients are printed.

Per hop (the same readings, at two consumers of ``twin.updates`` beside the API): the worker's write of the update
(its Kafka timestamp), the update readable uncommitted, and readable committed (``read_committed``, what the API's read
model sees); the client's delay then adds the read model and the write to the client.

Cases: 0 subscribers (the rate's baseline), 1 timed subscriber (the delay's baseline), ``--subscribers`` (200). With
``--baseline REV`` the worker and API of git revision REV run the same cases in the same run, before this tree's, each
on a broker of its own (one broker for both favoured the first: Tansu's memory storage slows as it fills);
``--baseline-server '--loop asyncio --http h11'`` runs that baseline on uvicorn's pure-Python loop and HTTP parser.

Run: ``.venv/bin/python -m bench.sse_fanout --subscribers 200 --seconds 20 --baseline a2d0c02``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.api import produce_steady, sse_latencies
from bench.auth import ENV, HEADERS
from bench.pipeline import checkout
from infra.broker import EmbeddedBroker, free_port
from streams.catalogue import ensure_topics
from twin.region import bundled_pack

ROOT = Path(__file__).resolve().parent.parent


def seq(url: str) -> int:
    return int(httpx.get(f"{url}/health", timeout=5, headers=HEADERS).json()["read_model"]["seq"])


async def raw_clients(port: int, n: int, seconds: float, cut: list[int], stuck: int = 0) -> None:
    """*n* SSE clients that read and discard; each that ends before *seconds* counts in *cut*. Of them, *stuck* read
    nothing after sending their request (a small receive window)."""
    request = (f"GET /stream?type=sensor HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {HEADERS['Authorization']}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()

    async def never_reads() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            await asyncio.get_running_loop().sock_sendall(sock, request)
            await asyncio.sleep(seconds)
        finally:
            sock.close()

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), max(0.1, end - time.monotonic()))
                except TimeoutError:
                    continue
                if not chunk:
                    cut.append(1)
                    return
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(n - stuck)), *(never_reads() for _ in range(stuck)))


def raw_process(port: int, n: int, seconds: float, stuck: int, cut_count: Any) -> None:
    """:func:`raw_clients` in a process of its own; the number cut off into *cut_count* (a shared int)."""
    cut: list[int] = []
    asyncio.run(raw_clients(port, n, seconds, cut, stuck))
    cut_count.value = len(cut)


def hop_timer(bootstrap: str, stop: threading.Event, out: dict[str, list[float]], since_ns: list[int]) -> None:
    """Per reading with a ``lat-<ns>`` cause sent at or after ``since_ns[0]`` (set when the case starts producing:
    the worker may still be writing the updates of readings sent before), the ms from its send to: the worker's write
    of its update (the record's timestamp), the update fetched by a read_uncommitted consumer, and by a read_committed
    one (in *out*)."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    from schemas.codec import SingleObjectCodec, is_batch, iter_batch
    from streams.catalogue import TWIN_UPDATES

    codec = SingleObjectCodec()
    consumers = {}
    for level in ("read_uncommitted", "read_committed"):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-hops-{level}", "enable.auto.commit": False,
                      "isolation.level": level, "fetch.wait.max.ms": 10})
        parts = c.list_topics(TWIN_UPDATES.name, timeout=10).topics[TWIN_UPDATES.name].partitions
        c.assign([TopicPartition(TWIN_UPDATES.name, p, OFFSET_END) for p in parts])
        consumers[level] = c
    try:
        while not stop.is_set():
            for level, c in consumers.items():
                for msg in c.consume(1000, 0.005):
                    value = msg.value()
                    if msg.error() or value is None:
                        continue
                    now = time.time_ns()
                    headers = msg.headers()
                    datums = list(iter_batch(value)) if headers and is_batch(headers) else [value]
                    for d in datums:
                        try:
                            _, rec = codec.decode(d)
                        except Exception:  # noqa: BLE001 - counted: a codec change would otherwise hide here
                            out["undecodable"].append(1.0)
                            continue
                        cause = str(rec.get("cause_event_id") or "")
                        if not cause.startswith("lat-"):
                            continue
                        sent = int(cause[4:])
                        if sent < since_ns[0]:
                            continue
                        out[level].append((now - sent) / 1e6)
                        if level == "read_uncommitted":
                            out["written"].append(msg.timestamp()[1] - sent / 1e6)
    finally:
        for c in consumers.values():
            c.close()


def p50_p99(values: list[float]) -> tuple[float, float]:
    """The median and 99th percentile in ms (NaN for a case without timed deltas, e.g. 0 subscribers)."""
    if not values:
        return float("nan"), float("nan")
    a = np.array(values)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def server_cuts(url: str) -> dict[str, float]:
    """The API's count of clients it cut off, per reason (0 for an API without the counter)."""
    text = httpx.get(f"{url}/metrics", timeout=5, headers=HEADERS).text
    out = {"fell_behind": 0.0, "not_reading": 0.0}
    for line in text.splitlines():
        for reason in out:
            if line.startswith(f'plietsch_sse_cut_off_total{{reason="{reason}"}}'):
                out[reason] = float(line.split()[-1])
    return out


def case(url: str, port: int, bootstrap: str, subscribers: int, timed: int, rate: float, seconds: float,
         stuck: int = 0, hops: bool = True) -> dict[str, float]:
    stop = threading.Event()
    lat: list[float] = []
    cut: list[int] = []
    readies = [threading.Event() for _ in range(min(timed, subscribers))]
    threads = [threading.Thread(target=sse_latencies, args=(url, seconds + 5, r, lat, cut), daemon=True) for r in readies]
    for t in threads:
        t.start()
    raw = subscribers - len(readies)
    # the raw clients in a process of their own: in this one their event loop held the GIL against the timed clients'
    # threads, whose clocks then measured this process's queue as the API's delay
    ctx = multiprocessing.get_context("spawn")
    raw_cut = ctx.Value("i", 0)
    raw_proc = ctx.Process(target=raw_process, args=(port, raw, seconds + 5, stuck, raw_cut), daemon=True)
    if raw:
        raw_proc.start()
    for r in readies:
        r.wait(60)
    per_hop_ms: dict[str, list[float]] = {"written": [], "read_uncommitted": [], "read_committed": [], "undecodable": []}
    hop_stop = threading.Event()
    since_ns = [2**63 - 1]  # nothing counts before this case produces
    hop_thread = threading.Thread(target=hop_timer, args=(bootstrap, hop_stop, per_hop_ms, since_ns), daemon=True)
    if hops:
        hop_thread.start()
    time.sleep(2.0)  # the raw clients' snapshots
    s0, t0 = seq(url), time.monotonic()
    since_ns[0] = time.time_ns()
    n = produce_steady(bootstrap, rate, seconds, stop)
    time.sleep(1.0)
    hop_stop.set()
    if hops:
        hop_thread.join(10)
    s1, t1 = seq(url), time.monotonic()
    cut_off = server_cuts(url)
    for t in threads:
        t.join(seconds + 30)
    if raw:
        raw_proc.join(seconds + 30)
        cut.extend([1] * raw_cut.value)
    per_hop = {}
    undecodable = len(per_hop_ms.pop("undecodable"))
    if undecodable:
        print(f"hop timer: {undecodable} datums on twin.updates it could not decode (not timed)", flush=True)
    for hop, values in per_hop_ms.items():
        per_hop[f"{hop}_p50_ms"], per_hop[f"{hop}_p99_ms"] = p50_p99(values)
    p50, p99 = p50_p99(lat)
    return {**per_hop, "subscribers": subscribers, "readings": n, "updates_per_s": (s1 - s0) / (t1 - t0),
            "p50_ms": p50, "p99_ms": p99,
            "timed_deltas": len(lat), "cut": len(cut), "stuck": stuck, **cut_off}


def run_api(source: Path, bootstrap: str, data: Path, subscribers: int,
            server_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str, int]:
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_DATA_DIR=str(data), **ENV,
               PLIETSCH_SSE_PER_CALLER=str(subscribers + 10), PLIETSCH_SSE_TOTAL=str(subscribers + 10))
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--port", str(port),
                            "--log-level", "warning", *server_args], cwd=source, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            h = httpx.get(f"{url}/health", timeout=2, headers=HEADERS).json()
            if h["status"] == "ok" and h["read_model"]["entities"] >= len(bundled_pack().sensors):
                return api, url, port
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    api.terminate()
    raise TimeoutError("the API did not load the twin within 120 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=200)
    ap.add_argument("--timed", type=int, default=3)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--stuck", type=int, default=10, help="of the subscribers, clients that never read (case 3 only)")
    ap.add_argument("--baseline", default="", help="git revision whose API runs the same cases first")
    ap.add_argument("--baseline-server", default="",
                    help="uvicorn options of the baseline's API, e.g. '--loop asyncio --http h11' (the server without "
                         "uvloop and httptools)")
    ap.add_argument("--no-hops", action="store_true",
                    help="no per-hop timing: its two consumers fetch every 10 ms, and each fetch costs Tansu's memory "
                         "storage more the fuller it is (they are load on the shared 2 cores)")
    args = ap.parse_args()
    base_args = tuple(args.baseline_server.split())
    sources = ([(f"{args.baseline}" + (f" {args.baseline_server}" if base_args else ""), checkout(args.baseline),
                 base_args)] if args.baseline else []) + [("this tree", ROOT, ())]
    print(f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; one API process, "
          f"{args.rate:.0f} readings/s, {args.seconds:.0f} s per case", flush=True)
    for name, source, server_args in sources:
        # a broker and a worker of their own per API: Tansu's memory storage slows as it fills (README), so with one
        # broker for both the second API ran 1.5-1.9x slower on every hop (session 12)
        with EmbeddedBroker() as broker:
            bs = broker.bootstrap_servers
            ensure_topics(bs)
            data = Path(tempfile.mkdtemp(prefix="bench-sse-"))
            env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bs, PLIETSCH_DATA_DIR=str(data),
                       PLIETSCH_WEB_PORT=str(free_port()), **ENV)
            worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], cwd=source, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                produce_steady(bs, 2000, 3, threading.Event())  # fill the twin
                api, url, port = run_api(source, bs, data, args.subscribers, server_args)
                try:
                    for subs, timed, stuck in ((0, 0, 0), (1, 1, 0), (args.subscribers, args.timed, args.stuck)):
                        report(name, subs, stuck, case(url, port, bs, subs, timed, args.rate, args.seconds, stuck,
                                                       hops=not args.no_hops))
                finally:
                    api.terminate()
                    try:
                        api.wait(30)
                    except subprocess.TimeoutExpired:
                        api.kill()
                        api.wait(10)
            finally:
                worker.terminate()
                worker.wait(20)


def report(name: str, subs: int, stuck: int, r: dict[str, float]) -> None:
    print(f"{name:22s} {subs:4d} subscribers: read model {r['updates_per_s']:6.1f} updates/s, "
          f"delay p50 {r['p50_ms']:7.0f} ms p99 {r['p99_ms']:7.0f} ms ({r['timed_deltas']} timed "
          f"deltas), streams ended early {r['cut']}; cut off so far by the API: fell behind "
          f"{r['fell_behind']:.0f}, not reading {r['not_reading']:.0f}"
          + (f" ({stuck} clients never read)" if stuck else ""), flush=True)
    if r["written_p50_ms"] != r["written_p50_ms"]:  # NaN: no hop timer
        return
    print(f"{'':22s}      per hop p50/p99 ms: worker wrote {r['written_p50_ms']:.0f}/"
          f"{r['written_p99_ms']:.0f}, readable {r['read_uncommitted_p50_ms']:.0f}/"
          f"{r['read_uncommitted_p99_ms']:.0f}, committed {r['read_committed_p50_ms']:.0f}/"
          f"{r['read_committed_p99_ms']:.0f}, at the client {r['p50_ms']:.0f}/{r['p99_ms']:.0f}", flush=True)

if __name__ == "__main__":
    main()
