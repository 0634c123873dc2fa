"""``plietsch run`` with PEGELONLINE configured: it starts the continuous source, a measurement served by a local
PEGELONLINE look-alike reaches the twin (the API shows the gauge's level above mean water), Ctrl-C stops the source."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infra.broker import free_port
from tests.helpers import ROOT, gauge_level, metric, wait_for
from tests.streams.test_pegelonline_follow import HOLTENAU, FakePegelonline, rows

pytestmark = pytest.mark.broker

GAUGE = "kiel:_:sensor:gauge-holtenau"


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
        wait_for(lambda: metric(metrics_port, "plietsch_pegelonline_readings_published_total") == 2, 120,
                 "the PEGELONLINE source of 'plietsch run' to publish\n" + log.read_text()[-2000:])
        level = wait_for(lambda: gauge_level(f"http://127.0.0.1:{api_port}", GAUGE), 120,
                         "the twin to show the gauge's reading\n" + log.read_text()[-2000:])
        assert level == pytest.approx(0.94)  # the newest: (598 - MW 504) / 100
        assert "PEGEL    http://127.0.0.1:" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
        fake.close()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert metric(metrics_port, "plietsch_pegelonline_up") is None  # the source stopped with the rest
