from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.broker import free_port
from streams.catalogue import TWIN_UPDATES
from streams.consume import drain
from streams.tables import is_internal

ROOT = Path(__file__).resolve().parent.parent
# Sensors that single tests own, so that the shared worker's state is not fought over by tests run in any order.
API_SENSOR = "kiel:gaarden:sensor:parking-003"
DLQ_SENSOR = "kiel:_:sensor:gauge-holtenau"
COAST_SENSOR = "kiel:friedrichsort:sensor:water-level-001"
VIEWER_SENSOR = "kiel:gaarden:sensor:water-level-001"
SSE_SENSORS = ("kiel:friedrichsort:sensor:bike-share-001", "kiel:friedrichsort:sensor:bike-share-002",
               "kiel:gaarden:sensor:bike-share-001")
PROCESSOR_SENSOR = "kiel:friedrichsort:sensor:parking-001"
RESTART_CAR_PARK = "kiel:friedrichsort:sensor:parking-002"
RESERVED_SENSORS = frozenset({API_SENSOR, DLQ_SENSOR, COAST_SENSOR, VIEWER_SENSOR, PROCESSOR_SENSOR, RESTART_CAR_PARK,
                              *SSE_SENSORS})


def sse_burst_station(sensor: Any) -> bool:
    """Friedrichsort's bike stations: ``test_live.py``'s burst writes every one of them (at 2032), so a test that needs
    its readings to be the newest may not use them, whatever the order the tests run in."""
    return bool(sensor.sensor_kind == "bike_share" and ":friedrichsort:" in sensor.id)


def free_sensors(pack: Any) -> list[Any]:
    """The pack's sensors that no single test owns (not reserved, not the burst's), by id."""
    return sorted((s for s in pack.sensors.values() if s.id not in RESERVED_SENSORS and not sse_burst_station(s)),
                  key=lambda s: s.id)


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last result: {last!r}")


def latest_updates(bootstrap: str, entity_prefix: str = "") -> dict[str, dict[str, Any]]:
    """Latest TwinEntityUpdated per entity (by revision) from the twin.updates topic."""
    from schemas.codec import SingleObjectCodec

    codec = SingleObjectCodec()
    out: dict[str, dict[str, Any]] = {}
    for msg in drain(bootstrap, TWIN_UPDATES.name, missing_ok=True):
        _, rec = codec.decode(msg.value())
        if not rec["entity_id"].startswith(entity_prefix):
            continue
        prev = out.get(rec["entity_id"])
        if prev is None or rec["revision"] >= prev["revision"]:
            out[rec["entity_id"]] = rec
    return out


def table_state(bootstrap: str, app_id: str) -> dict[str, dict[str, Any]]:
    """The sensor table as its Faust changelog holds it (last value per key)."""
    out: dict[str, dict[str, Any]] = {}
    for msg in drain(bootstrap, f"{app_id}-twin-sensor-state-changelog", missing_ok=True):
        if msg.value() is not None and not is_internal(msg.key()):
            out[msg.key().decode()] = json.loads(msg.value())
    return out


class Worker:
    """A worker process (``plietsch worker``) and, with *scenarios*, the scenario service beside it (``plietsch
    scenarios``, as ``plietsch run`` starts it; one per broker and data folder, or requests run twice)."""

    def __init__(self, bootstrap: str, pack_dir: Path, app_id: str, data_dir: Path | None = None,
                 scenarios: bool = False) -> None:
        self.bootstrap, self.pack_dir, self.app_id = bootstrap, pack_dir, app_id
        self.data_dir = data_dir
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"{app_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.scenarios: subprocess.Popen[bytes] | None = None
        self.with_scenarios = scenarios
        self.port = 0

    def env(self) -> dict[str, str]:
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=self.bootstrap, PLIETSCH_REGION_PACK=str(self.pack_dir),
                   PLIETSCH_APP_ID=self.app_id, PLIETSCH_WEB_PORT=str(self.port), PYTHONUNBUFFERED="1")
        if self.data_dir is not None:
            env["PLIETSCH_DATA_DIR"] = str(self.data_dir)
        env["PLIETSCH_PROCESSORS"] = "streams.examples.parking_full:ParkingFull"
        return env

    def start(self) -> None:
        self.port = free_port()
        env = self.env()
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warning"], cwd=ROOT,
                                     env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        if self.with_scenarios and (self.scenarios is None or self.scenarios.poll() is not None):
            self.scenarios = subprocess.Popen([sys.executable, "-m", "streams.cli", "scenarios"], cwd=ROOT, env=env,
                                              stdout=self.log.with_suffix(".scenarios.log").open("ab"),
                                              stderr=subprocess.STDOUT)

    def api_env(self) -> dict[str, str]:
        """What an API over this worker needs to watch it (/health): its consumer group, and no archive sink (the
        tests' worker runs without one)."""
        return {"PLIETSCH_APP_ID": self.app_id, "PLIETSCH_ARCHIVE_GROUP": ""}

    def stop(self) -> None:
        for proc in (self.proc, self.scenarios):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)

    def stats(self) -> dict[str, Any]:
        """The worker's /twin/stats, or {} while it does not answer."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/twin/stats", timeout=3) as resp:
                return dict(json.load(resp))
        except OSError:
            return {}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start_api(env: dict[str, str], log: Path, timeout_s: float = 90.0,
              ready: Callable[[Any], bool] = lambda r: r.status_code == 200) -> tuple[subprocess.Popen[bytes], str]:
    """The API (with the viewer) as its own uvicorn process with *env*, its output in *log*; returns it and its URL once
    ``ready(GET /health)`` holds. Ends it and raises with the log's tail when it does not within *timeout_s*."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready(httpx.get(f"{url}/health", timeout=2)):
                return proc, url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"API did not start within {timeout_s:.0f} s: {log.read_text()[-2000:]}")


def metric(port: int, name: str) -> float | None:
    """A sample of metric *name* (the first series) from a Prometheus /metrics on *port*, None while it does not answer."""
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return None


def gauge_level(api: str, gauge: str) -> float | None:
    """The water level the API reports for *gauge*, None while it has none (or does not answer)."""
    import httpx

    from tests.credentials import OPERATOR

    try:
        r = httpx.get(f"{api}/entities/{gauge}", timeout=5, headers=OPERATOR)
    except httpx.HTTPError:
        return None
    reported = r.json()["properties"].get("reported") if r.status_code == 200 else None
    return (reported or {}).get("values", {}).get("level_m")


def unstable_partitions(bootstrap: str) -> dict[tuple[str, int], tuple[int, int]]:
    """Partitions whose read_committed end (the last stable offset) is below the high watermark: an open or held
    transaction there; {(topic, partition): (stable end, high watermark)}."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    parts = [(t, p) for t, tm in meta.topics.items() for p in tm.partitions]
    ends: dict[str, list[int]] = {}
    for isolation in ("read_committed", "read_uncommitted"):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:8]}",
                      "isolation.level": isolation, "enable.auto.commit": False})
        try:
            ends[isolation] = [c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1] for t, p in parts]
        finally:
            c.close()
    return {tp: (lso, hw) for tp, lso, hw in zip(parts, ends["read_committed"], ends["read_uncommitted"], strict=True)
            if lso != hw}
