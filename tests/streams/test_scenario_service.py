"""The scenario service (issue 15 item 4): scenarios in a process of their own at a lower CPU priority, a queued run
cancelled at once, nothing lost after a crash, a stop reported as failed with what to do. On a broker of its own (the
session's has its own scenario service beside the session's worker, which would run these requests too).

A run's length depends on the terrain and the machine (the bundled pack's runs take a second on a fresh clone), so the
tests do not wait on it: they freeze the runner process (SIGSTOP) where they need a run in hand, and let it go on
(SIGCONT) after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Producer

from infra.broker import EmbeddedBroker
from schemas.codec import SingleObjectCodec
from streams.catalogue import DEAD_LETTERS, SCENARIO_REQUESTS, SCENARIO_RESULTS, ensure_topics
from streams.consume import drain
from streams.scenario_service import STOPPED, STOPPED_QUEUED, ScenarioService
from streams.serde import encode_event
from tests.helpers import ROOT, wait_for
from twin.events import ScenarioCancelRequested, ScenarioRequested

pytestmark = pytest.mark.broker
CODEC = SingleObjectCodec()
LONG = {"curve": [{"hour": 0, "level_m": 0.5}, {"hour": 120, "level_m": 2.5}], "duration_h": 120, "step_minutes": 15}
SHORT = {"preset": "kiel-2023-10-20", "duration_h": 6, "step_minutes": 60}


@pytest.fixture
def broker() -> Iterator[str]:
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap_servers)
        yield b.bootstrap_servers


def _sid() -> str:
    return f"kiel:_:scenario:{uuid.uuid4().hex[:12]}"


def _send(bootstrap: str, *events: ScenarioRequested | ScenarioCancelRequested, raw: bytes | None = None) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for e in events:
        p.produce(SCENARIO_REQUESTS.name, key=e.entity_id.encode(), value=encode_event(CODEC, e))
    if raw is not None:
        p.produce(SCENARIO_REQUESTS.name, key=b"junk", value=raw)
    assert p.flush(10) == 0


def _request(sid: str, body: dict) -> ScenarioRequested:
    return ScenarioRequested(entity_id=sid, region="kiel", occurred_at=datetime.now(UTC), source="test",
                             request_json=json.dumps(body))


def _cancel(sid: str) -> ScenarioCancelRequested:
    return ScenarioCancelRequested(entity_id=sid, region="kiel", occurred_at=datetime.now(UTC), source="test")


def _statuses(bootstrap: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for m in drain(bootstrap, SCENARIO_RESULTS.name, missing_ok=True):
        _, rec = CODEC.decode(m.value())
        out.setdefault(rec["entity_id"], []).append((rec["status"], rec["message"]))
    return out


def _last(bootstrap: str, sid: str) -> str | None:
    seen = _statuses(bootstrap).get(sid)
    return seen[-1][0] if seen else None


def _service(bootstrap: str, app_id: str, data: Path) -> tuple[ScenarioService, threading.Thread]:
    service = ScenarioService(bootstrap, app_id, ROOT / "twin" / "regions" / "kiel", data, CODEC)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    return service, thread


def _runner(service: ScenarioService) -> psutil.Process:
    """The service's runner process, once it is started."""
    wait_for(lambda: service._child is not None and service._child.pid, 30, "the runner process")
    return psutil.Process(service._child.pid)


def test_a_queued_run_is_cancelled_at_once_and_bad_records_become_dead_letters(broker: str, tmp_path: Path) -> None:
    first, queued, after = _sid(), _sid(), _sid()
    service, thread = _service(broker, f"svc-{uuid.uuid4().hex[:6]}", tmp_path)
    runner = _runner(service)
    runner.suspend()  # a run in hand that takes as long as the test needs
    try:
        _send(broker, _request(first, LONG), _request(queued, SHORT), raw=b"\x00not a scenario request")
        wait_for(lambda: _last(broker, first) == "queued" and _last(broker, queued) == "queued", 60, "both queued")
        assert _statuses(broker)[queued] == [("queued", "queued: 1 run(s) ahead")]
        wait_for(lambda: service.running is not None, 10, "the first run handed to the runner")
        _send(broker, _cancel(queued), _request(after, SHORT))
        wait_for(lambda: _last(broker, queued) == "cancelled", 20, "the queued run's cancellation")  # the runner is busy
        assert _statuses(broker)[queued][-1] == ("cancelled", "cancelled on request before it started")
        _send(broker, _cancel(first))
        wait_for(lambda: service.stats["cancels"] == 2, 20, "the second cancel read")
        runner.resume()
        wait_for(lambda: _last(broker, after) == "completed", 180, "the run after the cancelled ones")
        statuses = _statuses(broker)
        assert statuses[first][-1][0] == "cancelled", statuses[first]
        assert all(s != "running" for s, _ in statuses[queued])  # it never started
        dead = [m for m in drain(broker, DEAD_LETTERS.name, missing_ok=True) if m.key() == SCENARIO_REQUESTS.name.encode()]
        assert len(dead) == 1, [dict(m.headers()) for m in dead]
        assert "Avro single-object" in dict(dead[0].headers())["reason"].decode()
    finally:
        runner.resume()
        service.stop()
        thread.join(60)


def test_a_stop_ends_the_unfinished_runs_as_failed_and_a_restart_does_not_run_them(broker: str, tmp_path: Path) -> None:
    app_id = f"svc-{uuid.uuid4().hex[:6]}"
    running, queued, later = _sid(), _sid(), _sid()
    service, thread = _service(broker, app_id, tmp_path)
    runner = _runner(service)
    runner.suspend()
    _send(broker, _request(running, LONG), _request(queued, SHORT))
    try:
        wait_for(lambda: _last(broker, queued) == "queued" and service.running is not None, 60, "a run in hand, one queued")
    finally:
        service.stop()
        runner.resume()  # it sees the cancel at its first step and ends
        thread.join(90)
    assert not thread.is_alive()
    statuses = _statuses(broker)
    assert statuses[running][-1] == ("failed", STOPPED) and statuses[queued][-1] == ("failed", STOPPED_QUEUED)
    again, thread = _service(broker, app_id, tmp_path)  # the same group: goes on after the committed offset
    try:
        _send(broker, _request(later, SHORT))
        wait_for(lambda: _last(broker, later) == "completed", 180, "a run asked for after the restart")
    finally:
        again.stop()
        thread.join(60)
    statuses = _statuses(broker)
    assert statuses[running][-1][0] == "failed" and statuses[queued][-1][0] == "failed"  # not run again


def test_a_killed_service_runs_the_unfinished_request_again_at_a_lower_priority(broker: str, tmp_path: Path) -> None:
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=broker, PLIETSCH_APP_ID=f"svc-{uuid.uuid4().hex[:6]}",
               PLIETSCH_DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    log = tmp_path / "scenarios.log"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", "scenarios"], cwd=ROOT, env=env,
                                stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def runner_of(proc: subprocess.Popen[bytes]) -> psutil.Process:
        def find() -> list[psutil.Process]:  # the spawned runner (multiprocessing's resource tracker is another child)
            return [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())
                    and "resource_tracker" not in " ".join(c.cmdline())]
        return wait_for(find, 60, f"the runner process: {log.read_text()[-2000:]}")[0]  # type: ignore[no-any-return]

    sid = _sid()
    proc = start()
    try:
        runner = runner_of(proc)
        assert runner.nice() >= os.getpriority(os.PRIO_PROCESS, 0) + 10  # below the worker (and the test)
        runner.suspend()  # the run stays in its hands until the kill
        _send(broker, _request(sid, SHORT))
        wait_for(lambda: _last(broker, sid) == "queued", 90, "the request read and handed to the runner")
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)  # the service dies with the run in hand, its offset not committed
        proc.wait(10)
        runner.resume()
        runner.wait(30)  # the runner ends with its service: no orphan
        proc = start()
        wait_for(lambda: _last(broker, sid) == "completed", 180, f"the run again after the kill: {log.read_text()[-2000:]}")
        assert (tmp_path / "scenarios" / sid.split(":")[-1] / "summary.json").is_file()
    finally:
        proc.terminate()
        proc.wait(30)
