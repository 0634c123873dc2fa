"""``plietsch run`` with PEGELONLINE configured: it starts the continuous source, a measurement served by a local
PEGELONLINE look-alike reaches the twin (the API shows the gauge's level above mean water), Ctrl-C stops the source."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from infra.broker import free_port
from tests.credentials import OPERATOR
from tests.helpers import ROOT, wait_for
from tests.streams.test_pegelonline_follow import HOLTENAU, FakePegelonline, rows

pytestmark = pytest.mark.broker

GAUGE = "kiel:_:sensor:gauge-holtenau"


def _metric(port: int, name: str) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return None


def _gauge_level(api: str) -> float | None:
    try:
        r = httpx.get(f"{api}/entities/{GAUGE}", timeout=5, headers=OPERATOR)
    except httpx.HTTPError:
        return None
    reported = r.json()["properties"].get("reported") if r.status_code == 200 else None
    return (reported or {}).get("values", {}).get("level_m")


def test_make_run_with_pegelonline_configured(tmp_path: Path) -> None:
    fake = FakePegelonline()
    fake.add_station(HOLTENAU, "9610066", "made-up-uuid-for-tests-0001")
    fake.rows["made-up-uuid-for-tests-0001"] = rows([590.0, 598.0])
    api_port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(PLIETSCH_DATA_DIR=str(tmp_path / "data"), PLIETSCH_WEB_PORT=str(free_port()), PYTHONUNBUFFERED="1",
               PLIETSCH_APP_ID="plietsch-pegelonline-run", PLIETSCH_PEGELONLINE_BASE_URL=fake.url,
               PLIETSCH_PEGELONLINE_STATIONS=f"9610066={GAUGE}", PLIETSCH_PEGELONLINE_METRICS_PORT=str(metrics_port))
    log = tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--no-simulate", "--api-port", str(api_port)],
                            cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _metric(metrics_port, "plietsch_pegelonline_readings_published_total") == 2, 120,
                 "the PEGELONLINE source of 'plietsch run' to publish\n" + log.read_text()[-2000:])
        level = wait_for(lambda: _gauge_level(f"http://127.0.0.1:{api_port}"), 120,
                         "the twin to show the gauge's reading\n" + log.read_text()[-2000:])
        assert level == pytest.approx(0.94)  # the newest: (598 - MW 504) / 100
        assert "PEGEL    http://127.0.0.1:" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
        fake.close()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert _metric(metrics_port, "plietsch_pegelonline_up") is None  # the source stopped with the rest
