"""The whole twin as a value and the fold over events: ``apply(state, event) -> state``.

The Faust agents run the per-entity folds (``twin.sensors``, ``twin.coast``) live; replay and time travel run this
same fold over the archive; scenarios run it on a fork. ``apply`` never changes its input: it returns a new state that
shares what did not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from twin import coast as coast_model
from twin import sensors as sensor_model
from twin.coast import CoastState
from twin.events import (
    AlertCleared,
    AlertRaised,
    DefectReported,
    Event,
    PublicEventScheduled,
    Reading,
    RoadWorksAnnounced,
    WaterLevelMeasured,
)
from twin.region import RegionPack
from twin.sensors import SensorState


@dataclass(frozen=True)
class TwinState:
    pack: RegionPack
    sensors: dict[str, SensorState] = field(default_factory=dict)
    coast: dict[str, CoastState] = field(default_factory=dict)
    alerts: dict[str, AlertRaised] = field(default_factory=dict)  # active alerts by alert id
    municipal: dict[str, Event] = field(default_factory=dict)  # road works, reports, public events by entity id
    as_of: datetime | None = None
    events_applied: int = 0

    @classmethod
    def empty(cls, pack: RegionPack) -> TwinState:
        return cls(pack=pack)


def apply(state: TwinState, event: Event) -> TwinState:
    """Fold one event into the twin; returns a new state (the same object when nothing changed)."""
    changes: dict[str, object] = {}
    if isinstance(event, Reading):
        before = state.sensors.get(event.entity_id)
        after = sensor_model.apply(before, event)
        if after is before:
            return state
        changes["sensors"] = {**state.sensors, event.entity_id: after}
        if isinstance(event, WaterLevelMeasured):
            new_coast = dict(state.coast)
            alerts = dict(state.alerts)
            for seg in state.pack.coast_by_gauge.get(event.entity_id, ()):
                seg_state, raised = coast_model.assess(seg, new_coast.get(seg.id), event)
                new_coast[seg.id] = seg_state
                for a in raised:
                    if isinstance(a, AlertRaised):
                        alerts[a.alert_id] = a
                    elif isinstance(a, AlertCleared):
                        alerts.pop(a.alert_id, None)
            changes["coast"], changes["alerts"] = new_coast, alerts
    elif isinstance(event, RoadWorksAnnounced | DefectReported | PublicEventScheduled):
        changes["municipal"] = {**state.municipal, event.entity_id: event}
    else:
        return state
    as_of = event.occurred_at if state.as_of is None else max(state.as_of, event.occurred_at)
    return replace(state, **changes, as_of=as_of, events_applied=state.events_applied + 1)  # type: ignore[arg-type]


def fold(state: TwinState, events: Iterable[Event], until: datetime | None = None) -> TwinState:
    """Apply *events* in order, skipping those that occurred after *until*."""
    for e in events:
        if until is None or e.occurred_at <= until:
            state = apply(state, e)
    return state
