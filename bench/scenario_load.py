"""Benchmark (issue 15 item 4): the live worker's rate while storm-surge scenarios run, against its rate without, in
one run on this machine.

Each case gets a broker of its own with the same readings (a backlog of ``--events`` readings of the synthetic big
Kiel pack, as ``bench.pipeline`` produces them) and, where it says so, ``--floods`` storm-surge requests of 151 steps
each over the pack's terrain, asked for before the worker starts, so that a scenario runs during the whole of the
worker's work (checked, see below).

1. ``alone``: the worker, no scenario;
2. ``service``: the worker and ``plietsch scenarios`` (this tree: scenarios in their own process at niceness +10);
3. ``in-worker`` (with ``--baseline REV``, e.g. 875d1c9, the last revision whose worker ran scenarios itself): that
   revision's worker, alone and with the same scenario requests.

The rate is the worker's readings per second from its first batch to its last (``bench.pipeline.faust_pipeline``).
A scenario case counts only where runs were still queued or running when the worker was done. The cases are run in
``--repeat`` interleaved rounds and their medians compared.
Run: ``.venv/bin/python -m bench.scenario_load --events 1000000 --floods 40 --repeat 3 --baseline 875d1c9``.
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
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

from bench.pipeline import ROOT, checkout, faust_pipeline, produce
from infra.broker import EmbeddedBroker
from schemas.codec import SingleObjectCodec
from streams.catalogue import SCENARIO_REQUESTS, SCENARIO_RESULTS, ensure_topics
from streams.consume import drain
from streams.serde import encode_event
from twin.events import ScenarioRequested
from twin.synth import build_kiel_pack

CODEC = SingleObjectCodec()
FLOOD = {"curve": [{"hour": 0, "level_m": 0.5}, {"hour": 150, "level_m": 2.5}], "duration_h": 150}  # 151 steps


def ask(bootstrap: str, n: int) -> list[str]:
    p = Producer({"bootstrap.servers": bootstrap})
    sids = [f"kiel:_:scenario:bench{uuid.uuid4().hex[:8]}" for _ in range(n)]
    for sid in sids:
        p.produce(SCENARIO_REQUESTS.name, key=sid.encode(), value=encode_event(CODEC, ScenarioRequested(
            entity_id=sid, region="kiel", occurred_at=datetime.now(UTC), source="bench", request_json=json.dumps(FLOOD))))
    p.flush(10)
    return sids


def statuses(bootstrap: str) -> dict[str, str]:
    out = {}
    for m in drain(bootstrap, SCENARIO_RESULTS.name, missing_ok=True, idle_s=0):
        _, rec = CODEC.decode(m.value())
        out[rec["entity_id"]] = rec["status"]
    return out


def case(name: str, pack_dir: Path, n: int, floods: int, source: Path, service: bool) -> dict[str, object]:
    """One case on a broker of its own; returns its figures."""
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap_servers
        ensure_topics(bs)
        produce(bs, pack_dir, n, batched=True)
        sids = ask(bs, floods) if floods else []
        data = Path(tempfile.mkdtemp(prefix="bench-scenarios-"))
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bs, PLIETSCH_REGION_PACK=str(pack_dir), PLIETSCH_DATA_DIR=str(data),
                   PLIETSCH_APP_ID=f"bench-svc-{uuid.uuid4().hex[:6]}")
        svc = None
        if floods and service:
            svc = subprocess.Popen([sys.executable, "-m", "streams.cli", "scenarios"], cwd=source, env=env,
                                   stdout=open(data / "scenarios.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        try:
            if floods and service:
                wait(lambda: statuses(bs).get(sids[0]) in ("running", "completed"), 120, "the first scenario to run")
            rate, wall, cpu_us = faust_pipeline(bs, pack_dir, n, source=source)
            done = statuses(bs)
            completed = sum(done.get(s) == "completed" for s in sids)
            running = [s for s in sids if done.get(s) == "running"]
            waiting = [s for s in sids if done.get(s) in ("queued", "running")]
        finally:
            if svc is not None:
                svc.terminate()
                svc.wait(60)
    # a scenario case counts only if the scenario load lasted the worker's whole work: some run still unfinished when
    # the worker was done (ask for more with --floods otherwise)
    covered = not floods or bool(waiting)
    out = {"case": name, "rate": rate, "wall_s": wall, "cpu_us": cpu_us, "floods": floods, "covered": covered,
           "completed_when_done": completed, "running_when_done": len(running)}
    print(f"{name:28s} {rate:10,.0f} readings/s  cpu {cpu_us:6.1f} us/reading  "
          + (f"scenarios: {completed}/{floods} completed, {len(running)} running, {len(waiting) - len(running)} queued"
             f" when the worker was done{'' if covered else ' (NOT COVERED: the runs ended before the worker did)'}"
             if floods else ""), flush=True)
    return out


def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--floods", type=int, default=40, help="storm-surge runs asked for in the cases with scenarios")
    ap.add_argument("--repeat", type=int, default=3, help="rounds over all cases; the medians are compared")
    ap.add_argument("--baseline", default="", help="git revision whose worker ran scenarios itself (e.g. 875d1c9)")
    args = ap.parse_args()
    pack_dir = build_kiel_pack(Path(tempfile.mkdtemp(prefix="bench-pack-")) / "kiel",
                               ROOT / "twin" / "regions" / "kiel" / "shoreline_gshhg.txt", seed=11, sensors_per_kind=25)
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.events:,} readings, {args.floods} flood runs of 151 steps", flush=True)
    cases: list[tuple[str, int, Path, bool]] = [("alone", 0, ROOT, False),
                                               ("service (this tree)", args.floods, ROOT, True)]
    if args.baseline:
        old = checkout(args.baseline)
        cases += [(f"alone ({args.baseline})", 0, old, False), (f"in-worker ({args.baseline})", args.floods, old, False)]
    # rounds interleave the cases, so that a drift of the machine's speed over the run falls on every case alike
    results: dict[str, list[dict[str, object]]] = {name: [] for name, *_ in cases}
    for r in range(args.repeat):
        print(f"round {r + 1}/{args.repeat}", flush=True)
        for name, floods, source, service in cases:
            results[name].append(case(name, pack_dir, args.events, floods, source, service))

    names = [name for name, *_ in cases]

    def median(name: str) -> float:
        # the baseline's worker reads the requests itself: whether it ran one during its work shows in its counts only
        runs = [x for x in results[name] if x["covered"] or name in names[2:]]
        if not runs:
            raise SystemExit(f"{name}: no run where the scenarios lasted the worker's whole work; ask for more --floods")
        return float(statistics.median(float(x["rate"]) for x in runs))  # type: ignore[arg-type]

    for name in names:
        print(f"median {name:21s} {median(name):10,.0f} readings/s over "
              f"{sum(bool(x['covered']) for x in results[name])} covered run(s)", flush=True)
    print(f"service / alone: {median(names[1]) / median(names[0]):.2f} (target >= 0.80)", flush=True)
    if args.baseline:
        print(f"in-worker / alone ({args.baseline}): {median(names[3]) / median(names[2]):.2f}", flush=True)

if __name__ == "__main__":
    main()
