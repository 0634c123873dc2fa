"""``plietsch run`` with GBFS configured: it starts the GBFS source, a station status served by a local GBFS 3.0 feed
reaches the twin (the API shows the bike station sensor's bikes and docks), Ctrl-C stops the source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.broker import free_port
from tests.credentials import OPERATOR
from tests.helpers import metric, wait_for
from tests.sources.test_gbfs_source import SENSORS, STATIONS, T0, FakeGbfs
from tests.sources.threaded import plietsch_run

pytestmark = pytest.mark.broker


def reported(api: str, sensor: str) -> dict[str, Any] | None:
    """The values the API reports for *sensor*, None while it has none (or does not answer)."""
    try:
        r = httpx.get(f"{api}/entities/{sensor}", timeout=5, headers=OPERATOR)
    except httpx.HTTPError:
        return None
    got = r.json()["properties"].get("reported") if r.status_code == 200 else None
    return (got or {}).get("values") or None


def test_make_run_with_gbfs_configured(tmp_path: Path) -> None:
    feed = FakeGbfs()
    feed.docs["station_status"] = FakeGbfs.status({STATIONS[0]: (7, 4)}, T0)
    stations = tmp_path / "stations.json"
    stations.write_text(json.dumps({"system": "run", "stations": {STATIONS[0]: SENSORS[0]}}))
    metrics_port = free_port()
    try:
        with plietsch_run(tmp_path, "plietsch-gbfs-run", {
                "PLIETSCH_GBFS_URL": feed.url, "PLIETSCH_GBFS_STATIONS": str(stations),
                "PLIETSCH_GBFS_METRICS_PORT": str(metrics_port)}) as (api, log):
            wait_for(lambda: metric(metrics_port, "plietsch_gbfs_readings_published_total") == 1, 120,
                     "the GBFS source of 'plietsch run' to publish\n" + log.read_text()[-2000:])
            values = wait_for(lambda: reported(api, SENSORS[0]), 120,
                              "the twin to show the station's status\n" + log.read_text()[-2000:])
            assert values == {"bikes_available": 7, "docks_available": 4}
            assert f"GBFS     {feed.url}, stations {stations}" in log.read_text()
    finally:
        feed.close()
    assert metric(metrics_port, "plietsch_gbfs_up") is None  # the source stopped with the rest
