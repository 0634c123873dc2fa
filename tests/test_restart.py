"""A restart of the embedded stack loses nothing: the archive is replayed into the new, empty broker on start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from infra.broker import free_port
from schemas.codec import SingleObjectCodec
from streams.archive import read_events
from streams.catalogue import SENSOR_TOPICS
from streams.publisher import EventPublisher
from streams.simulator import ReadingFactory
from tests.helpers import ROOT, wait_for
from twin.region import bundled_pack

pytestmark = pytest.mark.broker


def _start(data_dir: Path, api_port: int, broker_port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(PLIETSCH_DATA_DIR=str(data_dir), PLIETSCH_WEB_PORT=str(free_port()), PLIETSCH_APP_ID="plietsch-restart",
               PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--no-simulate", "--api-port", str(api_port),
                             "--broker-port", str(broker_port)], cwd=ROOT, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes], how: str = "ctrl-c") -> None:
    if how == "sigterm":  # to the 'run' process alone: it must stop its children and the broker itself
        proc.send_signal(signal.SIGTERM)
    else:  # Ctrl-C in a terminal signals the whole foreground group
        os.killpg(proc.pid, signal.SIGINT)
    proc.wait(60)


def _sensor_states(api: str, ids: list[str]) -> dict[str, dict]:
    out = {}
    for sid in ids:
        r = httpx.get(f"{api}/entities/{sid}", timeout=5)
        reported = r.json()["properties"].get("reported") if r.status_code == 200 else None
        if reported:
            out[sid] = {k: reported[k] for k in ("values", "observed_at", "last_event_id")}
    return out


def test_restart_replays_the_archive_and_keeps_the_state(tmp_path: Path) -> None:
    pack = bundled_pack()
    sensors = sorted(pack.sensors.values(), key=lambda s: s.id)[:30]
    ids = [s.id for s in sensors]
    api_port, broker_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    log = tmp_path / "stack.log"
    proc = _start(tmp_path / "data", api_port, broker_port, log)
    try:
        wait_for(lambda: _healthy(api), 90, "the first stack's API")
        factory = ReadingFactory(pack, seed=9)
        pub = EventPublisher(f"127.0.0.1:{broker_port}", SingleObjectCodec())
        t0 = datetime(2026, 2, 2, 7, 0, tzinfo=UTC)
        for i in range(5):
            for s in sensors:
                pub.add(SENSOR_TOPICS[s.sensor_kind].name, s.id, factory.reading(s, t0 + timedelta(minutes=i)))
        pub.flush()
        first = wait_for(lambda: (st := _sensor_states(api, ids)) and len(st) == len(ids) and
                         all(v["observed_at"].startswith("2026-02-02T07:04") for v in st.values()) and st,
                         90, "the readings in the first stack")
        wait_for(lambda: sum(1 for _ in read_events(tmp_path / "data" / "archive")) >= 5 * len(ids), 30, "the archive")
    finally:
        _stop(proc, "sigterm")
    assert proc.returncode == 0, log.read_text()[-3000:]
    leftovers = subprocess.run(["pgrep", "-f", f"tcp://127.0.0.1:{broker_port}|--api-port {api_port}"], capture_output=True, text=True)
    assert leftovers.stdout == "", f"processes left running after SIGTERM: {leftovers.stdout}"
    proc = _start(tmp_path / "data", api_port, broker_port, log)
    try:
        wait_for(lambda: _healthy(api), 90, "the second stack's API")
        second = wait_for(lambda: (st := _sensor_states(api, ids)) == first and st, 90, "the same state after restart")
        assert second == first
        assert "replayed 150 events" in log.read_text()
    finally:
        _stop(proc)
    archived = list(read_events(tmp_path / "data" / "archive"))
    assert len(archived) == 150  # the replay was not archived a second time


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).json().get("status") == "ok"
    except (httpx.HTTPError, ValueError):
        return False
