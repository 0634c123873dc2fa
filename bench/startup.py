"""Start-up of ``plietsch run`` against the archive's size: a full replay of the archive (the old way, the baseline)
and a start from the newest checkpoint plus the archive's tail (issue 8 item 1).

For each size the archive is written by ``bench.archive_gen`` (the sink's own writer, ``make run``'s default stream:
the bundled Kiel pack at 200 readings per simulated second), then:

1. first start, no checkpoint: the whole archive is replayed; time until ``/health`` answers ``ok`` (the baseline),
   then the bench waits until the worker has applied everything and stops the stack (Ctrl-C), which writes the
   final checkpoint;
2. second start: the checkpoint is restored and only the tail (empty after a clean stop) replayed; time until
   ``/health`` answers ``ok``, and until the viewer has drawn the live twin in a headless Chromium launched before the
   start (``--no-viewer`` leaves the browser out).

Run: ``.venv/bin/python -m bench.startup --sizes 250000,1000000,4000000,10000000`` (sizes above
``--baseline-max`` are still replayed once to make their checkpoint, and that time is reported, marked). Prints a
Markdown table with the machine and its load.

``--checkpoint-from DIR`` skips the first start (which must apply the whole archive once, long at 10M) and starts from a
copy of the checkpoint in DIR whose applied-offset markers are moved to the archive's ends: start-up costs are then
those of a checkpoint covering the whole archive (same number of keys), but the restored state does not match the
archive (timing only; say so where the figure is used).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.auth import ENV, HEADERS
from infra.broker import free_port
from streams.catalogue import MUNICIPAL_TOPICS, SENSOR_TOPICS
from streams.startup import wait_for_lag_zero

ROOT = Path(__file__).resolve().parent.parent
APP_ID = "plietsch-startup-bench"


def _start(data: Path, api_port: int, broker_port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(PLIETSCH_DATA_DIR=str(data), PLIETSCH_APP_ID=APP_ID, PLIETSCH_WEB_PORT=str(free_port()), PYTHONUNBUFFERED="1",
               **ENV)
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--no-simulate", "--api-port", str(api_port),
                             "--broker-port", str(broker_port)], cwd=ROOT, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _health_ok(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).json().get("status") == "ok"
    except (httpx.HTTPError, ValueError):
        return False


def _until_healthy(proc: subprocess.Popen[bytes], url: str, t0: float, limit_s: float) -> float | None:
    while time.monotonic() - t0 < limit_s:
        if proc.poll() is not None:
            raise RuntimeError(f"plietsch run exited with {proc.returncode} before /health answered")
        if _health_ok(url):
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


class Viewer:
    """A headless Chromium (SwiftShader), launched before the stack starts (a planner's browser is already open), that
    opens the viewer once /health answers and reports when the live twin is drawn: the page has loaded the region's
    layers, the stream's snapshot has arrived and coloured the sensors (``window.plietsch.live`` with sensors), and two
    animation frames have passed since."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        from tests.viewer.conftest import ARGS, CHROMIUM

        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)

    def drawn_s(self, url: str, t0: float, limit_s: float) -> float | None:
        page = self._browser.new_page(viewport={"width": 1280, "height": 800}, extra_http_headers=HEADERS)
        try:
            page.goto(f"{url}/?view=gaarden", timeout=limit_s * 1000)
            page.wait_for_function("() => window.plietsch && window.plietsch.ready && window.plietsch.live"
                                   " && Object.keys(window.plietsch.sensors).length > 0", timeout=limit_s * 1000)
            page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
            return time.monotonic() - t0
        except Exception as exc:  # noqa: BLE001 - a page that never draws is a result, reported with its reason
            print(f"  the viewer was not drawn: {exc}", flush=True)
            return None
        finally:
            page.close()

    def close(self) -> None:
        self._browser.close()
        self._pw.stop()


def _stop(proc: subprocess.Popen[bytes]) -> float:
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(120)
    return time.monotonic() - t0


def covering_checkpoint(source: Path, archive: Path, target_root: Path) -> None:
    """Copy checkpoint *source* under *target_root* with every changelog's markers set to *archive*'s last offsets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from streams.checkpoint import MARKER_PREFIX, SCHEMA, is_changelog
    from streams.history.store import Manifest

    ends: dict[tuple[str, str, int], int] = {}
    for f in Manifest.load(archive).files.values():
        for k, (_, hi) in f.offsets.items():
            epoch, part = k.rsplit("|", 1)
            key = (epoch, f.topic, int(part))
            ends[key] = max(hi, ends.get(key, -1))
    dest = target_root / source.name
    shutil.copytree(source, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    for topic, meta in manifest["topics"].items():
        if not is_changelog(topic, manifest.get("app_id", "")):
            continue
        rows = [r for r in pq.read_table(dest / f"{topic}.parquet").to_pylist() if not r["key"].startswith(MARKER_PREFIX)]
        parts = {r["partition"] for r in rows} | set(range(int(meta["partitions"])))
        for (epoch, t, p), hi in ends.items():
            rows += [{"partition": q, "offset": 0, "key": f"__applied__|{epoch}|{t}|{p}".encode(), "value": str(hi).encode(),
                      "headers": []} for q in parts if q == p]
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), dest / f"{topic}.parquet")
        meta["records"] = len(rows)
    (dest / "manifest.json").write_text(json.dumps(manifest))


def checkpoint_start(n: int, archive: Path, work: Path, source: Path, limit_s: float,
                     viewer: Viewer | None = None) -> dict[str, Any]:
    from streams.checkpoint import checkpoint_root

    data = work / f"data-{n}"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    shutil.copytree(archive, data / "archive")
    covering_checkpoint(source, data / "archive", checkpoint_root(data))
    api_port, broker_port = free_port(), free_port()
    url = f"http://127.0.0.1:{api_port}"
    log = work / f"stack-{n}.log"
    out: dict[str, Any] = {"readings": n, "archive_mb": round(sum(f.stat().st_size for f in archive.rglob("*") if f.is_file()) / 1e6, 1),
                           "full_replay_health_s": None, "full_replay_applied_s": None, "baseline": False, "first_stop_s": None}
    mark = log.stat().st_size if log.exists() else 0
    t0 = time.monotonic()
    proc = _start(data, api_port, broker_port, log)
    try:
        out["checkpoint_health_s"] = _until_healthy(proc, url, t0, limit_s)
        if viewer is not None and out["checkpoint_health_s"] is not None:
            out["viewer_drawn_s"] = viewer.drawn_s(url, t0, limit_s)
        out["entities_served"] = httpx.get(f"{url}/health", timeout=5, headers=HEADERS).json()["read_model"]["entities"]
    finally:
        out["second_stop_s"] = round(_stop(proc), 1)
    text = log.read_bytes()[mark:].decode(errors="replace")
    out["restored_line"] = " ".join(ln for ln in text.splitlines() if "restored" in ln or "replayed" in ln)
    print(f"  {out}", flush=True)
    return out


def run_size(n: int, archive: Path, work: Path, baseline_max: int, limit_s: float, baseline_only: bool = False,
             viewer: Viewer | None = None) -> dict[str, Any]:
    data = work / f"data-{n}"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    shutil.copytree(archive, data / "archive")
    api_port, broker_port = free_port(), free_port()
    url, bootstrap = f"http://127.0.0.1:{api_port}", f"127.0.0.1:{broker_port}"
    log = work / f"stack-{n}.log"
    out: dict[str, Any] = {"readings": n, "archive_mb": round(sum(f.stat().st_size for f in archive.rglob("*") if f.is_file()) / 1e6, 1)}
    print(f"{n:,} readings: first start, whole archive replayed ...", flush=True)
    t0 = time.monotonic()
    proc = _start(data, api_port, broker_port, log)
    try:
        out["full_replay_health_s"] = _until_healthy(proc, url, t0, limit_s)
        out["baseline"] = n <= baseline_max
        if baseline_only:
            out.update(full_replay_applied_s=None, checkpoint_health_s=None, entities_served=None, second_stop_s=None)
            return out
        inputs = [t.name for t in (*SENSOR_TOPICS.values(), *MUNICIPAL_TOPICS.values())]
        lag = wait_for_lag_zero(bootstrap, [APP_ID], inputs, time.monotonic() + limit_s)
        out["full_replay_applied_s"] = round(time.monotonic() - t0, 1) if lag == 0 else None
        out["baseline"] = n <= baseline_max
    finally:
        out["first_stop_s"] = round(_stop(proc), 1)
        print(f"  {out}", flush=True)
    print(f"{n:,} readings: second start, from the checkpoint ...", flush=True)
    t0 = time.monotonic()
    proc = _start(data, api_port, broker_port, log)
    try:
        out["checkpoint_health_s"] = _until_healthy(proc, url, t0, limit_s)
        if viewer is not None and out["checkpoint_health_s"] is not None:
            out["viewer_drawn_s"] = viewer.drawn_s(url, t0, limit_s)
        entities = httpx.get(f"{url}/health", timeout=5, headers=HEADERS).json()["read_model"]["entities"]
        out["entities_served"] = entities
    finally:
        out["second_stop_s"] = round(_stop(proc), 1)
    text = log.read_text(errors="replace")
    out["restored_line"] = next((ln for ln in text.splitlines()[::-1] if "restored checkpoint" in ln), "")
    print(f"  {out}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="250000,1000000,4000000,10000000")
    ap.add_argument("--baseline-max", type=int, default=1_000_000, help="largest size whose full replay counts as baseline")
    ap.add_argument("--work", type=Path, default=Path("/tmp/plietsch-startup-bench"))
    ap.add_argument("--limit-s", type=float, default=3600.0, help="give up on one start after this long")
    ap.add_argument("--baseline-only", action="store_true", help="only the full replay's time until /health answers")
    ap.add_argument("--checkpoint-from", type=Path, default=None, help="a checkpoint folder: timing-only starts (see above)")
    ap.add_argument("--archive", action="append", default=[], metavar="N=PATH",
                    help="use an archive of N readings written before (bench.archive_gen), instead of writing one")
    ap.add_argument("--no-viewer", action="store_true", help="do not open the viewer after /health (no browser)")
    args = ap.parse_args()
    given = {int(k): Path(v) for k, v in (a.split("=", 1) for a in args.archive)}
    sizes = sorted(given) if given else sorted(int(s) for s in args.sizes.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    gen = args.work / "archive"
    archives = dict(given) or {n: gen if n == sizes[-1] else args.work / f"archive-{n}" for n in sizes}
    if not all(p.is_dir() for p in archives.values()):
        shutil.rmtree(gen, ignore_errors=True)
        print(f"writing archives of {', '.join(f'{n:,}' for n in sizes)} readings ...", flush=True)
        subprocess.run([sys.executable, "-m", "bench.archive_gen", "--readings", str(sizes[-1]), "--out", str(gen),
                        "--copies", ",".join(str(n) for n in sizes[:-1])], cwd=ROOT, check=True)
    load_before = os.getloadavg()
    results = []
    viewer = None if args.no_viewer or args.baseline_only else Viewer()
    try:
        for n in sizes:
            if args.checkpoint_from is not None:
                results.append(checkpoint_start(n, archives[n], args.work, args.checkpoint_from, args.limit_s, viewer))
            else:
                results.append(run_size(n, archives[n], args.work, args.baseline_max, args.limit_s, args.baseline_only,
                                        viewer))
    finally:
        if viewer is not None:
            viewer.close()
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average (1, 5, 15 min) before {load_before}, after {os.getloadavg()}")
    print("| archive readings | archive MB | full replay: /health ok | full replay: all applied | "
          "from checkpoint: /health ok | viewer drawn | entities served | stop |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        base = "" if r["baseline"] else " (not a baseline)"
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} s"
        print(f"| {r['readings']:,} | {r['archive_mb']} | {f(r['full_replay_health_s'])}{base} | {f(r['full_replay_applied_s'])} | "
              f"{f(r['checkpoint_health_s'])} | {f(r.get('viewer_drawn_s'))} | {r['entities_served']} | "
              f"{r['first_stop_s']} s / {r['second_stop_s']} s |")
        print(f"  {r.get('restored_line', '')}")


if __name__ == "__main__":
    main()
