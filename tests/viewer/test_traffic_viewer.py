"""The viewer colours roads by v/c and by difference for a traffic scenario, with a legend and its settings; over a
storm surge it shows water and congestion together. Real headless Chromium over the real stack."""

from __future__ import annotations

import re
from typing import Any

import httpx
import numpy as np
import pytest

from tests.credentials import OPERATOR
from tests.helpers import wait_for
from tests.viewer.test_browser import _open, _pixels

pytestmark = [pytest.mark.browser, pytest.mark.broker]


def _completed(c: httpx.Client, path: str, body: dict[str, Any]) -> str:
    r = c.post(path, json=body)
    assert r.status_code == 202, r.text
    sid: str = r.json()["id"]
    wait_for(lambda: c.get(f"/scenarios/{sid}").status_code == 200 and c.get(f"/scenarios/{sid}").json()["status"] == "completed",
             180, f"scenario {sid}")
    return sid


async def _ready(page: Any, problems: list[str]) -> None:
    try:
        await page.wait_for_function("() => window.plietsch.ready && window.plietsch.traffic && window.plietsch.traffic.ready",
                                     timeout=90_000)
    except Exception as exc:
        raise AssertionError(f"{problems} {await page.evaluate('window.plietsch.errors')}") from exc


async def test_viewer_colours_roads_by_vc_and_by_difference(browser: Any, api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=60, headers=OPERATOR) as c:
        network = c.get("/traffic/network").json()
        gaarden_primary = sorted({f["properties"]["road"] for f in network["features"]
                                  if f["properties"]["road_class"] == "primary" and ":gaarden:" in f["properties"]["road"]})
        sid = _completed(c, "/scenarios/traffic", {"name": "viewer", "closures": gaarden_primary[:4],
                                                   "extra_demand": [{"zone": "kiel:gaarden:neighbourhood:gaarden", "trips": 2500}]})
    page, problems = await _open(browser, f"{api_url}/?view=gaarden&scenario={sid}")
    await _ready(page, problems)
    t = await page.evaluate("window.plietsch.traffic")
    assert t["mode"] == "vc" and t["links"] > 500 and t["closed"] > 0
    assert t["colours"]["#1c1c1c"] == t["closed"]  # closed links are drawn dark
    assert len(t["colours"]) >= 3, t["colours"]  # more than one v/c class shows
    legend = await page.inner_text("#traffic-legend")
    assert "volume / capacity" in legend and "> 1.0" in legend and "closed" in legend
    facts = await page.inner_text("#traffic-facts")
    assert "4 closure(s)" in facts and "+2500 trips to gaarden" in facts and "SYNTHETIC" in facts and "Vehicle-hours" in facts
    await page.wait_for_timeout(1500)
    by_vc = _pixels(await page.screenshot())
    await page.click("#traffic-mode-diff")
    await page.wait_for_function("() => window.plietsch.traffic.mode === 'diff'", timeout=10_000)
    assert "change of volume" in await page.inner_text("#traffic-legend")
    colours = (await page.evaluate("window.plietsch.traffic"))["colours"]
    assert colours.get("#c0392b", 0) > 0, colours  # some roads take the displaced and the extra traffic
    await page.wait_for_timeout(1500)
    by_diff = _pixels(await page.screenshot())
    assert (np.abs(by_diff - by_vc).sum(axis=2) > 40).mean() > 0.001, "switching to the difference does not show"
    # with closures, the select-link part: here the closures cut a zone off, so what used them has no route left
    with httpx.Client(base_url=api_url, timeout=60, headers=OPERATOR) as c:
        feats = c.get(f"/scenarios/{sid}/traffic/links").json()["features"]
        sl = c.get(f"/scenarios/{sid}/summary").json()["select_link"]
    said = re.search(r"([\d.]+) trips used them in the baseline; ([\d.]+) found another route, ([\d.]+) have none",
                     await page.inner_text("#traffic-rerouted"))
    assert said is not None, await page.inner_text("#traffic-rerouted")
    assert [float(x) for x in said.groups()] == [sl["displaced_trips"], sl["displaced_trips_rerouted"],
                                                 sl["displaced_trips_unreachable"]]
    assert problems == [], problems
    await page.context.close()
    # the busiest open road closed alone: its traffic finds other roads, and the rerouted view shows which
    busiest = max((f for f in feats if not f["properties"]["closed"]), key=lambda f: f["properties"]["volume_before"])
    with httpx.Client(base_url=api_url, timeout=60, headers=OPERATOR) as c:
        sid = _completed(c, "/scenarios/traffic", {"name": "viewer-select-link", "closures": [busiest["id"]]})
        feats = c.get(f"/scenarios/{sid}/traffic/links").json()["features"]
        sl = c.get(f"/scenarios/{sid}/summary").json()["select_link"]
    assert sl["displaced_trips_rerouted"] > 0, sl
    page, problems = await _open(browser, f"{api_url}/?view=gaarden&scenario={sid}")
    await _ready(page, problems)
    await page.click("#traffic-mode-rerouted")
    await page.wait_for_function("() => window.plietsch.traffic.mode === 'rerouted'", timeout=10_000)
    assert "where the closed roads' traffic went" in await page.inner_text("#traffic-legend")
    colours = (await page.evaluate("window.plietsch.traffic"))["colours"]
    carrying = sum(1 for f in feats if not f["properties"]["closed"] and f["properties"]["displaced_volume"] >= 0.5)
    assert carrying > 0 and sum(n for css, n in colours.items() if css not in ("#d5d8dc", "#1c1c1c")) == carrying, colours
    assert colours["#1c1c1c"] == 1  # the one closed link
    assert problems == [], problems


async def test_viewer_shows_water_and_congestion_together(browser: Any, api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=60, headers=OPERATOR) as c:
        flood = _completed(c, "/scenarios", {"name": "surge", "preset": "kiel-2023-10-20", "duration_h": 24, "sea_level_rise_m": 1.0})
        sid = _completed(c, "/scenarios/traffic", {"name": "surge traffic", "closures_from_flood": flood})
    page, problems = await _open(browser, f"{api_url}/?view=friedrichsort&scenario={flood}&traffic={sid}")
    await _ready(page, problems)
    assert await page.evaluate("window.plietsch.scenarioStep") == 0  # the surge's water
    assert await page.evaluate("window.plietsch.traffic.closed") > 0  # and the roads it cuts, closed in the traffic run
    assert "roads cut by" in await page.inner_text("#traffic-facts")
    assert problems == [], problems
