"""``plietsch run`` with LoRaWAN configured: it starts its own Mosquitto and the LoRaWAN source, an uplink published to
that Mosquitto reaches the twin (the API shows the sensor's reading), and Ctrl-C stops Mosquitto and the source too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infra.broker import free_port
from streams.sources.lorawan.mosquitto import port_answers
from tests.helpers import ROOT, gauge_level, metric, wait_for
from tests.sources.test_lorawan_mqtt import TTS_APP, publish
from tests.sources.test_lorawan_units import FIX

pytestmark = pytest.mark.broker

GAUGE = "kiel:_:sensor:gauge-leuchtturm"


def test_make_run_with_lorawan_configured(tmp_path: Path) -> None:
    api_port, mqtt_port, metrics_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(PLIETSCH_DATA_DIR=str(tmp_path / "data"), PLIETSCH_WEB_PORT=str(free_port()), PYTHONUNBUFFERED="1",
               PLIETSCH_APP_ID="plietsch-lorawan-run", PLIETSCH_LORAWAN_REGISTRY=str(FIX / "registry.json"),
               PLIETSCH_LORAWAN_MOSQUITTO_PORT=str(mqtt_port), PLIETSCH_LORAWAN_METRICS_PORT=str(metrics_port))
    log = tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--no-simulate", "--api-port", str(api_port)],
                            cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: metric(metrics_port, "plietsch_lorawan_mqtt_connected") == 1, 120,
                 "the LoRaWAN source of 'plietsch run' to connect to its Mosquitto\n" + log.read_text()[-2000:])
        publish(mqtt_port, [(f"{TTS_APP}/gauge-leuchtturm/up", (FIX / "tts_water_level_gw1.json").read_bytes())])
        wait_for(lambda: metric(metrics_port, "plietsch_lorawan_readings_published_total") == 1, 60, "the reading")
        level = wait_for(lambda: gauge_level(f"http://127.0.0.1:{api_port}", GAUGE), 120,
                         "the twin to show the gauge's reading\n" + log.read_text()[-2000:])
        assert level == pytest.approx(0.96)
        assert "LoRaWAN  mqtt://127.0.0.1:" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert not port_answers(mqtt_port) and metric(metrics_port, "plietsch_lorawan_up") is None  # both stopped
