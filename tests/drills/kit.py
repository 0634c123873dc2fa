"""What the fault drills share: their own embedded broker, a deterministic input with storm surges, the offline fold of
exactly the input that reached the broker, and the live twin as its consumers see it (read_committed)."""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.codec import SingleObjectCodec
from streams.catalogue import AGGREGATES, ALERTS, SENSOR_TOPICS, TWIN_UPDATES
from streams.consume import drain
from streams.examples.parking_full import ParkingFull
from streams.ingest import RecordDecoder
from streams.publisher import EventPublisher
from streams.simulator import ReadingFactory
from streams.tables import ChangelogReader, is_internal
from twin import aggregates as aggregate_model
from twin import coast as coast_model
from twin.events import AirQualityMeasured, AlertRaised, Event, ParkingOccupancyReported, WaterLevelMeasured
from twin.region import RegionPack
from twin.state import TwinState, combined_aggregates, fold

FULL = os.environ.get("PLIETSCH_DRILL") == "full"
T0 = datetime(2035, 6, 1, 0, 0, tzinfo=UTC)  # a time no other test of the session uses
CODEC = SingleObjectCodec()


def level_at(i: int, rounds: int, phase: float) -> float:
    """A water level with several storm surges over the run: 0.2 .. 2.3 m, crossing every BSH class up and down."""
    period = max(40, rounds // 4)
    return round(1.25 + 1.05 * math.sin(2 * math.pi * (i / period) + phase), 3)


def quarter(x: float) -> float:
    """Air-quality values in quarters: their sums are exact in binary floating point, whatever the batch bounds, so
    the aggregates can be compared exactly with the offline fold."""
    return round(x * 4) / 4


class Feeder:
    """Streams *rounds* readings of every sensor of the pack (one minute of event time apart) in batch records, spread
    over *duration_s*, in a thread."""

    def __init__(self, bootstrap: str, pack: RegionPack, rounds: int, duration_s: float, seed: int) -> None:
        self.pack, self.rounds, self.duration_s = pack, rounds, duration_s
        self.sensors = sorted(pack.sensors.values(), key=lambda s: s.id)
        self.factory = ReadingFactory(pack, seed=seed, interval_s=60)
        self.phase = {s.id: random.Random(f"{seed}{s.id}").uniform(0, 0.6) for s in self.sensors}
        self.pub = EventPublisher(bootstrap, CODEC, linger_ms=20, max_datums=500)
        self.sent = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="drill-feeder", daemon=True)

    @property
    def total(self) -> int:
        return self.rounds * len(self.sensors)

    def reading(self, s: Any, i: int) -> Event:
        t = T0 + timedelta(minutes=i)
        r = self.factory.reading(s, t)
        if isinstance(r, WaterLevelMeasured):
            r = r.model_copy(update={"level_m": level_at(i, self.rounds, self.phase[s.id])})
        elif isinstance(r, AirQualityMeasured):
            r = r.model_copy(update={k: quarter(getattr(r, k)) for k in ("no2_ugm3", "pm10_ugm3", "pm25_ugm3")})
        return r

    def _run(self) -> None:
        try:
            started = time.monotonic()
            for i in range(self.rounds):
                for s in self.sensors:
                    self.pub.add(SENSOR_TOPICS[s.sensor_kind].name, s.id, self.reading(s, i))
                self.sent += len(self.sensors)
                self.pub.tick()
                ahead = started + self.duration_s * (i + 1) / self.rounds - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            self.pub.flush(120)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"the feeder did not finish within {timeout:.0f} s ({self.sent} of {self.total} sent)")
        if self.error is not None:
            raise AssertionError(f"the feeder failed: {self.error!r}") from self.error


# -- the offline fold of exactly what reached the broker ------------------------------------------------------------------
def produced(bootstrap: str, bad: list[tuple[str, int, int]] | None = None,
             pack: RegionPack | None = None) -> list[tuple[Event, int]]:
    """Every event on the sensor topics (read_committed, as the worker reads them), per partition in offset order.
    A record with a bad datum fails the drill, unless *bad* is given: then its (topic, partition, offset) goes there
    (once per record) and its good datums count. With *pack*, readings of sensors it does not have are bad, as for the
    worker."""
    sensors = pack.sensors if pack is not None else None
    decoder = RecordDecoder(CODEC, "drill", expected={t.name: t.value_schemas for t in SENSOR_TOPICS.values()},
                            known_entities=set(sensors) if sensors is not None else None,
                            entity_kinds={sid: s.sensor_kind for sid, s in sensors.items()} if sensors is not None else None)
    out: list[tuple[Event, int]] = []
    for topic in SENSOR_TOPICS.values():
        msgs = sorted(drain(bootstrap, topic.name, missing_ok=True, timeout=120), key=lambda m: (m.partition(), m.offset()))
        for m in msgs:
            d = decoder.decode(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers())
            if d.dead:
                if bad is None:
                    raise AssertionError(f"the drill's own input has a bad record: {d.dead[0].reason}")
                bad.append((m.topic(), m.partition(), m.offset()))
            out.extend((e, m.partition()) for e in d.events)
    return out


def offline(pack: RegionPack, events: list[tuple[Event, int]]) -> dict[str, Any]:
    """The offline fold (``twin.state.fold``, the functions the agents call), the alert history it implies, and the
    alerts of the parking example processor (its ``handle`` per reading, state in a dict)."""
    state = fold(TwinState.empty(pack), events)
    history: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)
    active = {k: alert_key("AlertRaised", a.model_dump(mode="json")) for k, a in state.alerts.items()}
    coast: dict[str, Any] = {}
    parking = ParkingFull()  # the example processor the drills' workers run (tests.helpers.Worker): its alerts too
    parking_state: dict[str, Any] = {}
    for e, _ in events:  # per sensor in partition order, which is the order of its readings
        if isinstance(e, ParkingOccupancyReported):
            for a in parking.handle([e], parking_state):
                history[a.alert_id].append(alert_key(type(a).__name__, a.model_dump(mode="json")))  # type: ignore[attr-defined]
                if isinstance(a, AlertRaised):
                    active[a.alert_id] = alert_key("AlertRaised", a.model_dump(mode="json"))
                else:
                    active.pop(a.alert_id, None)
        if isinstance(e, WaterLevelMeasured):
            for seg in pack.coast_by_gauge.get(e.entity_id, ()):
                new, alerts = coast_model.assess(seg, coast.get(seg.id), e)
                coast[seg.id] = new
                for a in alerts:
                    history[a.alert_id].append(alert_key(type(a).__name__, a.model_dump(mode="json")))  # type: ignore[attr-defined]
    return {"sensors": {k: v.to_json() for k, v in state.sensors.items()},
            "coast": {k: v.to_json() for k, v in state.coast.items()},
            "aggregates": combined_aggregates(state),
            "active": active,
            "history": dict(history)}


def alert_key(name: str, rec: dict[str, Any]) -> tuple[str, str, str | None]:
    t = rec["occurred_at"]
    t = t if isinstance(t, str) else t.isoformat()
    return name, datetime.fromisoformat(t.replace("Z", "+00:00")).isoformat(), rec.get("severity")


# -- the live twin, as its consumers see it -------------------------------------------------------------------------------
def changelog(bootstrap: str, app_id: str, table: str) -> dict[str, Any]:
    """A table as the worker loads it (``streams.tables.ChangelogReader``: per partition, cut-short writes and records
    no worker wrote left out), without markers and transaction numbers."""
    readers: dict[int, ChangelogReader] = {}
    tables: dict[int, dict[bytes, Any]] = {}
    for m in drain(bootstrap, f"{app_id}-{table}-changelog", missing_ok=True, timeout=120):
        part = int(m.partition() or 0)
        if part not in readers:
            readers[part] = ChangelogReader(tables.setdefault(part, {}), f"{table}[{part}]")
        readers[part].add(m.key() or b"", m.value(), m.headers())
    return {k.decode(): v for t in tables.values() for k, v in t.items() if not is_internal(k)}


def live_updates(bootstrap: str) -> dict[str, dict[str, Any]]:
    """The newest state per entity on twin.updates as the read model keeps it (highest revision, the later of equal)."""
    out: dict[str, tuple[int, dict[str, Any]]] = {}
    for m in drain(bootstrap, TWIN_UPDATES.name, missing_ok=True, timeout=120):
        _, rec = CODEC.decode(m.value())
        prev = out.get(rec["entity_id"])
        if prev is None or rec["revision"] >= prev[0]:
            out[rec["entity_id"]] = (rec["revision"], json.loads(rec["state_json"]))
    return {k: v for k, (_, v) in out.items()}


def live_aggregates(bootstrap: str) -> dict[str, dict[str, Any]]:
    """twin.aggregates as a reader keeps it (highest rev per partial key, the later of equal), combined over shards."""
    latest: dict[str, aggregate_model.Partial | None] = {}
    for m in drain(bootstrap, AGGREGATES.name, missing_ok=True, timeout=120):
        key = m.key().decode()
        if m.value() is None:
            latest[key] = None
            continue
        _, rec = CODEC.decode(m.value())
        part = aggregate_model.Partial.from_json(json.loads(rec["partial_json"]))
        prev = latest.get(key)
        if prev is None or part.rev >= prev.rev:
            latest[key] = part
    groups: dict[tuple[str, str, str], list[aggregate_model.Partial]] = defaultdict(list)
    for p in latest.values():
        if p is not None:
            groups[(p.metric, p.group, p.window.isoformat() if p.window else "current")].append(p)
    return {"|".join(k): aggregate_model.combine(v) for k, v in sorted(groups.items())}


def live_alerts(bootstrap: str) -> dict[str, Any]:
    """twin.alerts read_committed: per alert id the distinct events (by event id, as the API's read model dedupes them)
    in their order, how many records repeated an event id, and the alerts left raised."""
    seen: set[str] = set()
    repeats = 0
    history: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)
    records: list[tuple[str, dict[str, Any]]] = []
    for m in drain(bootstrap, ALERTS.name, missing_ok=True, timeout=120):
        name, rec = CODEC.decode(m.value())
        if rec["event_id"] in seen:
            repeats += 1
            continue
        seen.add(rec["event_id"])
        records.append((name, rec))
    for name, rec in sorted(records, key=lambda nr: (nr[1]["occurred_at"], nr[0] == "AlertCleared")):
        history[rec["alert_id"]].append(alert_key(name, rec))
    active: dict[str, tuple[str, str, str | None]] = {}
    for aid, items in history.items():
        if items[-1][0] == "AlertRaised":
            active[aid] = items[-1]
    return {"history": dict(history), "active": active, "repeats": repeats}


def differences(name: str, got: dict[str, Any], want: dict[str, Any], limit: int = 3) -> list[str]:
    keys = sorted(set(got) | set(want))
    bad = [k for k in keys if got.get(k) != want.get(k)]
    return [f"{name}: {len(bad)} of {len(keys)} differ; first: " +
            "; ".join(f"{k}: live {got.get(k)!r} != offline {want.get(k)!r}" for k in bad[:limit])] if bad else []


def compare(bootstrap: str, app_id: str, pack: RegionPack, want: dict[str, Any]) -> list[str]:
    """What differs between the live twin (tables, twin.updates, twin.aggregates, twin.alerts) and the offline fold."""
    diffs = differences("sensor table", changelog(bootstrap, app_id, "twin-sensor-state"), want["sensors"])
    diffs += differences("coast table", changelog(bootstrap, app_id, "twin-coast-state"), want["coast"])
    updates = live_updates(bootstrap)
    diffs += differences("twin.updates (sensors)", {k: v for k, v in updates.items() if k in pack.sensors}, want["sensors"])
    diffs += differences("twin.updates (coast)", {k: v for k, v in updates.items() if k in want["coast"]}, want["coast"])
    diffs += differences("aggregates", live_aggregates(bootstrap), want["aggregates"])
    alerts = live_alerts(bootstrap)
    diffs += differences("alert history", alerts["history"], want["history"])
    diffs += differences("alerts left raised", alerts["active"], want["active"])
    return diffs


def settle(bootstrap: str, app_id: str, pack: RegionPack, want: dict[str, Any], timeout: float, context: str) -> None:
    """Wait (bounded) until the live twin equals the offline fold; fail with the differences."""
    from tests.helpers import wait_for

    last: list[list[str]] = [[]]

    def equal() -> bool:
        last[0] = compare(bootstrap, app_id, pack, want)
        return not last[0]

    try:
        wait_for(equal, timeout, "the twin to equal the offline fold", every=5.0)
    except AssertionError:
        raise AssertionError(f"{context}: the live twin differs from the offline fold:\n" + "\n".join(last[0])) from None


def metric(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples in an exposition text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Api:
    """The API as its own process over a drill's broker (its read model folds the twin's output topics)."""

    def __init__(self, bootstrap: str, pack_dir: Any, data_dir: Any, log: Any) -> None:
        self.bootstrap, self.pack_dir, self.data_dir, self.log = bootstrap, pack_dir, data_dir, log
        self.proc: Any = None
        self.url = ""

    def start(self, timeout: float = 90.0) -> None:
        import subprocess
        import sys

        import httpx

        from infra.broker import free_port
        from tests.helpers import ROOT, wait_for

        port = free_port()
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=self.bootstrap, PLIETSCH_REGION_PACK=str(self.pack_dir),
                   PLIETSCH_DATA_DIR=str(self.data_dir))
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--port",
                                      str(port), "--log-level", "warning"], cwd=ROOT, env=env,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        self.url = f"http://127.0.0.1:{port}"

        def ok() -> bool:
            try:
                return bool(httpx.get(f"{self.url}/health", timeout=2).json()["status"] == "ok")
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        wait_for(ok, timeout, "the API's /health")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            self.proc.wait(30)


class Keeper:
    """What ``plietsch run``'s supervisor does for the drills' workers: a worker that ends by itself (a fenced zombie
    ends with code 70 by design, to restart from its committed state) is started again; ``kill`` is the drill's SIGKILL
    followed by a restart. ``exits`` records every exit that the drill did not cause."""

    def __init__(self, workers: list[Any]) -> None:
        self.workers = workers
        self.exits: list[str] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="drill-keeper", daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopped.wait(1.0):
            with self.lock:
                for w in self.workers:
                    if w.proc is not None and w.proc.poll() is not None:
                        self.exits.append(f"{w.app_id} pid {w.proc.pid} exited with code {w.proc.returncode}")
                        w.start()

    def kill(self, w: Any, sig: int = 9) -> None:
        """Signal *w* (SIGKILL by default; SIGTERM: Faust's graceful stop, which commits the acked offsets on the way
        out), wait until it has ended and start it again."""
        with self.lock:
            if w.proc.poll() is None:
                os.kill(w.proc.pid, sig)
            w.proc.wait(60)
            w.start()

    def add(self, w: Any) -> None:
        with self.lock:
            w.start()
            self.workers.append(w)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(10)
        for w in self.workers:
            w.stop()
