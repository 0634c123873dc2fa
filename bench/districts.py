"""Benchmark: region packs on real districts. Building the bundled Kiel pack from its sources and a Flensburg harbour
pack from the test fixtures by the CLI's functions, loading each, and the 20 Oct 2023 surge preset (24 hourly steps
with its baseline run and impacts) on each.

Run: ``.venv/bin/python -m bench.districts [--baseline DIR]``. ``--baseline`` points at an unpacked older tree
(``git archive <commit> | tar -x -C DIR``) whose bundled pack (synthetic box quarters) is loaded and whose surge
preset is run with that tree's own code, in a subprocess, as the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "districts"
PROBE = """
import time, sys
from datetime import UTC, datetime
t = time.perf_counter()
from twin.region import load_pack
pack = load_pack(sys.argv[1])
t_load = time.perf_counter() - t
from twin.scenario import ScenarioRequest, run
req = ScenarioRequest(preset=sys.argv[2], duration_h=23, step_minutes=60, start=datetime(2023, 10, 20, 8, tzinfo=UTC))
t = time.perf_counter()
res = run(pack, req)
t_run = time.perf_counter() - t
s = res.summary()
print(f"load {t_load:.2f} s ({len(pack.buildings)} buildings, {len(pack.roads)} roads, {len(pack.sensors)} sensors, "
      f"{len(pack.coast)} coast segments); surge {t_run:.2f} s on {res.grid.heights.size:,} cells: "
      f"{s['max_flooded_area_km2']} km2 flooded, {s['affected']} affected")
"""


def probe(tree: Path, pack: Path, preset: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(pack), preset], cwd=tree, env=env, capture_output=True,
                         text=True, check=True, timeout=600)
    return out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, help="an unpacked older tree to measure as the baseline")
    args = ap.parse_args()
    print(f"{platform.machine()} Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    if args.baseline is not None:
        print(f"baseline {args.baseline}: {probe(args.baseline, args.baseline / 'twin/regions/kiel', 'kiel-2023-10-20')}")
    work = Path(tempfile.mkdtemp())
    try:
        plietsch = f"{sys.executable} -m streams.cli"
        t = time.perf_counter()
        subprocess.run(["bash", str(ROOT / "twin/regions/kiel/build.sh"), str(work / "kiel")], cwd=ROOT, check=True,
                       env={**os.environ, "PLIETSCH": plietsch}, capture_output=True, timeout=600)
        print(f"Kiel pack built from its sources (region new + synth, two CLI processes): {time.perf_counter() - t:.2f} s")
        print(f"Kiel on real districts: {probe(ROOT, work / 'kiel', 'kiel-2023-10-20')}")
        sys.path.insert(0, str(ROOT))
        from tests.streams.test_region_cli import new_args

        t = time.perf_counter()
        for a in (new_args(work / "fl"), ["region", "synth", "--out", str(work / "fl")]):
            subprocess.run([sys.executable, "-m", "streams.cli", *a], cwd=ROOT, check=True, capture_output=True, timeout=600)
        print(f"Flensburg pack built from the shared data (region new + synth): {time.perf_counter() - t:.2f} s")
        print(f"Flensburg: {probe(ROOT, work / 'fl', 'flensburg-2023-10-20')}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"at {datetime.now(UTC).isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main()
