"""The fold of readings into sensor state: ``apply(state, reading) -> state``. Pure and fast: it runs per event."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from twin.events import Reading

ENVELOPE = frozenset({"event_id", "entity_id", "region", "occurred_at", "source"})


@dataclass(frozen=True, slots=True)
class SensorState:
    entity_id: str
    sensor_kind: str
    revision: int
    observed_at: datetime
    values: dict[str, Any] = field(default_factory=dict)
    last_event_id: str = ""
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "entity_id": self.entity_id,
            "sensor_kind": self.sensor_kind,
            "revision": self.revision,
            "observed_at": self.observed_at.isoformat(),
            "values": self.values,
            "last_event_id": self.last_event_id,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SensorState:
        return cls(
            entity_id=data["entity_id"],
            sensor_kind=data["sensor_kind"],
            revision=int(data["revision"]),
            observed_at=datetime.fromisoformat(data["observed_at"]),
            values=dict(data["values"]),
            last_event_id=data.get("last_event_id", ""),
            source=data.get("source", ""),
        )


def reading_values(reading: Reading) -> dict[str, Any]:
    return {k: v for k, v in reading.__dict__.items() if k not in ENVELOPE}


def apply(state: SensorState | None, reading: Reading) -> SensorState:
    """Fold one reading into the sensor's state.

    The newest reading by occurrence time wins; a late, older reading and a duplicate event leave the state as it is
    (the same object is returned, so callers can tell with ``is``)."""
    if state is not None:
        if reading.occurred_at < state.observed_at:
            return state
        if reading.event_id == state.last_event_id:
            return state
    return SensorState(
        entity_id=str(reading.entity_id),
        sensor_kind=type(reading).sensor_kind,
        revision=0 if state is None else state.revision + 1,
        observed_at=reading.occurred_at,
        values=reading_values(reading),
        last_event_id=reading.event_id,
        source=reading.source,
    )


def fold_rows(states: dict[str, SensorState | None], rows: Iterable[tuple[str, dict[str, Any], datetime]],
              sensor_kind: Callable[[str], str]) -> dict[str, SensorState]:
    """The batch variant of :func:`apply` on light rows ``(record name, Avro dict, occurred_at)``: folds them in order
    into *states* (mutated) and returns the states that changed. Equal to applying ``apply`` reading by reading (tested),
    but builds one state per changed sensor, not one per reading."""
    pending: dict[str, list[Any]] = {}  # sensor -> [accepted count, last record, last occurred_at, record name]
    for name, rec, t in rows:
        sid = rec["entity_id"]
        p = pending.get(sid)
        if p is None:
            st = states.get(sid)
            if st is not None and (t < st.observed_at or rec["event_id"] == st.last_event_id):
                continue
            pending[sid] = [1, rec, t, name]
        else:
            if t < p[2] or rec["event_id"] == p[1]["event_id"]:
                continue
            p[0] += 1
            p[1], p[2], p[3] = rec, t, name
    return build_states(states, pending, sensor_kind)


def build_states(states: dict[str, SensorState | None], pending: dict[str, list[Any]],
                 sensor_kind: Callable[[str], str]) -> dict[str, SensorState]:
    """One new state per sensor from ``pending[sensor] = [accepted count, last accepted record, its time, record name]``
    (the batch folds' result); *states* is updated, the changed states are returned."""
    changed: dict[str, SensorState] = {}
    for sid, (n, rec, t, name) in pending.items():
        before = states.get(sid)
        new = SensorState(entity_id=sid, sensor_kind=sensor_kind(name), revision=n - 1 if before is None else before.revision + n,
                          observed_at=t, values={k: v for k, v in rec.items() if k not in ENVELOPE},
                          last_event_id=rec["event_id"], source=rec["source"])
        states[sid] = changed[sid] = new
    return changed
