"""The state of the coastline: per coast segment the water level, freeboard (crest minus level), the BSH storm-surge
class, and alerts when a class or the freeboard threshold is crossed and when it clears (pure)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from twin.entities import CoastSegment
from twin.events import AlertCleared, AlertRaised, Event, WaterLevelMeasured

# BSH classes for the Baltic, metres above mean water level (lower bound of each class)
SURGE_CLASSES: tuple[tuple[float, str], ...] = (
    (1.00, "storm_surge"),
    (1.25, "medium_storm_surge"),
    (1.50, "severe_storm_surge"),
    (2.00, "very_severe_storm_surge"),
)
SEVERITY: dict[str, Literal["info", "warning", "severe", "extreme"]] = {
    "storm_surge": "warning", "medium_storm_surge": "warning", "severe_storm_surge": "severe",
    "very_severe_storm_surge": "extreme",
}
LABEL = {"storm_surge": "storm surge", "medium_storm_surge": "medium storm surge",
         "severe_storm_surge": "severe storm surge", "very_severe_storm_surge": "very severe storm surge"}
HYSTERESIS_M = 0.05  # a level must fall this far below a threshold before the alert clears


def surge_class(level_m: float) -> str | None:
    """BSH class: 1.00-1.25 storm surge, 1.25-1.50 medium, 1.50-2.00 severe, above 2.00 very severe."""
    found = None
    for lower, name in SURGE_CLASSES:
        if level_m > lower if name == "very_severe_storm_surge" else level_m >= lower:
            found = name
    return found


def _class_with_hysteresis(level_m: float, previous: str | None) -> str | None:
    now = surge_class(level_m)
    if previous is None or now == previous:
        return now
    order = [n for _, n in SURGE_CLASSES]
    if now is None or order.index(now) < order.index(previous):
        # falling: keep the previous class until the level is clearly below its lower bound
        lower = dict((n, b) for b, n in SURGE_CLASSES)[previous]
        if level_m > lower - HYSTERESIS_M:
            return previous
    return now


class LevelReading(Protocol):
    """What :func:`assess` reads of a water-level reading: a ``WaterLevelMeasured`` or the hot path's light row."""

    @property
    def entity_id(self) -> str: ...

    @property
    def occurred_at(self) -> datetime: ...

    @property
    def level_m(self) -> float: ...

    @property
    def event_id(self) -> str: ...


def alert_event_id(alert_id: str, kind: str, cause_event_id: str) -> str:
    """The id of an alert event, derived from its cause (the reading): the same in the live agent, in a batch done
    again after a crash, and in time travel (equal to ``streams.agents.stable_id("alert", alert_id, kind, cause)``)."""
    return hashlib.blake2b(f"alert|{alert_id}|{kind}|{cause_event_id}".encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class CoastState:
    segment_id: str
    crest_m: float
    level_m: float
    freeboard_m: float
    surge_class: str | None
    low_freeboard: bool
    overtopped: bool
    observed_at: datetime
    gauge: str
    revision: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"segment_id": self.segment_id, "crest_m": self.crest_m, "level_m": self.level_m,
                "freeboard_m": self.freeboard_m, "surge_class": self.surge_class, "low_freeboard": self.low_freeboard,
                "overtopped": self.overtopped, "observed_at": self.observed_at.isoformat(), "gauge": self.gauge,
                "revision": self.revision}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CoastState:
        return cls(**{**d, "observed_at": datetime.fromisoformat(d["observed_at"])})


def assess(segment: CoastSegment, prev: CoastState | None, reading: WaterLevelMeasured | LevelReading,
           freeboard_threshold_m: float = 0.5) -> tuple[CoastState, list[Event]]:
    """Fold a water-level reading into a coast segment's state; returns the new state and the alerts it causes.

    An older reading than the state's leaves it unchanged (the same object, no alerts)."""
    if prev is not None and reading.occurred_at <= prev.observed_at:
        return prev, []
    level = reading.level_m
    freeboard = round(segment.crest_m - level, 3)
    cls = _class_with_hysteresis(level, prev.surge_class if prev else None)
    was_low = prev.low_freeboard if prev else False
    low = freeboard < freeboard_threshold_m or (was_low and freeboard < freeboard_threshold_m + HYSTERESIS_M)
    over = freeboard < 0 or (prev is not None and prev.overtopped and freeboard < HYSTERESIS_M)
    state = CoastState(segment.id, segment.crest_m, level, freeboard, cls, low, over, reading.occurred_at,
                       str(reading.entity_id), 0 if prev is None else prev.revision + 1)
    env: dict[str, Any] = {"entity_id": segment.id, "region": segment.id.region, "occurred_at": reading.occurred_at,
           "source": "twin-coast"}
    alerts: list[Event] = []
    prev_cls = prev.surge_class if prev else None
    if cls != prev_cls:
        aid = f"{segment.id}:storm_surge"
        if cls is None:
            alerts.append(AlertCleared(**env, event_id=alert_event_id(aid, "AlertCleared", reading.event_id),
                                       alert_id=aid, category="storm_surge",
                                       message=f"{segment.name or segment.id}: water level {level:+.2f} m, storm surge over"))
        else:
            threshold = next(b for b, n in SURGE_CLASSES if n == cls)
            alerts.append(AlertRaised(**env, event_id=alert_event_id(aid, "AlertRaised", reading.event_id), alert_id=aid,
                                      severity=SEVERITY[cls], category="storm_surge", public=True,
                                      message=f"{segment.name or segment.id}: {LABEL[cls]}, water level {level:+.2f} m "
                                              f"above mean", value=level, threshold=threshold))
    for flag, before, cat, thr, sev, text in (
        (low, was_low, "freeboard", freeboard_threshold_m, "severe", "freeboard below {thr:.2f} m"),
        (over, prev.overtopped if prev else False, "overtopping", 0.0, "extreme", "water over the crest"),
    ):
        if flag == before:
            continue
        aid = f"{segment.id}:{cat}"
        if flag:
            alerts.append(AlertRaised(**env, event_id=alert_event_id(aid, "AlertRaised", reading.event_id),  # type: ignore[arg-type]
                                      alert_id=aid, severity=sev, category=cat, public=True,
                                      message=f"{segment.name or segment.id}: {text.format(thr=thr)} "
                                              f"(crest {segment.crest_m:.2f} m, freeboard {freeboard:+.2f} m)",
                                      value=freeboard, threshold=thr))
        else:
            alerts.append(AlertCleared(**env, event_id=alert_event_id(aid, "AlertCleared", reading.event_id),
                                       alert_id=aid, category=cat,
                                       message=f"{segment.name or segment.id}: freeboard {freeboard:+.2f} m, cleared"))
    return state, alerts


