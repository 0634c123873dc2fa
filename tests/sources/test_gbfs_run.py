"""``plietsch run`` with GBFS configured: it starts the GBFS source, a station status served by a local GBFS 3.0 feed
reaches the twin (the API shows the bike station sensor's bikes and docks), Ctrl-C stops the source."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.broker import free_port
from tests.credentials import OPERATOR
from tests.helpers import ROOT, metric, wait_for
from tests.sources.test_gbfs_source import SENSORS, STATIONS, T0, FakeGbfs

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
    api_port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(PLIETSCH_DATA_DIR=str(tmp_path / "data"), PLIETSCH_WEB_PORT=str(free_port()), PYTHONUNBUFFERED="1",
               PLIETSCH_APP_ID="plietsch-gbfs-run", PLIETSCH_GBFS_URL=feed.url, PLIETSCH_GBFS_STATIONS=str(stations),
               PLIETSCH_GBFS_METRICS_PORT=str(metrics_port))
    log = tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--no-simulate", "--api-port", str(api_port)],
                            cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: metric(metrics_port, "plietsch_gbfs_readings_published_total") == 1, 120,
                 "the GBFS source of 'plietsch run' to publish\n" + log.read_text()[-2000:])
        values = wait_for(lambda: reported(f"http://127.0.0.1:{api_port}", SENSORS[0]), 120,
                          "the twin to show the station's status\n" + log.read_text()[-2000:])
        assert values == {"bikes_available": 7, "docks_available": 4}
        assert f"GBFS     {feed.url}, stations {stations}" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
        feed.close()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert metric(metrics_port, "plietsch_gbfs_up") is None  # the source stopped with the rest
