"""The scenario service (issue 15 item 4): scenarios in a process of their own at a lower CPU priority, a queued run
cancelled at once, nothing lost after a crash, a stop reported as failed with what to do. On a broker of its own (the
session's has its own scenario service beside the session's worker, which would run these requests too)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

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


def test_a_queued_run_is_cancelled_at_once_and_bad_records_become_dead_letters(broker: str, tmp_path: Path) -> None:
    long, queued, after = _sid(), _sid(), _sid()
    service, thread = _service(broker, f"svc-{uuid.uuid4().hex[:6]}", tmp_path)
    try:
        _send(broker, _request(long, LONG), _request(queued, SHORT), raw=b"\x00not a scenario request")
        wait_for(lambda: _last(broker, long) == "running" and _last(broker, queued) == "queued", 60,
                 "the long run to start and the second to be queued")
        assert _statuses(broker)[queued] == [("queued", "queued: 1 run(s) ahead")]
        _send(broker, _cancel(queued), _request(after, SHORT))
        wait_for(lambda: _last(broker, queued) == "cancelled", 20, "the queued run's cancellation")
        assert _last(broker, long) == "running"  # cancelled while the first still runs: not when its turn comes
        assert _statuses(broker)[queued][-1] == ("cancelled", "cancelled on request before it started")
        _send(broker, _cancel(long))
        wait_for(lambda: _last(broker, after) == "completed", 180, "the run after the cancelled ones")
        statuses = _statuses(broker)
        assert statuses[long][-1][0] == "cancelled", statuses[long]
        assert all(s != "running" for s, _ in statuses[queued])  # it never started
        dead = [m for m in drain(broker, DEAD_LETTERS.name, missing_ok=True) if m.key() == SCENARIO_REQUESTS.name.encode()]
        assert len(dead) == 1, [dict(m.headers()) for m in dead]
        assert "Avro single-object" in dict(dead[0].headers())["reason"].decode()
    finally:
        service.stop()
        thread.join(60)


def test_a_stop_ends_the_unfinished_runs_as_failed_and_a_restart_does_not_run_them(broker: str, tmp_path: Path) -> None:
    app_id = f"svc-{uuid.uuid4().hex[:6]}"
    running, queued, later = _sid(), _sid(), _sid()
    service, thread = _service(broker, app_id, tmp_path)
    _send(broker, _request(running, LONG), _request(queued, SHORT))
    try:
        wait_for(lambda: _last(broker, running) == "running" and _last(broker, queued) == "queued", 60, "the runs")
    finally:
        service.stop()
        thread.join(60)
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

    sid = _sid()
    proc = start()
    try:
        _send(broker, _request(sid, SHORT))
        wait_for(lambda: _last(broker, sid) == "running", 90, "the run to start")
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10  # below the worker
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _last(broker, sid) == "running"
        proc = start()
        wait_for(lambda: _last(broker, sid) == "completed", 180, f"the run again after the kill: {log.read_text()[-2000:]}")
        assert (tmp_path / "scenarios" / sid.split(":")[-1] / "summary.json").is_file()
    finally:
        proc.terminate()
        proc.wait(30)
