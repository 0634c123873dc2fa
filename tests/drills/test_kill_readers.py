"""Kill drill of the readers (issue 9, item 3): the API process and the archive sink (``plietsch archive``) are killed
with SIGKILL at seeded random moments while surges stream, and restarted. The restarted API rebuilds its read model:
/alerts and /entities equal the offline fold; every produced event is in the archive exactly once.

Bounded in ``make test`` (2 kills of each); ``PLIETSCH_DRILL=full``: 5 of each, 100,000 readings."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.broker import EmbeddedBroker
from streams.archive import read_events
from tests.credentials import OPERATOR
from tests.drills import kit
from tests.helpers import ROOT, Worker, wait_for
from twin.region import load_pack

pytestmark = [pytest.mark.broker, pytest.mark.drill]

KILLS = 5 if kit.FULL else 2  # of each
ROUNDS = 435 if kit.FULL else 60  # x 230 sensors
DURATION_S = 90.0 if kit.FULL else 30.0
SEED = int(os.environ.get("PLIETSCH_DRILL_SEED", "20261123")) + 1


class Sink:
    def __init__(self, bootstrap: str, pack_dir: Path, data_dir: Path, log: Path) -> None:
        self.env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_REGION_PACK=str(pack_dir),
                        PLIETSCH_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "archive", "--flush-every-s", "1"], cwd=ROOT,
                                     env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)


def _kill(proc: Any) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _entities(url: str, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    offset = 0
    while True:
        page = httpx.get(f"{url}/entities", params={"type": kind, "limit": 100, "offset": offset}, timeout=30, headers=OPERATOR).json()
        for f in page["features"]:
            reported = f["properties"].get("reported")
            if reported is not None:
                out[f["id"]] = {k: v for k, v in reported.items() if not k.startswith("_")}
        if len(page["features"]) < 100:
            return out
        offset += 100


def test_the_api_and_the_archive_sink_killed_at_random_moments(broker: EmbeddedBroker, big_pack_dir: Path,
                                                                tmp_path: Path) -> None:
    bootstrap = broker.bootstrap_servers
    pack = load_pack(big_pack_dir)
    data = tmp_path / "data"
    rng = random.Random(SEED)
    plan = sorted([(rng.uniform(3.0, DURATION_S), "api") for _ in range(KILLS)] +
                  [(rng.uniform(3.0, DURATION_S), "archive") for _ in range(KILLS)])
    print(f"reader kill drill: seed {SEED}, kills at {[f'{at:.1f} s {what}' for at, what in plan]}")
    app_id = f"plietsch-readers-{uuid.uuid4().hex[:6]}"
    worker = Worker(bootstrap, big_pack_dir, app_id)
    api = kit.Api(bootstrap, big_pack_dir, data, tmp_path / "api.log")
    sink = Sink(bootstrap, big_pack_dir, data, tmp_path / "archive.log")
    worker.start()
    sink.start()
    api.start()
    feeder = kit.Feeder(bootstrap, pack, ROUNDS, DURATION_S, SEED).start()
    started = time.monotonic()
    try:
        for at, what in plan:
            time.sleep(max(0.0, started + at - time.monotonic()))
            if what == "api":
                _kill(api.proc)
                api.start()  # a new read model, built from the output topics
            else:
                _kill(sink.proc)
                sink.start()
        feeder.join(DURATION_S + 300)
        events = kit.produced(bootstrap)
        want = kit.offline(pack, events)
        kit.settle(bootstrap, app_id, pack, want, 240, "reader kill drill (worker not killed)")

        def api_equal() -> list[str]:
            diffs = kit.differences("/entities?type=sensor", _entities(api.url, "sensor"), want["sensors"])
            diffs += kit.differences("/entities?type=coast", _entities(api.url, "coast"), want["coast"])
            active = httpx.get(f"{api.url}/alerts", timeout=30, headers=OPERATOR).json()
            alerts = {a["alert_id"]: kit.alert_key("AlertRaised", a) for a in active}
            diffs += kit.differences("/alerts", alerts, want["active"])
            return diffs

        last: list[list[str]] = [[]]
        try:
            wait_for(lambda: not (last.__setitem__(0, api_equal()) or last[0]), 120, "the API to equal the offline fold", 3.0)
        except AssertionError:
            raise AssertionError("the restarted API differs from the offline fold:\n" + "\n".join(last[0])) from None

        ids = Counter(e.event_id for e, _ in events)
        assert max(ids.values()) == 1, "the drill's input has unique event ids"

        def archived() -> Counter[str]:
            return Counter(e.event_id for _, e in read_events(data / "archive"))

        got = wait_for(lambda: (c := archived()) and sum(c.values()) >= len(ids) and c, 120, "the archive to hold the input")
        doubled = [k for k, n in got.items() if n > 1]
        missing = set(ids) - set(got)
        assert not doubled and not missing and set(got) == set(ids), (
            f"archive after the sink was killed: {len(missing)} missing, {len(doubled)} doubled (e.g. {doubled[:3]}), "
            f"{len(set(got) - set(ids))} unknown")
        assert worker.alive() and api.alive() and sink.proc is not None and sink.proc.poll() is None
    finally:
        if sink.proc is not None and sink.proc.poll() is None:
            sink.proc.terminate()
            sink.proc.wait(60)
        api.stop()
        worker.stop()
