"""The fold of readings into sensor state: ``apply(state, reading) -> state``. Pure and fast: it runs per event."""

from __future__ import annotations

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
