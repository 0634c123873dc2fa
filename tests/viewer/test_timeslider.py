"""The viewer's time slider in real headless Chromium over a real stack: the API as its own process over the session's
broker, with an archive covering one UTC day (SYNTHETIC, written by ``bench.slider.day_archive`` through the archive's
own writer: readings of the bundled Kiel pack, a storm surge that raises and clears alerts, municipal events).

The walk moves the slider by keyboard and by drag over more than 24 positions of that day; at each position what the
page draws (sensor labels and colours, coast colours and surge classes, the alert list, the municipal list, the
aggregates' running windows) is checked against the API's ``/history/state`` at T, and at a few positions the API is
checked against the offline fold (``streams.history.timetravel.full_fold``). The time from input to painted state per
position is written to ``slider-timings.json`` in the test's tmp dir (no timed assertion here: ``bench/slider.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.slider import DAY, day_archive
from streams.history.store import Manifest
from streams.history.timetravel import full_fold
from tests.credentials import OPERATOR
from twin.region import bundled_pack
from twin.state import combined_aggregates

pytestmark = [pytest.mark.browser, pytest.mark.broker]
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
READINGS = 20_000

# What the page draws, read from the scene and the DOM (not from the data the page fetched).
DRAWN = """() => {
  const v = window.PlietschView, ts = window.plietschSlider;
  const sensors = {}, coast = {};
  for (const [id, e] of Object.entries(v.sensorEntities))
    sensors[id] = { label: e.label.text.getValue(), colour: e.point.color.getValue().toCssHexString() };
  for (const [id, e] of Object.entries(v.coastEntities))
    coast[id] = { colour: e.entity.polyline.material.color.getValue().toCssHexString().slice(0, 7) };
  for (const item of document.querySelectorAll('#at-coast li')) coast[item.dataset.id].surge = item.dataset.surgeClass;
  return {
    at: ts.at, position: ts.position, slider: Number(document.getElementById('slider').value),
    label: document.getElementById('time-label').textContent,
    utc: document.getElementById('time-utc').dateTime,
    valuetext: document.getElementById('slider').getAttribute('aria-valuetext'),
    sensors, coast,
    alerts: [...document.querySelectorAll('#alert-list li[data-id]')].map((x) => x.dataset.id),
    municipal: [...document.querySelectorAll('#at-municipal li[data-id]')].map((x) => x.dataset.id).filter((x) => x),
    municipalText: document.getElementById('at-municipal').innerText,
    aggregates: Object.fromEntries([...document.querySelectorAll('#at-aggregates tbody tr')]
      .map((tr) => [tr.dataset.key, tr.lastChild.dataset.value])),
  };
}"""
SETTLED = "(p) => { const ts = window.plietschSlider; return !ts.loading && ts.position === p; }"


def _freeboard_colour(s: dict[str, Any] | None) -> str:
    """viewer.js's FREEBOARD."""
    if not s:
        return "#95a5a6"
    if s["overtopped"]:
        return "#e74c3c"
    return "#e67e22" if s["freeboard_m"] < 0.5 else "#f1c40f" if s["freeboard_m"] < 1.0 else "#2ecc71"


def _current_windows(snap: dict[str, Any]) -> dict[str, str]:
    """The running window per (metric, group) at T and its shown value, by the rule the panel states."""
    at = datetime.fromisoformat(snap["time"])
    best: dict[str, tuple[datetime | None, str, dict[str, Any]]] = {}
    for key, a in snap["aggregates"].items():
        start = datetime.fromisoformat(a["window"]) if a.get("window") else None
        if start is not None and start > at:
            continue
        g = f"{a['metric']}|{a['group']}"
        cur = best.get(g)
        if cur is None or (start is None or (cur[0] is not None and start > cur[0])):
            best[g] = (start, key, a)
    out = {}
    for start, key, a in best.values():
        if start is None:
            out[key] = f"{int(a['occupied'])}/{int(a['capacity'])}"
        elif a["metric"] == "traffic_vehicles":
            out[key] = f"{a['sum']:g}"
        else:
            out[key] = a["mean"]  # shown to one decimal
    return out


def _same_windows(drawn: dict[str, str], expected: dict[str, Any]) -> bool:
    if set(drawn) != set(expected):
        return False
    return all(drawn[k] == v if isinstance(v, str) else abs(float(drawn[k]) - v) <= 0.05 + 1e-9
               for k, v in expected.items())


def _check_drawn(drawn: dict[str, Any], snap: dict[str, Any], names: dict[str, str]) -> None:
    at = snap["time"]
    assert drawn["at"] == at and datetime.fromisoformat(drawn["utc"]) == datetime.fromisoformat(at), (drawn["utc"], at)
    for sid, shown in drawn["sensors"].items():
        s = snap["sensors"].get(sid)
        if s is None:
            assert shown["label"] == names[sid] and shown["colour"] == "#95a5a6", (sid, shown)
            continue
        lines = shown["label"].split("\n")
        assert lines[0] == names[sid]
        values = {k: float(v) for k, v in (line.split(": ", 1) for line in lines[1:])}
        assert values == {k: float(v) for k, v in s["values"].items()}, (sid, at, values, s["values"])
        assert shown["colour"] != "#95a5a6"
    for cid, shown in drawn["coast"].items():
        s = snap["coast"].get(cid)
        assert shown["colour"] == _freeboard_colour(s), (cid, at, shown, s)
        assert shown["surge"] == ((s or {}).get("surge_class") or "none"), (cid, at, shown, s)
    assert sorted(drawn["alerts"]) == sorted(a["alert_id"] for a in snap["active_alerts"]), at
    assert drawn["municipal"] == sorted(snap["municipal"]), at
    assert _same_windows(drawn["aggregates"], _current_windows(snap)), (at, drawn["aggregates"], _current_windows(snap))


def _check_offline(api_snap: dict[str, Any], archive: Path) -> None:
    """The API's state at T equals the offline fold of the whole archive up to T (no snapshot)."""
    ref = full_fold(Manifest.load(archive), bundled_pack(), datetime.fromisoformat(api_snap["time"]))
    assert api_snap["sensors"] == {k: json.loads(json.dumps(v.to_json(), default=str)) for k, v in ref.sensors.items()}
    assert api_snap["coast"] == {k: json.loads(json.dumps(v.to_json(), default=str)) for k, v in ref.coast.items()}
    assert sorted(a["alert_id"] for a in api_snap["active_alerts"]) == sorted(ref.alerts)
    assert sorted(api_snap["municipal"]) == sorted(ref.municipal)
    assert api_snap["aggregates"] == json.loads(json.dumps(combined_aggregates(ref), default=str))


@pytest.fixture(scope="module")
def day_stack(topics: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The API (with the viewer) as its own process, over an archive of one day."""
    from tests.helpers import start_api

    data = tmp_path_factory.mktemp("slider-data")
    day_archive(data / "archive", READINGS, snapshot_every=2_000)
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=topics, PLIETSCH_DATA_DIR=str(data),
               PLIETSCH_HEALTH_LAG_LIMIT="0")  # no worker here for /health to watch
    env.pop("PLIETSCH_REGION_PACK", None)  # the bundled pack, as the archive
    proc, url = start_api(env, data / "api.log", 90)
    try:
        yield url, data / "archive"
    finally:
        proc.terminate()
        proc.wait(20)


async def _open(browser: Any, url: str) -> tuple[Any, list[str]]:
    page = await browser.new_page(viewport={"width": 1280, "height": 800}, extra_http_headers=OPERATOR)  # an operator
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    await page.goto(f"{url}/?view=gaarden")
    try:
        await page.wait_for_function("() => window.plietsch && window.plietsch.ready && window.plietschSlider.ready",
                                     timeout=90_000)
    except Exception as exc:
        raise AssertionError(f"the viewer did not get ready: {problems}") from exc
    return page, problems


async def _settle(page: Any, position: int) -> dict[str, Any]:
    await page.wait_for_function(SETTLED, arg=position, timeout=60_000)
    drawn: dict[str, Any] = await page.evaluate(DRAWN)
    return drawn


async def test_the_slider_scrubs_a_day_by_keyboard_and_drag_and_draws_the_state_at_each_position(
        browser: Any, day_stack: tuple[str, Path], tmp_path: Path) -> None:
    url, archive = day_stack
    page, problems = await _open(browser, url)
    names = await page.evaluate("Object.fromEntries(Object.entries(window.PlietschView.sensorEntities)"
                                ".map(([id, e]) => [id, e.name]))")
    top = int(await page.get_attribute("#slider", "max"))
    assert top >= 280  # a day in 5-minute steps
    slider = page.locator("#slider")
    assert await page.evaluate("document.getElementById('slider').labels[0].textContent") == "Zeitpunkt"
    await slider.focus()
    walk: list[int] = []
    seen: list[dict[str, Any]] = []
    offline = 0
    with httpx.Client(base_url=url, timeout=60, headers=OPERATOR) as c:
        async def check(position: int) -> None:
            nonlocal offline
            drawn = await _settle(page, position)
            snap = c.get("/history/state", params={"time": drawn["at"]}).json()
            _check_drawn(drawn, snap, names)
            # what the page fetches: the same state with only the running windows (by the panel's rule)
            running = c.get("/history/state", params={"time": drawn["at"], "aggregates": "running"}).json()
            assert set(running.pop("aggregates")) == set(_current_windows(snap)), drawn["at"]
            assert running == {k: v for k, v in snap.items() if k != "aggregates"}
            assert re.fullmatch(r"\w\w\., \d\d\.\d\d\.\d{4}, \d\d:\d\d (MESZ|MEZ)", drawn["label"]), drawn["label"]
            assert drawn["valuetext"] == drawn["label"]
            if position % 96 == 48:  # a few positions against the offline fold as well
                _check_offline(snap, archive)
                offline += 1
            walk.append(position)
            seen.append({"position": position, "at": drawn["at"], "alerts": len(drawn["alerts"]),
                         "municipal": len(drawn["municipal"]), "aggregates": len(drawn["aggregates"])})

        # keyboard: Home, then an hour per PageUp, and a step back and forth with the arrows on the way
        await page.keyboard.press("Home")
        await check(0)
        pos = 0
        while pos + 12 <= top:
            await page.keyboard.press("PageUp")
            pos += 12
            await check(pos)
            if pos in (36, 156):
                await page.keyboard.press("ArrowRight")
                await check(pos + 1)
                await page.keyboard.press("ArrowLeft")
                await check(pos)
        # drag: press on the thumb's track and move across several positions, release; the last position wins
        box = await slider.bounding_box()
        y = box["y"] + box["height"] / 2
        for frac_from, frac_to in ((0.1, 0.45), (0.8, 0.55), (0.3, 0.62)):
            await page.mouse.move(box["x"] + box["width"] * frac_from, y)
            await page.mouse.down()
            for k in range(1, 9):
                await page.mouse.move(box["x"] + box["width"] * (frac_from + (frac_to - frac_from) * k / 8), y)
                await page.wait_for_timeout(30)
            await page.mouse.up()
            await check(int(await slider.input_value()))
    assert len(walk) >= 24 and offline >= 2
    # the day had a storm surge (alerts raised and cleared) and municipal events: the walk saw them come and go
    assert max(s["alerts"] for s in seen) > 0 and seen[0]["alerts"] == 0
    assert max(s["municipal"] for s in seen) > seen[0]["municipal"]
    assert all(s["aggregates"] > 0 for s in seen[1:])
    paints = await page.evaluate("window.plietschSlider.paints")
    assert [p["position"] for p in paints if p["position"] in walk][-1] == walk[-1]
    out = tmp_path / "slider-timings.json"
    out.write_text(json.dumps({"readings": READINGS, "day": DAY.date().isoformat(), "positions": walk,
                               "paints": paints}, indent=1))
    ms = sorted(p["input_to_paint_ms"] for p in paints)
    print(f"\nslider: {len(paints)} positions painted, input to paint p50 {ms[len(ms) // 2]:.0f} ms, "
          f"max {ms[-1]:.0f} ms (loaded test machine; figures: bench/slider.py); {out}")
    assert problems == [], problems


async def test_the_newest_position_wins_errors_are_german_live_returns_and_axe_finds_nothing(
        browser: Any, day_stack: tuple[str, Path]) -> None:
    url, archive = day_stack
    page, problems = await _open(browser, url)
    slider = page.locator("#slider")
    await slider.focus()
    await page.keyboard.press("Home")
    await _settle(page, 0)

    # a slow response is overtaken by the next one: it is dropped, never painted over the newer state
    held = asyncio.Event()
    first = True

    async def slow_first(route: Any) -> None:
        nonlocal first
        if first:
            first = False
            held.set()
            await asyncio.sleep(2.5)
        await route.continue_()

    await page.route("**/history/state?*", slow_first)
    await page.keyboard.press("PageUp")  # position 12: its answer is held back
    await asyncio.wait_for(held.wait(), 30)
    await page.keyboard.press("PageUp")  # position 24 overtakes it
    await _settle(page, 24)
    await page.wait_for_function("() => window.plietschSlider.dropped >= 1", timeout=30_000)
    drawn = await page.evaluate(DRAWN)
    assert drawn["position"] == 24 and drawn["slider"] == 24
    paints = [p["position"] for p in await page.evaluate("window.plietschSlider.paints")]
    assert 12 not in paints and paints[-1] == 24, paints
    await page.unroute("**/history/state?*")

    # accessibility of the page in time travel (panels open), with axe-core
    # (served as a same-origin file: the page's Content-Security-Policy refuses inline scripts, rightly)
    await page.route("**/static/__axe.min.js", lambda route: route.fulfill(path=AXE, content_type="text/javascript"))
    await page.add_script_tag(url="/static/__axe.min.js")
    result = await page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    violations = [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:5]) for v in result["violations"]]
    assert violations == [], violations

    # the API says no (the archive is gone): a clear error in German, then the archive is back and so is the state
    archive.rename(archive.with_name("archive-away"))
    try:
        await page.keyboard.press("ArrowRight")
        await page.wait_for_function("() => window.plietschSlider.error !== null && !window.plietschSlider.loading",
                                     timeout=30_000)
        text = await page.inner_text("#time-error")
        assert "Zeitreise nicht möglich" in text and "HTTP 404" in text and "plietsch archive" in text, text
        assert await page.get_attribute("#time-error", "role") == "alert"
    finally:
        archive.with_name("archive-away").rename(archive)
    await page.keyboard.press("ArrowRight")
    await _settle(page, 26)
    assert await page.inner_text("#time-error") == ""

    # back to live: the stream's snapshot replaces the state of the past
    await page.click("#live")
    await page.wait_for_function("() => window.plietsch.live && window.plietschSlider.mode === 'live'", timeout=60_000)
    assert await page.is_hidden("#at") and await page.is_disabled("#live")
    assert await page.inner_text("#time-label") == "live"
    assert [p for p in problems if "404" not in p] == [], problems  # the refused request is logged by Chromium


async def test_the_scene_renders_on_request_only_and_a_painted_position_is_complete_on_screen(
        browser: Any, day_stack: tuple[str, Path]) -> None:
    """Cesium's request-render mode: no frame while nothing changes; a position counts as painted (``paints``, what
    bench/slider.py times) only once a frame with all of it is on the screen: a frame forced afterwards (and a new
    screenshot) shows nothing more, also at the surge's peak, where the sea, coast colours and buildings change."""
    import io

    import numpy as np
    from PIL import Image

    def pixels(png: bytes) -> Any:
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

    url, _archive = day_stack
    page, problems = await _open(browser, url)
    assert await page.evaluate("window.PlietschView.viewer.scene.requestRenderMode") is True
    slider = page.locator("#slider")
    await slider.focus()
    await page.keyboard.press("Home")
    await _settle(page, 0)
    night = pixels(await page.screenshot())
    frames = await page.evaluate("window.plietsch.frames")
    await page.wait_for_timeout(1500)  # nothing changes: nothing is rendered
    assert await page.evaluate("window.plietsch.frames") == frames
    assert pixels(await page.screenshot()).tolist() == night.tolist()

    # 13:00 UTC, the surge's peak: the sea stands higher, coast segments and buildings near them change colour
    peak = 13 * 12
    await page.eval_on_selector("#slider", f"(el) => {{ el.value = {peak}; el.dispatchEvent(new Event('input')); }}")
    drawn = await _settle(page, peak)
    assert any(c["colour"] != "#2ecc71" and c["colour"] != "#95a5a6" for c in drawn["coast"].values()), drawn["coast"]
    record = (await page.evaluate("window.plietschSlider.paints"))[-1]
    assert record["position"] == peak and record["frames"] >= 1
    shown = pixels(await page.screenshot())
    assert float((np.abs(shown - night).sum(axis=2) > 40).mean()) > 0.001, "the peak looks like the night"
    await page.evaluate("window.PlietschView.viewer.scene.forceRender()")
    await page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    again = pixels(await page.screenshot())
    differs = float((np.abs(again - shown).sum(axis=2) > 0).mean())
    assert differs == 0.0, f"a frame forced after the position was painted changed {differs:.4%} of the pixels"
    assert problems == [], problems
