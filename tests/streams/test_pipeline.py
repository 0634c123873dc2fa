"""End to end through the real broker: readings in, Faust table and twin.updates out, bad input to dead letters."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.codec import SingleObjectCodec
from streams.catalogue import DEAD_LETTERS, SENSOR_TOPICS
from streams.consume import drain
from streams.publisher import EventPublisher
from streams.simulator import ReadingFactory
from tests.helpers import DLQ_SENSOR, Worker, free_sensors, latest_updates, table_state, wait_for
from twin.events import WaterLevelMeasured
from twin.region import load_pack

pytestmark = pytest.mark.broker


def test_latest_reading_of_every_sensor_and_nothing_missing(worker: Worker, big_pack_dir: Path) -> None:
    pack = load_pack(big_pack_dir)
    sensors = free_sensors(pack)
    assert len(sensors) >= 180
    before = table_state(worker.bootstrap, worker.app_id)  # other tests of the session may have touched some sensors
    factory = ReadingFactory(pack, seed=3)
    codec = SingleObjectCodec()
    pub = EventPublisher(worker.bootstrap, codec, linger_ms=10, max_datums=500)
    t0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
    per_sensor = 45
    expected = {}
    n = 0
    for round_ in range(per_sensor):
        for s in sensors:
            r = factory.reading(s, t0 + timedelta(seconds=60 * round_))
            topic = SENSOR_TOPICS[s.sensor_kind].name
            if n % 97 == 0:
                pub.send(topic, s.id, r)  # some single records, as a non-batching producer would send
            else:
                pub.add(topic, s.id, r)
            expected[s.id] = r
            n += 1
        pub.tick()
    pub.flush()
    assert n == per_sensor * len(sensors) >= 8000

    def all_final() -> bool:
        state = table_state(worker.bootstrap, worker.app_id)
        return all(state.get(sid, {}).get("last_event_id") == r.event_id for sid, r in expected.items())

    assert worker.alive(), worker.output()
    wait_for(all_final, 180, "every sensor's table state to hold its last reading")
    state = table_state(worker.bootstrap, worker.app_id)
    updates = latest_updates(worker.bootstrap, "kiel:")
    for sid, r in expected.items():
        st = state[sid]
        assert st["values"] == {k: v for k, v in r.model_dump(mode="json").items()
                                if k not in {"event_id", "entity_id", "region", "occurred_at", "source"}}
        assert datetime.fromisoformat(st["observed_at"]) == r.occurred_at
        # every reading was newer than the one before, so each one bumped the revision: none went missing
        start = before[sid]["revision"] + 1 if sid in before else 0
        assert st["revision"] == start + per_sensor - 1, sid
        assert updates[sid]["revision"] == st["revision"]
        assert updates[sid]["cause_event_id"] == r.event_id
    assert worker.alive(), worker.output()


def _dead_letters(bootstrap: str, marker: str) -> list[dict]:
    codec = SingleObjectCodec()
    out = []
    for msg in drain(bootstrap, DEAD_LETTERS.name):
        _, rec = codec.decode(msg.value())
        if marker.encode() in rec["original_value"] or marker in rec["reason"]:
            rec["_headers"] = dict(msg.headers() or [])
            out.append(rec)
    return out


def test_bad_input_goes_to_dead_letters_and_worker_keeps_running(worker: Worker, big_pack_dir: Path) -> None:
    pack = load_pack(big_pack_dir)
    gauge = DLQ_SENSOR
    assert gauge in pack.sensors
    codec = SingleObjectCodec()
    pub = EventPublisher(worker.bootstrap, codec)
    marker = f"bad-{uuid.uuid4().hex[:8]}"
    topic = SENSOR_TOPICS["water_level"].name
    t = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

    def rec(**over: object) -> dict:
        base = {"event_id": f"{marker}-{over.pop('tag')}", "entity_id": gauge, "region": "kiel",
                "occurred_at": t.isoformat(), "source": marker, "level_m": 0.42}
        base.update(over)
        return base

    wrong = {k: v for k, v in rec(tag="wrong-schema").items() if k != "level_m"}
    cases = {
        "truncated": codec.encode("WaterLevelMeasured", rec(tag="truncated"))[:-6],
        "wrong-schema": codec.encode("TrafficCounted", wrong | {"vehicles": 3, "interval_s": 60, "mean_speed_kmh": None}),
        "unknown-sensor": codec.encode("WaterLevelMeasured", rec(tag="unknown-sensor", entity_id="kiel:_:sensor:nope-1")),
        "nan": codec.encode("WaterLevelMeasured", rec(tag="nan", level_m=math.nan)),
        "out-of-range": codec.encode("WaterLevelMeasured", rec(tag="out-of-range", level_m=42.0)),
        "naive-time": codec.encode("WaterLevelMeasured", rec(tag="naive-time", occurred_at="2026-11-21T12:00:00")),
    }
    for value in cases.values():  # each bad datum as a record of its own ...
        pub.send_raw(topic, gauge.encode(), value)
    pub.producer.flush()
    pub.add(topic, gauge, WaterLevelMeasured(entity_id=gauge, region="kiel", occurred_at=t + timedelta(seconds=1),
                                             source=marker, level_m=0.5, event_id=f"{marker}-after"))
    pub.flush()

    found = wait_for(lambda: (d := _dead_letters(worker.bootstrap, marker)) and len(d) >= len(cases) and d, 120,
                     "dead letters for every bad record")
    by_event = {}
    for d in found:
        for name in cases:
            if f"{marker}-{name}".encode() in d["original_value"]:
                by_event.setdefault(name, d)
    assert set(by_event) == set(cases), {d["reason"] for d in found}
    assert by_event["truncated"]["error_type"] == "decode"
    assert by_event["wrong-schema"]["error_type"] == "schema" and "TrafficCounted" in by_event["wrong-schema"]["reason"]
    assert by_event["unknown-sensor"]["error_type"] == "unknown_entity"
    assert "level_m" in by_event["nan"]["reason"] and by_event["nan"]["error_type"] == "validation"
    assert "less than or equal to 6" in by_event["out-of-range"]["reason"]
    assert "timezone" in by_event["naive-time"]["reason"]
    for name, d in by_event.items():
        assert d["original_topic"] == topic and d["original_offset"] >= 0
        assert d["original_value"] == cases[name], name  # the original bytes are kept
        assert d["_headers"]["reason"].decode() == d["reason"][:1000]
    # the worker is alive and still folds good readings after the bad ones
    wait_for(lambda: latest_updates(worker.bootstrap, gauge).get(gauge, {}).get("cause_event_id") == f"{marker}-after",
             60, "the good reading after the bad ones")
    assert worker.alive(), worker.output()


def test_the_worker_serves_prometheus_metrics(worker: Worker, big_pack_dir: Path) -> None:
    import urllib.request

    pack = load_pack(big_pack_dir)
    sensor = [s.id for s in free_sensors(pack) if s.sensor_kind == "water_level"][0]
    pub = EventPublisher(worker.bootstrap, SingleObjectCodec())
    pub.add(SENSOR_TOPICS["water_level"].name, sensor, WaterLevelMeasured(  # an old reading: counted, changes nothing new
        entity_id=sensor, region="kiel", occurred_at=datetime(2001, 1, 1, tzinfo=UTC), source="metrics-test", level_m=0.1))
    pub.flush()

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5) as resp:
                return str(resp.read().decode())
        except OSError:
            return ""

    wanted = ('plietsch_worker_datums_total{agent="twin-sensor-state"}', "plietsch_worker_transactions_committed_total",
              "plietsch_worker_consumer_lag{", 'plietsch_worker_datums_per_second{agent="twin-sensor-state"}')
    wait_for(lambda: all(w in scrape() for w in wanted), 60, "the worker's metrics")
