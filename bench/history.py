"""History queries against the archive's size, through the API's own routes (FastAPI app in-process, no lifespan: the
read model is not started, the history engine is DuckDB over the archive), beside the baseline in the same run.

Per archive (written by ``bench.archive_gen``): ``--calls`` calls of each of

* ``GET /history/entities/{id}?start&end``: one sensor, one whole UTC day inside the archive (first 1000 events);
* ``GET /history/area?bbox&start&end``: the south-west half of the pack's sensors, one hour;
* ``GET /history/state?time=T``: the twin at a random T inside the archive;
* ``GET /history/range``;

p50 and p99 of each, and the process's RSS after each archive and its peak (the engine runs under a 512 MB DuckDB limit).

Baseline: what answered every one of these before the history engine, one whole-archive pass: every archived event
read, decoded and validated, sorted by time and folded into the twin (``streams.archive.read_events`` + the one fold,
no snapshot, no pruning); ``--baseline-calls`` times per archive (default 1: it is the same pass whatever the query).

Run: ``.venv/bin/python -m bench.history --archive 250000=DIR --archive 1000000=DIR ...``
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from bench.auth import BENCH_KEY, HEADERS
from streams.archive import read_events
from streams.history.store import Manifest
from twin.region import BUNDLED_DIR
from twin.state import TwinState, fold


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def iso(t: Any) -> str:
    return str(t.isoformat().replace("+00:00", "Z"))


def baseline(root: Path, pack: Any) -> float:
    t = time.monotonic()
    fold(TwinState.empty(pack), ((e, 0) for _, e in read_events(root)))
    return time.monotonic() - t


def run(n: int, archive: Path, calls: int, baseline_calls: int, rng: random.Random, baseline_max: int) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="plietsch-histbench-"))
    (data / "archive").symlink_to(archive.resolve())
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", region_pack=BUNDLED_DIR / "kiel", data_dir=data,
                                 operator_api_key=BENCH_KEY))
    client = TestClient(app, headers=HEADERS)
    pack = app.state.pack
    m = Manifest.load(archive)
    s = m.summary()
    t0, t1 = s["start"], s["end"]
    span = (t1 - t0).total_seconds()
    days = sorted({f.day for f in m.files.values()})
    sensors = sorted(pack.sensors.values(), key=lambda x: x.id)
    lon = statistics.median(x.lon for x in sensors)
    lat = statistics.median(x.lat for x in sensors)
    bbox = f"{min(x.lon for x in sensors) - 0.01},{min(x.lat for x in sensors) - 0.01},{lon},{lat}"

    def q_entity() -> str:
        day = rng.choice(days)
        return (f"/history/entities/{rng.choice(sensors).id}?start={day}T00:00:00Z&end={day}T23:59:59.999999Z")

    def q_area() -> str:
        a = t0 + timedelta(seconds=rng.uniform(0, max(0.0, span - 3600)))
        return f"/history/area?bbox={bbox}&start={iso(a)}&end={iso(a + timedelta(hours=1))}"

    def q_state() -> str:
        return f"/history/state?time={iso(t0 + timedelta(seconds=rng.uniform(0, span)))}"

    out: dict[str, Any] = {"readings": n, "archive": archive.name, "files": len(m.files), "snapshots": len(m.snapshot_index().all()),
                           "mb": round(sum(p.stat().st_size for p in archive.rglob("*") if p.is_file()) / 1e6)}
    for name, make in (("entity_day", q_entity), ("area_hour", q_area), ("state_at", q_state), ("range", lambda: "/history/range")):
        times, cpu = [], []
        for _ in range(calls):
            url = make()
            t, c = time.monotonic(), time.process_time()
            r = client.get(url)
            times.append(time.monotonic() - t)
            cpu.append(time.process_time() - c)
            if r.status_code != 200:
                raise SystemExit(f"{url}: {r.status_code} {r.text[:300]}")
        out[name] = (pct(times, 0.5), pct(times, 0.99))
        out[name + "_cpu"] = (pct(cpu, 0.5), pct(cpu, 0.99))
    out["rss_mb"] = psutil.Process().memory_info().rss / 1e6
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    out["baseline_s"] = [baseline(archive, pack) for _ in range(baseline_calls if n <= baseline_max else 0)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", action="append", required=True, metavar="N=PATH")
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--baseline-calls", type=int, default=1)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--baseline-max", type=int, default=10**12,
                    help="run the baseline only for archives up to this many readings (it is linear in the archive)")
    a = ap.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average at start {os.getloadavg()}", flush=True)
    rows = []
    for n, path in sorted((int(k), Path(v)) for k, v in (x.split("=", 1) for x in a.archive)):
        r = run(n, path, a.calls, a.baseline_calls, random.Random(a.seed), a.baseline_max)  # the same calls per archive
        rows.append(r)
        print(f"  {r} load {os.getloadavg()}", flush=True)
    print("\n| readings | archive | files | snapshots | MB | query | p50 | p99 | CPU p50 | CPU p99 | baseline: whole-archive "
          "pass |\n|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        base = ", ".join(f"{b:.1f} s" for b in r["baseline_s"]) or "not run"
        for q in ("entity_day", "area_hour", "state_at", "range"):
            p50, p99 = r[q]
            c50, c99 = r[q + "_cpu"]
            print(f"| {r['readings']:,} | {r['archive']} | {r['files']} | {r['snapshots']} | {r['mb']} | {q} | "
                  f"{p50 * 1e3:.0f} ms | {p99 * 1e3:.0f} ms | {c50 * 1e3:.0f} ms | {c99 * 1e3:.0f} ms | {base} |")
    print("\n| readings | archive | RSS after | peak RSS |\n|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['readings']:,} | {r['archive']} | {r['rss_mb']:.0f} MB | {r['peak_mb']:.0f} MB |")
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
