"""Records for the read side's tests, produced straight onto the twin's output topics of a broker of their own (the
broken ones must not reach the session broker, whose other readers are not under test here)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Producer

from schemas.codec import SingleObjectCodec
from streams.catalogue import AGGREGATES, ALERTS, SCENARIO_RESULTS, TWIN_UPDATES
from streams.serde import encode_event
from twin.aggregates import Partial
from twin.events import (
    AggregateUpdated,
    AlertCleared,
    AlertRaised,
    ScenarioProgressed,
    TwinEntityUpdated,
    WaterLevelMeasured,
)

CODEC = SingleObjectCodec()
T = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
SEGMENT = "kiel:_:coast:gaarden-001"
SENSOR = "kiel:gaarden:sensor:traffic-count-001"
ROAD = "kiel:gaarden:road:r0001"
HOOD = "kiel:gaarden:neighbourhood:gaarden"


class Out:
    """An idempotent producer onto the output topics; ``send`` takes (topic, key, value) and flushes at once."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 0})

    def send(self, topic: str, key: str | bytes | None, value: bytes | None) -> None:
        k = key.encode() if isinstance(key, str) else key
        self.producer.produce(topic, key=k, value=value)
        if self.producer.flush(15):
            raise RuntimeError(f"the broker did not take a record for {topic} within 15 s")


def update(eid: str, revision: int, state: dict[str, Any] | None = None, state_json: str | None = None,
           entity_type: str | None = None) -> bytes:
    return encode_event(CODEC, TwinEntityUpdated(
        entity_id=eid, region="kiel", occurred_at=T + timedelta(seconds=revision), source="test",
        entity_type=entity_type or eid.split(":")[2], revision=revision,
        state_json=state_json if state_json is not None else json.dumps(state or {}), cause_event_id="c"))


def coast_state(level: float) -> dict[str, Any]:
    return {"segment_id": SEGMENT, "crest_m": 2.5, "level_m": level, "freeboard_m": 2.5 - level, "surge_class": None,
            "low_freeboard": False, "overtopped": False, "observed_at": T.isoformat(), "gauge": SENSOR, "revision": 0}


def raised(aid: str, at: datetime, event_id: str | None = None, severity: str = "severe") -> bytes:
    return encode_event(CODEC, AlertRaised(
        event_id=event_id or str(uuid.uuid4()), entity_id=SEGMENT, region="kiel", occurred_at=at, source="test",
        alert_id=aid, severity=severity, category="storm_surge", message=f"{aid} raised", value=1.2, threshold=1.0,  # type: ignore[arg-type]
        public=True))


def cleared(aid: str, at: datetime, event_id: str | None = None) -> bytes:
    return encode_event(CODEC, AlertCleared(
        event_id=event_id or str(uuid.uuid4()), entity_id=SEGMENT, region="kiel", occurred_at=at, source="test",
        alert_id=aid, category="storm_surge", message=f"{aid} cleared"))


def partial(window: datetime | None, shard: int, total: float, count: int, metric: str = "traffic_vehicles",
            group: str = ROAD, rev: int | None = None) -> tuple[str, bytes]:
    """(key, value) of an AggregateUpdated for one shard's partial; *rev* None leaves it out (old data)."""
    p = Partial(metric, group, window, 900 if window else 0, shard, total=total, count=count, minimum=0.0, maximum=total)
    doc = p.to_json()
    doc.pop("rev", None)
    if rev is not None:
        doc["rev"] = rev
    return p.key, aggregate_record(p, json.dumps(doc))


def aggregate_record(p: Partial, partial_json: str) -> bytes:
    return encode_event(CODEC, AggregateUpdated(
        entity_id=p.group, region="kiel", occurred_at=p.window or T, source="test", metric=p.metric,
        window_start=p.window.isoformat() if p.window else "", window_s=p.window_s, shard=p.shard,
        partial_json=partial_json))


def scenario(sid: str, status: str, step: int, steps: int = 10) -> bytes:
    return encode_event(CODEC, ScenarioProgressed(
        entity_id=sid, region="kiel", occurred_at=T, source="test", status=status, step=step, steps=steps,  # type: ignore[arg-type]
        message=f"{status} {step}"))


def water_level() -> bytes:
    """A valid record of a type no output topic carries."""
    return encode_event(CODEC, WaterLevelMeasured(entity_id="kiel:gaarden:sensor:water-level-001", region="kiel",
                                                  occurred_at=T, source="test", level_m=0.3))


def raw(name: str, record: dict[str, Any]) -> bytes:
    """Valid Avro of *name* that bypasses the event models' rules (e.g. a malformed entity id)."""
    return CODEC.encode(name, record)


def unknown_fingerprint() -> bytes:
    return b"\xc3\x01" + bytes(range(8)) + b"\x02\x04abcd"


TOPICS = {"updates": TWIN_UPDATES.name, "alerts": ALERTS.name, "aggregates": AGGREGATES.name,
          "scenarios": SCENARIO_RESULTS.name}


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format (labels in any order), None when it is not there."""
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m and dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or "")) == labels:
            return float(m.group(2))
    return None
