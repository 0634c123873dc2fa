"""The whole twin as a value and the one fold over events: ``apply(state, event) -> state``, ``fold(state, events)``.

The fold calls the very same per-entity functions the live agents call (contract 7): ``twin.sensors.apply`` for sensor
state, ``twin.coast.assess`` for coast segments and the alerts they raise or clear, ``twin.municipal.apply`` for road
works, defect reports and public events, and ``twin.aggregates.fold`` for the partials of windowed aggregates (per
shard, the Kafka partition the reading came from). Replay, time travel (``streams.history``) and scenario forks run it;
``apply`` and ``fold`` never change their input.

Aggregate partials follow the one horizon rule of ``twin.aggregates`` (``within_horizon``, ``cutoff``,
``expired_by``): per shard and windowed reading type, the watermark is the newest occurred_at of such readings of
that shard; a windowed partial leaves once its window ends at or before ``watermark - horizon``, and a reading for
such a window adds to no partial.
The worker (``streams.agents.SensorUnit``) and the API's aggregate view apply the same rule, so the twin at T equals
what the live worker holds after the same events. Parking occupancy ("current" partials) has no window and stays.

``to_json`` turns a state into plain JSON per entity, to compare a time-travelled twin with the live one;
``to_snapshot`` / ``from_snapshot`` round-trip a state exactly (the periodic snapshots beside the archive).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from twin import aggregates as aggregate_model
from twin import coast as coast_model
from twin import municipal as municipal_model
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

DEFAULT_HORIZON = timedelta(hours=48)
MUNICIPAL_EVENTS = (RoadWorksAnnounced, DefectReported, PublicEventScheduled)
WINDOWED_TYPES = frozenset(aggregate_model.SOURCE.values())  # readings the aggregate horizon applies to
SNAPSHOT_VERSION = 2  # 2: per-shard reading watermarks (the horizon rule)


@dataclass(frozen=True)
class TwinState:
    pack: RegionPack
    sensors: dict[str, SensorState] = field(default_factory=dict)
    coast: dict[str, CoastState] = field(default_factory=dict)
    alerts: dict[str, AlertRaised] = field(default_factory=dict)  # active alerts by alert id
    municipal: dict[str, dict[str, Any]] = field(default_factory=dict)  # twin.municipal state by entity id
    aggregates: dict[str, aggregate_model.Partial] = field(default_factory=dict)  # partials by key
    as_of: datetime | None = None  # the newest occurrence time folded in
    events_applied: int = 0  # events that changed the twin
    horizon: timedelta = DEFAULT_HORIZON
    # per shard, per windowed reading type: the newest occurred_at (twin.aggregates horizon rule)
    watermarks: dict[int, dict[str, datetime]] = field(default_factory=dict)

    @classmethod
    def empty(cls, pack: RegionPack, horizon: timedelta = DEFAULT_HORIZON) -> TwinState:
        return cls(pack=pack, horizon=horizon)


class Folding:
    """A fold in progress: a mutable copy of a state (copied once, not per event); ``apply`` events, then ``freeze``."""

    def __init__(self, s: TwinState) -> None:
        self.pack = s.pack
        self.sensors = dict(s.sensors)
        self.coast = dict(s.coast)
        self.alerts = dict(s.alerts)
        self.municipal = dict(s.municipal)
        self.aggregates = dict(s.aggregates)
        self.as_of = s.as_of
        self.applied = s.events_applied
        self.horizon = s.horizon
        self.watermarks = dict(s.watermarks)
        self.dirty = False  # changed something (also only a watermark)
        self.alert_log: list[Event] | None = None  # set to a list to collect every alert raised or cleared, in order
        self._swept: dict[int, Any] = {}  # per shard: the sweep key last swept (twin.aggregates.sweep_key)
        self._ends: dict[tuple[int, str], list[tuple[datetime, str]]] | None = None  # (shard, type) -> heap of (end, key)

    def freeze(self, copy: bool = False) -> TwinState:
        """The state so far; with *copy*, folding on afterwards does not change it (the watermarks' inner dicts are
        replaced, never changed, so a shallow copy suffices)."""
        if copy:
            return TwinState(self.pack, dict(self.sensors), dict(self.coast), dict(self.alerts), dict(self.municipal),
                             dict(self.aggregates), self.as_of, self.applied, self.horizon, dict(self.watermarks))
        return TwinState(self.pack, self.sensors, self.coast, self.alerts, self.municipal, self.aggregates, self.as_of,
                         self.applied, self.horizon, self.watermarks)

    def _advance(self, t: datetime) -> None:
        if self.as_of is None or t > self.as_of:
            self.as_of = t

    def _push(self, p: aggregate_model.Partial) -> None:
        if self._ends is not None and p.window is not None:
            heap = self._ends.setdefault((p.shard, aggregate_model.SOURCE.get(p.metric, "")), [])
            heapq.heappush(heap, (p.window + timedelta(seconds=p.window_s), p.key))

    def _sweep(self, shard: int) -> None:
        """Drop the shard's partials past the horizon; exact, since it runs whenever a cutoff enters a new step. Costs
        what leaves (a heap of window ends per shard and reading type, made on the first sweep of a fold)."""
        marks = self.watermarks[shard]
        key = aggregate_model.sweep_key(marks, self.horizon)
        if self._swept.get(shard) == key:
            return
        self._swept[shard] = key
        if self._ends is None:
            self._ends = {}
            for p in self.aggregates.values():
                self._push(p)
        for name, t in marks.items():
            heap = self._ends.get((shard, name))
            cut = aggregate_model.cutoff(t, self.horizon)
            while heap and heap[0][0] <= cut:
                _, k = heapq.heappop(heap)
                self.aggregates.pop(k, None)

    def apply(self, event: Event, shard: int) -> None:
        changed = False
        if isinstance(event, Reading):
            before = self.sensors.get(event.entity_id)
            after = sensor_model.apply(before, event)
            if after is not before:
                self.sensors[event.entity_id] = after
                changed = True
            if isinstance(event, WaterLevelMeasured):
                for seg in self.pack.coast_by_gauge.get(event.entity_id, ()):
                    prev = self.coast.get(seg.id)
                    new, raised = coast_model.assess(seg, prev, event)
                    if new is prev:
                        continue
                    self.coast[seg.id] = new
                    changed = True
                    for a in raised:
                        if self.alert_log is not None:
                            self.alert_log.append(a)
                        if isinstance(a, AlertRaised):
                            self.alerts[a.alert_id] = a
                        elif isinstance(a, AlertCleared):
                            self.alerts.pop(a.alert_id, None)
            admitted = True
            name = type(event).__name__
            if name in WINDOWED_TYPES:  # the horizon rule (twin.aggregates.within_horizon) for a windowed reading
                marks = self.watermarks.get(shard, {})
                rows, moved = aggregate_model.within_horizon([(name, event.__dict__, event.occurred_at)], marks,
                                                             self.horizon)
                admitted = bool(rows)
                if moved is not marks:
                    self.watermarks[shard] = moved
                    self.dirty = True
                    self._sweep(shard)
            if admitted:
                grown = aggregate_model.fold(self.aggregates, [event], self.pack.sensors, shard)
                if grown:
                    changed = True
                    for p in grown.values():
                        if p.rev == 1 and p.window is not None:  # a new windowed partial
                            self._push(p)
        elif isinstance(event, MUNICIPAL_EVENTS):
            new_m = municipal_model.apply(self.municipal.get(event.entity_id), event)
            if new_m is not None:
                self.municipal[event.entity_id] = new_m
                changed = True
        if changed:
            self.applied += 1
            self.dirty = True
            self._advance(event.occurred_at)


def apply(state: TwinState, event: Event, shard: int = 0) -> TwinState:
    """Fold one event (from Kafka partition *shard*) into the twin; returns a new state (the same object when nothing
    changed)."""
    w = Folding(state)
    w.apply(event, shard)
    return w.freeze() if w.dirty else state


def fold(state: TwinState, events: Iterable[Event | tuple[Event, int]], until: datetime | None = None,
         alert_log: list[Event] | None = None) -> TwinState:
    """Apply *events* (events, or (event, shard) pairs) in arrival order, skipping those that occurred after *until*;
    every alert raised or cleared on the way is appended to *alert_log* when one is given (the alert history)."""
    w = Folding(state)
    w.alert_log = alert_log
    for item in events:
        event, shard = item if isinstance(item, tuple) else (item, 0)
        if until is None or event.occurred_at <= until:
            w.apply(event, shard)
    return w.freeze()


def combined_aggregates(state: TwinState) -> dict[str, dict[str, Any]]:
    """The aggregates a reader shows: the partials of each (metric, group, window) combined over the shards."""
    groups: dict[tuple[str, str, str], list[aggregate_model.Partial]] = {}
    for p in state.aggregates.values():
        groups.setdefault((p.metric, p.group, p.window.isoformat() if p.window else "current"), []).append(p)
    return {"|".join(k): aggregate_model.combine(v) for k, v in sorted(groups.items())}


def to_json(state: TwinState) -> dict[str, Any]:
    """The twin as plain JSON per entity (what the read model shows), to compare two twins."""
    entities: dict[str, Any] = {k: v.to_json() for k, v in state.sensors.items()}
    entities.update({k: v.to_json() for k, v in state.coast.items()})
    entities.update({k: {f: x for f, x in v.items() if f != "event_ids"} for k, v in state.municipal.items()})
    return {"as_of": state.as_of.isoformat() if state.as_of else None, "events_applied": state.events_applied,
            "entities": dict(sorted(entities.items())),
            "active_alerts": {k: state.alerts[k].model_dump(mode="json") for k in sorted(state.alerts)},
            "aggregates": combined_aggregates(state)}


def to_snapshot(state: TwinState) -> dict[str, Any]:
    """Everything of a state, as JSON that ``from_snapshot`` turns back into an equal state."""
    return {"version": SNAPSHOT_VERSION, "region": state.pack.id, "pack": state.pack.fold_fingerprint(),
            "as_of": state.as_of.isoformat() if state.as_of else None, "events_applied": state.events_applied,
            "horizon_s": state.horizon.total_seconds(),
            "watermarks": {str(k): {n: t.isoformat() for n, t in v.items()} for k, v in state.watermarks.items()},
            "sensors": [v.to_json() for v in state.sensors.values()],
            "coast": [v.to_json() for v in state.coast.values()],
            "alerts": [a.model_dump(mode="json") for a in state.alerts.values()],
            "municipal": dict(state.municipal),  # a copy: a fold in progress changes its own dict
            "aggregates": [p.to_json() for p in state.aggregates.values()]}


def from_snapshot(pack: RegionPack, doc: dict[str, Any]) -> TwinState:
    if doc.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"twin snapshot version {doc.get('version')!r} is not {SNAPSHOT_VERSION}; rebuild the snapshots")
    if doc.get("region") != pack.id:
        raise ValueError(f"twin snapshot is of region {doc.get('region')!r}, the loaded pack is {pack.id!r}")
    if doc.get("pack") != pack.fold_fingerprint():
        raise ValueError(f"twin snapshot was folded with region pack {doc.get('pack')!r} (sensors and coast segments), "
                         f"the loaded pack is {pack.fold_fingerprint()!r}; rebuild the snapshots")
    sensors = [SensorState.from_json(d) for d in doc["sensors"]]
    coast = [CoastState.from_json(d) for d in doc["coast"]]
    alerts = [AlertRaised.model_validate(d) for d in doc["alerts"]]
    parts = [aggregate_model.Partial.from_json(d) for d in doc["aggregates"]]
    return TwinState(pack=pack, sensors={s.entity_id: s for s in sensors}, coast={c.segment_id: c for c in coast},
                     alerts={a.alert_id: a for a in alerts}, municipal=dict(doc["municipal"]),
                     aggregates={p.key: p for p in parts},
                     as_of=datetime.fromisoformat(doc["as_of"]) if doc["as_of"] else None,
                     events_applied=int(doc["events_applied"]), horizon=timedelta(seconds=float(doc["horizon_s"])),
                     watermarks={int(k): {n: datetime.fromisoformat(t) for n, t in v.items()}
                                 for k, v in doc["watermarks"].items()})
