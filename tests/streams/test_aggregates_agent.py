"""Windowed aggregates through the broker: known traffic and air-quality readings give known figures."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.codec import SingleObjectCodec
from streams.catalogue import AGGREGATES, SENSOR_TOPICS
from streams.consume import drain
from streams.publisher import EventPublisher
from tests.helpers import Worker, wait_for
from twin.aggregates import Partial, combine
from twin.events import AirQualityMeasured, TrafficCounted
from twin.region import load_pack

pytestmark = pytest.mark.broker
T = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)  # a period no other test writes


def _figures(bootstrap: str) -> dict[tuple[str, str, str], dict]:
    codec = SingleObjectCodec()
    latest: dict[str, Partial] = {}
    for m in drain(bootstrap, AGGREGATES.name, missing_ok=True):
        _, rec = codec.decode(m.value())
        if rec["window_start"].startswith("2024-05-01"):
            latest[m.key().decode()] = Partial.from_json(json.loads(rec["partial_json"]))
    groups: dict[tuple[str, str, str], list[Partial]] = defaultdict(list)
    for p in latest.values():
        groups[(p.metric, p.group, p.window.isoformat() if p.window else "")].append(p)
    return {k: combine(v) for k, v in groups.items()}


def test_traffic_and_air_quality_windows(worker: Worker, big_pack_dir: Path) -> None:
    pack = load_pack(big_pack_dir)
    counters = sorted((s for s in pack.sensors.values() if s.sensor_kind == "traffic_count" and s.road), key=lambda s: s.id)[:6]
    air = sorted((s for s in pack.sensors.values() if s.sensor_kind == "air_quality" and s.neighbourhood), key=lambda s: s.id)[:3]
    pub = EventPublisher(worker.bootstrap, SingleObjectCodec())
    expected: dict[tuple[str, str, str], float] = defaultdict(float)
    for i, s in enumerate(counters):
        for minute, vehicles in ((1, 10 + i), (7, 20 + i), (16, 5)):
            t = T + timedelta(minutes=minute)
            pub.add(SENSOR_TOPICS["traffic_count"].name, s.id, TrafficCounted(
                entity_id=s.id, region="kiel", occurred_at=t, source="agg-test", vehicles=vehicles, interval_s=300))
            w = T if minute < 15 else T + timedelta(minutes=15)
            expected[("traffic_vehicles", str(s.road), w.isoformat())] += vehicles
    no2: dict[str, list[float]] = defaultdict(list)
    for i, s in enumerate(air):
        for minute in (5, 25, 45):
            value = 10.0 * (i + 1) + minute / 5
            pub.add(SENSOR_TOPICS["air_quality"].name, s.id, AirQualityMeasured(
                entity_id=s.id, region="kiel", occurred_at=T + timedelta(minutes=minute), source="agg-test",
                no2_ugm3=value, pm10_ugm3=12.0, pm25_ugm3=6.0))
            no2[str(s.neighbourhood)].append(value)
    pub.flush()

    def complete() -> dict | None:
        got = _figures(worker.bootstrap)
        ok = all(got.get(k, {}).get("sum") == v for k, v in expected.items())
        return got if ok and all(("air_no2_ugm3", h, T.isoformat()) in got for h in no2) else None

    got = wait_for(complete, 90, "the aggregates")
    for hood, values in no2.items():
        fig = got[("air_no2_ugm3", hood, T.isoformat())]
        assert fig["count"] == len(values) and fig["mean"] == pytest.approx(sum(values) / len(values))
        assert fig["window_s"] == 3600
    one = got[("traffic_vehicles", str(counters[0].road), T.isoformat())]
    assert one["window_s"] == 900 and one["min"] >= 5
