"""The viewer's time slider over a day of history: headless Chromium (SwiftShader) scrubs the slider over N positions of
an archived day and records, per position, the time from the input (a key press or a drag) to the painted state
(``window.plietschSlider.paints``, measured in the page with ``performance.now()``), beside the time of the page's
``/history/state`` request at T.

"Painted" (``input_to_paint_ms``): since the viewer renders on request only (Cesium's request-render mode), the page
waits for the first rendered frame after its drawing in which every data source is ready (Cesium has built and shown
the geometry of every changed entity), then one more animation frame (that frame is on the screen). Pages before
that change measured two animation frames after the drawing (rendered continuously, without waiting for rebuilt
geometry); the page records that measure too (``two_frames_ms``), so a before/after pair compares like with like.

The archive is SYNTHETIC and written with the project's own tools (``day_archive``: the simulator's readings of the
bundled Kiel pack spread over one UTC day, a storm surge that raises and clears alerts around noon, and municipal road
works, defect reports and public events, all through ``ArchiveWriter`` with its snapshots and compaction, like the
sink). ``tests/viewer/test_timeslider.py`` walks the same slider without timing claims.

Baseline, in the same run: the same walk against the same archive with the time-travel snapshots hidden (the manifest's
snapshot list emptied in a copy of it), i.e. every position folds the archive from its start, as before snapshots.

Run: ``.venv/bin/python -m bench.slider --readings 1000000 --positions 48 --data /work/bench-data``
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.auth import ENV, HEADERS
from streams.catalogue import MUNICIPAL_TOPICS, SENSOR_TOPICS
from streams.history.writer import ArchiveWriter
from streams.publisher import partition_for
from streams.simulator import readings
from twin.events import DefectReported, Event, PublicEventScheduled, RoadWorksAnnounced
from twin.profiles import Surge
from twin.region import RegionPack, bundled_pack

DAY = datetime(2026, 10, 20, tzinfo=UTC)  # a UTC day; the surge peaks at 13:00 UTC (15:00 in Kiel, CEST)
DAY_S = 86_400



def municipal_events(pack: RegionPack, day: datetime, every_s: int = 1800) -> Iterator[tuple[str, Event]]:
    """(topic, event) for road works, defect reports and public events spread over *day* (SYNTHETIC)."""
    roads = sorted(str(e) for e in pack.entities() if ":road:" in str(e))
    lon0, lat0 = (pack.manifest.bbox[0] + pack.manifest.bbox[2]) / 2, (pack.manifest.bbox[1] + pack.manifest.bbox[3]) / 2
    for k, s in enumerate(range(every_s // 2, DAY_S, every_s)):
        t = day + timedelta(seconds=s)
        kind = k % 3
        if kind == 0:
            yield MUNICIPAL_TOPICS["road_works"].name, RoadWorksAnnounced(
                entity_id=roads[k % len(roads)], region=pack.id, occurred_at=t, source="bench.slider (synthetic)",
                starts_at=t, ends_at=t + timedelta(hours=6), lanes_closed=1 + k % 2, description=f"Baustelle {k}")
        elif kind == 1:
            yield MUNICIPAL_TOPICS["defect_reports"].name, DefectReported(
                entity_id=f"{pack.id}:gaarden:report:d{k:03d}", region=pack.id, occurred_at=t,
                source="bench.slider (synthetic)", category=("street_lamp", "pothole", "litter")[k % 3],
                description=f"Meldung {k}", lon=round(lon0 + 0.001 * (k % 7), 5), lat=round(lat0 + 0.001 * (k % 5), 5))
        else:
            yield MUNICIPAL_TOPICS["public_events"].name, PublicEventScheduled(
                entity_id=f"{pack.id}:_:event:e{k:03d}", region=pack.id, occurred_at=t, source="bench.slider (synthetic)",
                title=f"Veranstaltung {k}", starts_at=t + timedelta(hours=1), ends_at=t + timedelta(hours=4),
                expected_visitors=100 * k, lon=round(lon0 - 0.001 * (k % 7), 5), lat=round(lat0, 5))


def day_archive(root: Path, n: int, pack: RegionPack | None = None, day: datetime = DAY, seed: int = 7,
                snapshot_every: int = 10_000, flush_every: int = 250_000, progress: bool = False) -> ArchiveWriter:
    """Write *n* readings spread evenly over one UTC *day* (plus the municipal events and a storm surge) into a new
    archive at *root* through the archive's own writer; returns the writer (flushed)."""
    pack = pack or bundled_pack()
    writer = ArchiveWriter(root, pack, epoch="slider", snapshot_every=snapshot_every)
    surge = Surge(peak_at=day + timedelta(hours=13), peak_m=1.95, duration_h=5.0)
    offsets: dict[tuple[str, int], int] = {}
    muni = list(municipal_events(pack, day))
    spacing = DAY_S / n
    t0 = time.monotonic()

    def add(topic: str, e: Event) -> None:
        key = str(e.entity_id).encode()
        part = partition_for(key, 4 if topic in {t.name for t in SENSOR_TOPICS.values()} else 2)
        off = offsets.get((topic, part), 0)
        offsets[(topic, part)] = off + 1
        writer.add(topic, part, off, e, key=key)

    for i, r in enumerate(readings(pack, n, seed=seed, start=day, spacing_s=spacing, surge=surge), 1):
        while muni and muni[0][1].occurred_at <= r.occurred_at:
            add(*muni.pop(0))
        add(SENSOR_TOPICS[type(r).sensor_kind].name, r)
        if i % flush_every == 0:
            writer.flush()
            if progress:
                el = time.monotonic() - t0
                print(f"  {i:>11,} readings, {el:6.1f} s", file=sys.stderr, flush=True)
    for topic, e in muni:
        add(topic, e)
    writer.flush()
    return writer


def _baseline_root(archive: Path, work: Path) -> Path:
    """A view of *archive* without its snapshots (symlinked data files, a manifest whose snapshot list is empty)."""
    root = work / "base" / "archive"
    if root.exists():
        shutil.rmtree(root.parent)
    root.mkdir(parents=True)
    for p in archive.glob("topic=*"):
        (root / p.name).symlink_to(p.resolve())
    doc = json.loads((archive / "_manifest.json").read_text())
    doc["snapshots"] = []
    (root / "_manifest.json").write_text(json.dumps(doc))
    return root.parent


def _start_api(data: Path, bootstrap: str, code: Path | None = None) -> tuple[Any, str]:
    """The API (and the viewer it serves) as its own process over *data*; from the source tree *code* (another
    revision, for a before/after pair in one run) when given, else this one."""
    import os

    from tests.helpers import start_api

    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_DATA_DIR=str(data), **ENV)
    env.pop("PLIETSCH_REGION_PACK", None)
    if code is None:
        return start_api(env, data / "api.log", 90)
    import subprocess

    import httpx

    from infra.broker import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--port", str(port),
                             "--log-level", "warning"], cwd=code, env=dict(env, PYTHONPATH=str(code)),
                            stdout=(data / "api-baseline.log").open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"API of {code} did not start within 90 s: {(data / 'api-baseline.log').read_text()[-2000:]}")


async def walk(url: str, positions: int) -> list[dict[str, Any]]:
    """Open the viewer, press Home, then step the slider by keyboard to *positions* evenly spaced positions of the
    day (several key presses per position, as a user holding a key); returns the page's paint records."""
    from playwright.async_api import async_playwright

    from tests.viewer.conftest import ARGS, CHROMIUM

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = await b.new_page(viewport={"width": 1280, "height": 800},  # as a planner would see it (an operator key)
                                extra_http_headers=HEADERS)
        await page.goto(f"{url}/?view=gaarden")
        await page.wait_for_function("() => window.plietsch && window.plietsch.ready && window.plietschSlider.ready",
                                     timeout=120_000)
        top = int(await page.get_attribute("#slider", "max") or 0)
        per = max(1, top // positions)
        await page.locator("#slider").focus()
        await page.keyboard.press("Home")
        await page.wait_for_function("(p) => !window.plietschSlider.loading && window.plietschSlider.position === p",
                                     arg=0, timeout=600_000)
        for k in range(1, positions + 1):
            for _ in range(per):
                await page.keyboard.press("ArrowRight")
            target = min(top, k * per)
            await page.wait_for_function("(p) => !window.plietschSlider.loading && window.plietschSlider.position === p",
                                         arg=target, timeout=600_000)
        paints: list[dict[str, Any]] = await page.evaluate("window.plietschSlider.paints")
        await b.close()
    return paints[1:]  # the first (Home) paint is the page's warm-up


def _stats(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    return {"n": len(v), "p50": statistics.median(v), "p95": v[min(len(v) - 1, int(0.95 * len(v)))], "max": v[-1]}


def main() -> None:
    import asyncio
    import os

    from infra.broker import EmbeddedBroker
    from streams.catalogue import ensure_topics

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--positions", type=int, default=48)
    ap.add_argument("--baseline-positions", type=int, default=4,
                    help="positions walked without snapshots (each folds the archive from its start)")
    ap.add_argument("--data", type=Path, default=Path("/work/bench-data"))
    ap.add_argument("--snapshot-every", type=int, default=10_000, help="archived events between two snapshots")
    ap.add_argument("--out", type=Path, default=None, help="JSON with every paint record")
    ap.add_argument("--baseline-code", type=Path, default=None,
                    help="also walk with the API and viewer of this source tree (e.g. `git archive REV | tar -x -C DIR`), "
                         "same archive, --positions positions: a before/after pair in one run")
    ap.add_argument("--rounds", type=int, default=1, help="walks per variant, alternating (before/after pairs)")
    a = ap.parse_args()
    name = f"slider-{a.readings}" + ("" if a.snapshot_every == 10_000 else f"-every-{a.snapshot_every}")
    archive = a.data / name
    if not (archive / "_manifest.json").exists():
        print(f"writing {a.readings:,} readings over {DAY.date()} into {archive} ...", file=sys.stderr)
        day_archive(archive, a.readings, snapshot_every=a.snapshot_every, progress=True)
    work = a.data / f"{name}-run"
    cur = work / "cur"
    cur.mkdir(parents=True, exist_ok=True)
    if not (cur / "archive").exists():
        (cur / "archive").symlink_to(archive.resolve())
    results: dict[str, Any] = {"readings": a.readings, "day": DAY.date().isoformat(), "machine":
                               f"{platform.node()} {os.cpu_count()} cores, load {os.getloadavg()}"}
    variants: list[tuple[str, Path, int, Path | None]] = []
    for _round in range(a.rounds):
        if a.baseline_code is not None:
            variants.append((f"before ({a.baseline_code.name})", cur, a.positions, a.baseline_code))
        variants.append(("snapshots", cur, a.positions, None))
    variants.append(("baseline (no snapshots)", _baseline_root(archive, work), a.baseline_positions, None))
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        for name, data, n, code in variants:
            if n <= 0:
                continue
            proc, url = _start_api(data, broker.bootstrap_servers, code)
            try:
                t = time.monotonic()
                load0 = os.getloadavg()[0]
                paints = asyncio.run(walk(url, n))
                res: dict[str, Any] = {"input_to_paint_ms": _stats([p["input_to_paint_ms"] for p in paints]),
                       "request_ms": _stats([p["request_ms"] for p in paints]),
                       "walk_s": time.monotonic() - t, "load": (load0, os.getloadavg()[0]), "paints": paints}
                for part in ("wait_ms", "paint_ms", "frame_ms", "two_frames_ms", "frames"):  # pages that record it
                    if paints and all(part in p for p in paints):
                        res[part] = _stats([p[part] for p in paints])
                results.setdefault(name, []).append(res)
            finally:
                proc.terminate()
                proc.wait(20)
            s, r = res["input_to_paint_ms"], res["request_ms"]
            print(f"| {a.readings:,} | {name} | {s['n']} | {s['p50']:.0f} | {s['p95']:.0f} | {s['max']:.0f} | "
                  f"{r['p50']:.0f} | {r['p95']:.0f} | {r['max']:.0f} | {res['load'][0]:.1f}-{res['load'][1]:.1f} |",
                  flush=True)
            parts = {k: f"p50 {res[k]['p50']:.0f} p95 {res[k]['p95']:.0f} max {res[k]['max']:.0f}"
                     for k in ("wait_ms", "paint_ms", "frame_ms", "two_frames_ms", "frames") if k in res}
            if parts:
                print(f"  {name}: {parts}", flush=True)
    results["load_after"] = os.getloadavg()
    out = a.out or work / "slider.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"load average after: {results['load_after']}; every paint in {out}")


if __name__ == "__main__":
    main()
