"""Issue 13 item 3 in real Chromium: the Info-Cube's departure board slide (``/kiosk?stops=<stop_id>,...``) shows the
board the GTFS source wrote into the twin (SYNTHETIC schedule, a trip 3 minutes late, a service alert on its line),
in German, English and Danish, marked SYNTHETIC, with axe-core finding no serious or critical violation and touch
targets of at least 44 px."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.broker import EmbeddedBroker
from schemas.codec import SingleObjectCodec
from streams.catalogue import ensure_topics
from streams.publisher import EventPublisher
from streams.sources.gtfs.realtime import trip_updates
from streams.sources.gtfs.source import GtfsSettings, GtfsSource
from streams.sources.gtfs.static import load_schedule
from tests.helpers import start_api
from tests.sources.test_gtfs_source import today_trip
from tests.sources.test_gtfs_units import alert, feed, trip_update
from tests.viewer.test_kiosk import _axe, _page, _small_targets, _wait
from twin.region import bundled_pack

pytestmark = [pytest.mark.browser, pytest.mark.broker]


@pytest.fixture(scope="module")
def board_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API over a broker of its own (the stop entity stays out of the session's twin) after the GTFS source wrote
    the board of Kiel Hauptbahnhof into the twin."""
    data = tmp_path_factory.mktemp("departures")
    gtfs = today_trip(data / "gtfs", (10, 16))
    schedule = load_schedule(gtfs)
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        src = GtfsSource(GtfsSettings(static=gtfs, stops="kiel-hbf"), schedule, bundled_pack(),
                         EventPublisher(broker.bootstrap_servers, SingleObjectCodec(), linger_ms=5))
        trip_updates(feed(trip_update("n", "syn-11-now", (1, "gaarden-vinetaplatz", 180))), schedule, src.updates, {})
        src.take("alerts", feed(alert("works", route="syn-11", texts=(("de", "Baustelle: Umleitung"),
                                                                    ("en", "Road works: diversion")))))
        assert src.refresh_boards() == 1
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, PLIETSCH_DATA_DIR=str(data))
        env.pop("PLIETSCH_REGION_PACK", None)  # the bundled Kiel pack
        proc, url = start_api(env, data / "api.log", 90, lambda r: r.status_code in (200, 503))
        yield url
        proc.terminate()
        proc.wait(20)


async def test_the_kiosk_shows_the_departure_board_in_three_languages(browser: Any, board_api: str, tmp_path: Path) -> None:
    context, page, problems = await _page(browser, f"{board_api}/kiosk?stops=kiel-hbf&interval=600000&refresh=1000")
    await _wait(page, "window.kiosk.online && window.kiosk.boards['kiel-hbf'] !== undefined", 60, "the board", problems)
    await page.click("#prev")  # the last slide is the feedback counts, the board comes before it
    await page.click("#prev")
    await _wait(page, "window.kiosk.shown.includes('stop:kiel-hbf')", 10, "the board slide", problems)
    for lang, title, late in (("de", "Abfahrten: Kiel Hauptbahnhof (SYNTHETIC)", "(+3 min)"),
                              ("en", "Departures: Kiel Hauptbahnhof (SYNTHETIC)", "(+3 min)"),
                              ("da", "Afgange: Kiel Hauptbahnhof (SYNTHETIC)", "(+3 min)")):
        await page.click(f"button[data-lang={lang}]")
        assert await page.inner_text("#slide h1") == title
        rows = await page.eval_on_selector_all("table.board tbody tr", "rs => rs.map(r => r.innerText)")
        mine = [r for r in rows if "Friedrichsort (SYNTHETIC)" in r]
        assert len(mine) == 1 and mine[0].startswith("11") and late in mine[0], rows
        assert await page.inner_text(".synthetic-note") in (
            "SYNTHETISCH: erfundener Testfahrplan, keine echten Busse.",
            "SYNTHETIC: a made-up test timetable, no real buses.", "SYNTETISK: en opdigtet testkøreplan, ingen rigtige busser.")
        assert await page.inner_text(".stop-alert") == {
            "de": "Störung (Linie 11): Baustelle: Umleitung", "en": "Service alert (Line 11): Road works: diversion",
            "da": "Driftsmeddelelse (Linje 11): Road works: diversion"}[lang]  # Danish: the feed's English, marked so
        await page.screenshot(path=str(tmp_path / f"kiosk-departures-{lang}.png"))
        await _axe(page, f"departure board ({lang})")
        assert await _small_targets(page) == []
    assert await page.evaluate("document.querySelector('table.board tr.late') !== null")  # 3 minutes late: marked
    assert problems == [], problems
    await context.close()
