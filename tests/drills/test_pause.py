"""Transient is not poison (issue 9, item 4): the broker process paused with SIGSTOP for 20 s under load and then
continued. No dead letters, every process still running, processing resumes, the lag is shown on the worker's /metrics
and /health right after the pause and drains to 0, and the twin equals the offline fold."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from infra.broker import EmbeddedBroker
from streams.catalogue import DEAD_LETTERS
from streams.consume import drain
from tests.credentials import OPERATOR
from tests.drills import kit
from tests.helpers import Worker, wait_for
from twin.region import load_pack

pytestmark = [pytest.mark.broker, pytest.mark.drill]

PAUSE_S = 20.0
ROUNDS = 300 if kit.FULL else 80  # x 230 sensors
DURATION_S = 90.0 if kit.FULL else 40.0


def _worker_metrics(w: Worker) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{w.port}/metrics", timeout=3).text
    except httpx.HTTPError:
        return ""


def _worker_lag(w: Worker) -> int:
    try:
        return int(httpx.get(f"http://127.0.0.1:{w.port}/health", timeout=3).json()["lag"])
    except (httpx.HTTPError, ValueError, KeyError):
        return 0


def _api_lag(api: kit.Api) -> int:
    try:
        return int(sum(httpx.get(f"{api.url}/health", timeout=3, headers=OPERATOR).json()["read_model"]["lag"].values()))
    except (httpx.HTTPError, ValueError, KeyError):
        return 0


def test_a_paused_broker_is_transient_not_poison(broker: EmbeddedBroker, big_pack_dir: Path, tmp_path: Path) -> None:
    bootstrap = broker.bootstrap_servers
    pack = load_pack(big_pack_dir)
    app_id = f"plietsch-pause-{uuid.uuid4().hex[:6]}"
    worker = Worker(bootstrap, big_pack_dir, app_id)
    api = kit.Api(bootstrap, big_pack_dir, tmp_path / "data", tmp_path / "api.log")
    worker.start()
    api.start()
    feeder = kit.Feeder(bootstrap, pack, ROUNDS, DURATION_S, seed=7)
    feeder.pub.max_datums = 5  # small records: a backlog of many records after the pause, which the lag must show
    feeder.start()
    pid = broker._proc.pid  # type: ignore[union-attr]
    try:
        wait_for(lambda: kit.metric(_worker_metrics(worker), "plietsch_worker_datums_total") > 0, 120,
                 "the worker to process readings before the pause")
        time.sleep(5)
        sent_before = feeder.sent
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(PAUSE_S)
        finally:
            os.kill(pid, signal.SIGCONT)
        print(f"broker paused {PAUSE_S:.0f} s with {sent_before} of {feeder.total} readings sent")
        seen = {"metrics": 0.0, "health": 0, "api": 0}
        until = time.monotonic() + 30
        while time.monotonic() < until and not (seen["metrics"] and seen["health"]):
            seen["metrics"] = max(seen["metrics"], kit.metric(_worker_metrics(worker), "plietsch_worker_consumer_lag"))
            seen["health"] = max(seen["health"], _worker_lag(worker))
            seen["api"] = max(seen["api"], _api_lag(api))
            time.sleep(0.2)
        print(f"lag shown right after the pause: worker /metrics {seen['metrics']:.0f} records, worker /health "
              f"{seen['health']}, API /health (read model) {seen['api']}")
        feeder.join(DURATION_S + 300)
        want = kit.offline(pack, kit.produced(bootstrap))
        kit.settle(bootstrap, app_id, pack, want, 300, "after the pause\n" + worker.output()[-1500:])
        assert seen["metrics"] > 0, "the worker's /metrics showed no consumer lag after the pause"
        assert seen["health"] > 0, "the worker's /health showed no consumer lag after the pause"
        wait_for(lambda: kit.metric(_worker_metrics(worker), "plietsch_worker_consumer_lag") == 0, 60,
                 "the worker's lag to drain to 0")
        wait_for(lambda: _worker_lag(worker) == 0, 60, "the worker's /health lag to drain to 0")
        wait_for(lambda: _api_lag(api) == 0, 60, "the API's lag to drain to 0")
        assert worker.alive(), worker.output()
        assert api.alive(), Path(api.log).read_text()[-2000:]
        dead = list(drain(bootstrap, DEAD_LETTERS.name, missing_ok=True))
        assert not dead, f"{len(dead)} dead letters after a transient pause: {[dict(d.headers() or []) for d in dead[:3]]}"
        assert kit.metric(_worker_metrics(worker), "plietsch_worker_dead_letters_total") == 0
        health = httpx.get(f"{api.url}/health", timeout=5, headers=OPERATOR)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    finally:
        os.kill(pid, signal.SIGCONT)
        api.stop()
        worker.stop()
