"""Issue 13 item 3 in real Chromium: the buses of GTFS-Realtime in the 3D viewer. The GTFS source takes VehiclePositions
feeds (SYNTHETIC schedule) and writes the buses to ``twin.updates`` of a broker of this module's own; the viewer draws
each bus from the live stream, moves it on the next position, lists it in the entity info panel, marks it SYNTHETISCH,
and leaves out (or takes off the map) a bus whose last position is stale; axe-core finds no serious or critical
violation in the bus panel."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from infra.broker import EmbeddedBroker
from schemas.codec import SingleObjectCodec
from streams.catalogue import ensure_topics
from streams.publisher import EventPublisher
from streams.sources.gtfs.source import GtfsSettings, GtfsSource
from streams.sources.gtfs.static import load_schedule
from tests.helpers import start_api
from tests.sources.test_gtfs_units import FIX, feed, vehicle
from tests.viewer.test_browser import _open, _until
from tests.viewer.test_kiosk import AXE
from twin.region import bundled_pack

pytestmark = [pytest.mark.browser, pytest.mark.broker]
BUS = "kiel:_:vehicle:bus-4711"
OLD_BUS = "kiel:_:vehicle:bus-0815"


@pytest.fixture(scope="module")
def bus_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, GtfsSource]]:
    """An API over a broker of its own (the buses stay out of the session's twin) and the GTFS source writing to it."""
    data = tmp_path_factory.mktemp("buses")
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        src = GtfsSource(GtfsSettings(static=FIX, stops="kiel-hbf"), load_schedule(FIX), bundled_pack(),
                         EventPublisher(broker.bootstrap_servers, SingleObjectCodec(), linger_ms=5))
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, PLIETSCH_DATA_DIR=str(data))
        env.pop("PLIETSCH_REGION_PACK", None)  # the bundled Kiel pack
        proc, url = start_api(env, data / "api.log", 90, lambda r: r.status_code in (200, 503))
        yield url, src
        proc.terminate()
        proc.wait(20)


def _where(entity_id: str) -> str:
    """The drawn position of the bus's Cesium entity, in degrees (lon, lat)."""
    return f"""(() => {{
        const e = window.PlietschView.viewer.entities.getById('{entity_id}');
        if (!e) return null;
        const c = Cesium.Cartographic.fromCartesian(e.position.getValue(Cesium.JulianDate.now()));
        return [Cesium.Math.toDegrees(c.longitude), Cesium.Math.toDegrees(c.latitude), e.billboard.rotation.getValue()];
    }})()"""


async def test_a_bus_of_the_feed_is_drawn_moves_and_a_stale_one_is_left_out(
        browser: Any, bus_api: tuple[str, GtfsSource], tmp_path: Path) -> None:
    url, src = bus_api
    now = int(datetime.now(UTC).timestamp())
    # a bus last heard of 10 minutes ago (past the viewer's 5 minutes), then the live one: the snapshot brings both
    src.take("vehicle_positions", feed(vehicle("e0", "0815", "syn-60-a-0615", 54.37, 10.16, now - 600), ts=now - 600))
    src.take("vehicle_positions", feed(vehicle("e1", "4711", "syn-11-a-1000", 54.3146, 10.139, now), ts=now))
    page, problems = await _open(browser, f"{url}/?view=gaarden")
    await _until(page, f"window.plietsch.ready && window.plietsch.live && window.plietsch.buses && "
                       f"window.plietsch.buses['{BUS}'] !== undefined", 120, "the bus in the viewer", problems)
    # the stale one came with the snapshot, and was left out
    assert await page.evaluate(f"window.plietsch.staleBuses['{OLD_BUS}']") == datetime.fromtimestamp(now - 600, UTC).isoformat()
    assert await page.evaluate("Object.keys(window.plietsch.buses)") == [BUS]  # the stale one is not drawn
    assert await page.evaluate(f"window.PlietschView.viewer.entities.getById('{OLD_BUS}') === undefined")
    lon, lat, rotation = await page.evaluate(_where(BUS))
    assert abs(lon - 10.139) < 1e-4 and abs(lat - 54.3146) < 1e-4
    assert abs(rotation + 3.14159 / 2) < 1e-3  # bearing 90 degrees (east): the arrow turned clockwise from north
    assert await page.evaluate(f"window.PlietschView.viewer.entities.getById('{BUS}').label.text.getValue()") == (
        "11 SYNTHETISCH")
    assert "1 Bus live" in await page.inner_text("#buses-count")
    assert await page.inner_text("#buses-synthetic") == "SYNTHETISCH: 1 davon aus erfundenen Testdaten, keine echten Busse."
    # the entity info panel (Cesium's info box) lists it like every other entity: selected, it names route and target
    await page.evaluate(f"window.PlietschView.viewer.selectedEntity = window.PlietschView.viewer.entities.getById('{BUS}')")
    await page.wait_for_function("() => document.querySelector('.cesium-infoBox-title').textContent.startsWith('Bus')")
    assert await page.inner_text(".cesium-infoBox-title") == (
        "Bus Linie 11 nach Friedrichsort, Fähre (SYNTHETISCH: erfundene Testdaten)")
    # the next position moves it
    src.take("vehicle_positions", feed(vehicle("e1", "4711", "syn-11-a-1000", 54.3201, 10.1377, now + 30), ts=now + 30))
    await _until(page, f"(window.plietsch.buses['{BUS}'] || {{}}).lat === 54.3201", 60, "the bus moved", problems)
    lon, lat, _ = await page.evaluate(_where(BUS))
    assert abs(lon - 10.1377) < 1e-4 and abs(lat - 54.3201) < 1e-4
    await page.screenshot(path=str(tmp_path / "viewer-bus.png"))
    # axe-core on what this adds: the bus panel
    await page.route("**/static/__axe.min.js", lambda route: route.fulfill(path=AXE, content_type="text/javascript"))
    await page.add_script_tag(url="/static/__axe.min.js")
    result = await page.evaluate("axe.run('#buses', { resultTypes: ['violations'] })")
    bad = [(v["id"], v["impact"], v["help"]) for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert bad == [], bad
    # no position for 5 minutes: the bus is taken off the map (the browser's clock moved on by 6 minutes)
    await page.evaluate("(() => { const now = Date.now; Date.now = () => now() + 360_000; })()")
    await _until(page, f"window.plietsch.buses['{BUS}'] === undefined", 30, "the stale bus removed", problems)
    assert await page.evaluate(f"window.PlietschView.viewer.entities.getById('{BUS}') === undefined")
    assert await page.evaluate("document.getElementById('buses').hidden")
    assert problems == [], problems
