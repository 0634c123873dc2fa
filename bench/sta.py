"""Benchmark: SensorThings Observations against the archive's size, with the history route as the baseline, same run.

Run: ``.venv/bin/python -m bench.sta --archive 250000=/work/bench-data/arch-250k --archive 1000000=... [--calls 30]``
(archives from ``bench.archive_gen``). The API in-process (TestClient, read model not started: every observation comes
from the archive), as a planner. Per archive, the same random calls:

* ``latest``: ``Datastreams(<sensor:quantity>)/Observations?$orderby=phenomenonTime desc&$top=1`` (a map's query);
* ``day``: the same Datastream's Observations of one UTC day, ``$top=100`` (phenomenonTime range pushed down);
* ``things_latest``: ``Things?$top=5&$expand=Datastreams/Observations($orderby=phenomenonTime desc;$top=1)``;
* baseline ``history_day``: ``GET /history/entities/<sensor>?start&end`` of the same day, ``limit=100``.
Prints p50/p99 in ms per query and archive.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from api.main import create_app
from api.ngsild.entities import SENSOR_TYPES
from api.settings import ApiSettings
from streams.history.store import Manifest
from twin.region import BUNDLED_DIR

KEY = "bench-sta-operator-key-0123456789abcdef"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(n: int, archive: Path, calls: int, rng: random.Random) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="plietsch-stabench-"))
    (data / "archive").symlink_to(archive.resolve())
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", region_pack=BUNDLED_DIR / "kiel", data_dir=data,
                                 operator_api_key=KEY))
    client = TestClient(app, headers={"Authorization": f"Bearer {KEY}"})
    m = Manifest.load(archive)
    days = sorted({f.day for f in m.files.values()})
    sensors = sorted((s for s in app.state.pack.sensors.values() if s.sensor_kind in SENSOR_TYPES), key=lambda s: s.id)
    picks = [(rng.choice(sensors), rng.choice(days)) for _ in range(calls)]

    def ds(s: Any) -> str:
        return f"{s.id}:{SENSOR_TYPES[s.sensor_kind][1][0].attr}"

    queries = {
        "latest": lambda s, d: (f"/sta/v1.1/Datastreams('{ds(s)}')/Observations",
                                {"$orderby": "phenomenonTime desc", "$top": "1"}),
        "day": lambda s, d: (f"/sta/v1.1/Datastreams('{ds(s)}')/Observations",
                             {"$filter": f"phenomenonTime ge {d}T00:00:00Z and phenomenonTime le {d}T23:59:59.999Z",
                              "$top": "100"}),
        "things_latest": lambda s, d: ("/sta/v1.1/Things", {"$top": "5", "$skip": str(rng.randrange(0, 55)),
                                                           "$expand": "Datastreams/Observations($orderby=phenomenonTime desc;$top=1)"}),
        "history_day (baseline)": lambda s, d: (f"/history/entities/{s.id}",
                                                {"start": f"{d}T00:00:00Z", "end": f"{d}T23:59:59.999Z", "limit": "100"}),
    }
    out: dict[str, Any] = {"readings": n, "archive": archive.name, "files": len(m.files)}
    for name, make in queries.items():
        times = []
        got = 0
        for s, d in picks:
            path, params = make(s, d)
            t = time.monotonic()
            r = client.get(path, params=params)
            times.append(time.monotonic() - t)
            if r.status_code != 200:
                raise SystemExit(f"{path} {params}: {r.status_code} {r.text[:300]}")
            body = r.json()
            got += len(body.get("value", body.get("features", [])))
        out[name] = (pct(times, 0.5), pct(times, 0.99), got)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", action="append", required=True, metavar="N=PATH")
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average at start {os.getloadavg()}", flush=True)
    rows = []
    for n, path in sorted((int(k), Path(v)) for k, v in (x.split("=", 1) for x in a.archive)):
        r = run(n, path, a.calls, random.Random(a.seed))
        rows.append(r)
        print(f"  {r} load {os.getloadavg()}", flush=True)
    print("\n| readings | files | query | p50 | p99 | items returned (all calls) |\n|---:|---:|---|---:|---:|---:|")
    for r in rows:
        for q in ("latest", "day", "things_latest", "history_day (baseline)"):
            p50, p99, got = r[q]
            print(f"| {r['readings']:,} | {r['files']} | {q} | {p50 * 1e3:.0f} ms | {p99 * 1e3:.0f} ms | {got} |")


if __name__ == "__main__":
    main()
