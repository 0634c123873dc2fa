"""How long Ctrl-C on ``plietsch run`` takes to stop the whole stack (simulator, lag, worker + archive drain,
checkpoint, API, broker), for this code and for a baseline checkout, in alternating rounds of the same run.

Each round: ``plietsch run`` with the simulator at its default rate, ``--run-s`` seconds of streaming after /health
answers, then SIGINT; the time from the signal to the process's exit, and the stack's own ``stopped in ... (steps)``
line.

Run: ``.venv/bin/python -m bench.stop --baseline-code /path/to/old/checkout --rounds 2``
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from infra.broker import free_port

ROOT = Path(__file__).resolve().parent.parent


def one(code: Path, run_s: float) -> tuple[float, str]:
    data = Path(tempfile.mkdtemp(prefix="plietsch-stopbench-"))
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(PLIETSCH_DATA_DIR=str(data), PLIETSCH_WEB_PORT=str(free_port()), PYTHONUNBUFFERED="1",
               PLIETSCH_APP_ID=f"stopbench-{api_port}")
    log = data / "stack.log"
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--api-port", str(api_port), "--broker-port",
                             str(free_port())], cwd=code, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        try:
            if httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=2).json().get("status") == "ok":
                break
        except (httpx.HTTPError, ValueError):
            pass
        if proc.poll() is not None:
            raise SystemExit(f"plietsch run exited early; see {log}")
        time.sleep(0.2)
    time.sleep(run_s)
    t = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(120)
    took = time.monotonic() - t
    line = next((ln for ln in log.read_text(errors="replace").splitlines()[::-1] if "stopped in" in ln), "?")
    return took, line.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-code", type=Path, required=True, help="a checkout of the code before (same venv)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--run-s", type=float, default=15.0)
    a = ap.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()}", flush=True)
    rows = []
    for r in range(a.rounds):
        for name, code in (("baseline", a.baseline_code), ("now", ROOT)):
            took, line = one(code, a.run_s)
            rows.append((name, took, line))
            print(f"  round {r + 1} {name}: {took:.1f} s  [{line}]  load {os.getloadavg()[0]:.1f}", flush=True)
    print("\n| code | Ctrl-C to exit | the stack's steps |\n|---|---:|---|")
    for name, took, line in rows:
        print(f"| {name} | {took:.1f} s | {line} |")


if __name__ == "__main__":
    main()
