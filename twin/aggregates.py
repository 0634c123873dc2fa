"""Windowed aggregates over readings (pure): traffic counts per road segment per 15 minutes, parking occupancy per
neighbourhood, hourly air-quality means per neighbourhood.

Aggregates are kept as *partials* per shard (the Kafka partition the readings came from), so that each partial is
written only from its own partition (co-partitioned with its table); readers combine the partials of a key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from twin.entities import Sensor
from twin.events import AirQualityMeasured, ParkingOccupancyReported, Reading, TrafficCounted

TRAFFIC_WINDOW = timedelta(minutes=15)
AIR_WINDOW = timedelta(hours=1)


def window_start(t: datetime, size: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    n = (t.astimezone(UTC) - epoch) // size
    return epoch + n * size


@dataclass(frozen=True, slots=True)
class Partial:
    """One shard's contribution to an aggregate of *metric* over *group* in the window starting at *window*."""

    metric: str
    group: str
    window: datetime | None  # None: a current value (parking), not a window
    window_s: int
    shard: int
    total: float = 0.0
    count: int = 0
    minimum: float | None = None
    maximum: float | None = None
    # for 'current' aggregates: the latest (value, capacity) per member sensor
    members: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        w = self.window.isoformat() if self.window else "current"
        return f"{self.metric}|{self.group}|{w}|{self.shard}"

    def add(self, value: float) -> Partial:
        return replace(self, total=self.total + value, count=self.count + 1,
                       minimum=value if self.minimum is None else min(self.minimum, value),
                       maximum=value if self.maximum is None else max(self.maximum, value))

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "group": self.group, "window": self.window.isoformat() if self.window else None,
                "window_s": self.window_s, "shard": self.shard, "total": self.total, "count": self.count,
                "minimum": self.minimum, "maximum": self.maximum, "members": {k: list(v) for k, v in self.members.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Partial:
        return cls(metric=d["metric"], group=d["group"], window=datetime.fromisoformat(d["window"]) if d["window"] else None,
                   window_s=d["window_s"], shard=d["shard"], total=d["total"], count=d["count"], minimum=d["minimum"],
                   maximum=d["maximum"], members={k: (v[0], v[1]) for k, v in d["members"].items()})


def contributions(reading: Reading, sensor: Sensor) -> list[tuple[str, str, datetime | None, int, float, float | None]]:
    """What one reading adds: (metric, group, window, window_s, value, capacity-or-None)."""
    out: list[tuple[str, str, datetime | None, int, float, float | None]] = []
    t = reading.occurred_at
    if isinstance(reading, TrafficCounted) and sensor.road:
        out.append(("traffic_vehicles", sensor.road, window_start(t, TRAFFIC_WINDOW), int(TRAFFIC_WINDOW.total_seconds()),
                    float(reading.vehicles), None))
    elif isinstance(reading, ParkingOccupancyReported) and sensor.neighbourhood:
        out.append(("parking_occupancy", sensor.neighbourhood, None, 0, float(reading.occupied), float(reading.capacity)))
    elif isinstance(reading, AirQualityMeasured) and sensor.neighbourhood:
        w, ws = window_start(t, AIR_WINDOW), int(AIR_WINDOW.total_seconds())
        out += [("air_no2_ugm3", sensor.neighbourhood, w, ws, reading.no2_ugm3, None),
                ("air_pm10_ugm3", sensor.neighbourhood, w, ws, reading.pm10_ugm3, None),
                ("air_pm25_ugm3", sensor.neighbourhood, w, ws, reading.pm25_ugm3, None)]
    return out


def fold(partials: dict[str, Partial], readings: Iterable[Reading], sensors: dict[str, Sensor], shard: int,
         load: Any = None) -> dict[str, Partial]:
    """Add readings to the partials (mutated; *load(key)* fetches one not yet in it); returns the changed partials."""
    acc: dict[tuple[str, str, datetime | None, int], list[Any]] = {}  # key -> [total, count, min, max, members]
    for r in readings:
        sensor = sensors.get(r.entity_id)
        if sensor is None:
            continue
        for metric, group, window, window_s, value, capacity in contributions(r, sensor):
            k = (metric, group, window, window_s)
            a = acc.get(k)
            if a is None:
                a = acc[k] = [0.0, 0, None, None, {}]
            if capacity is None:
                a[0] += value
                a[1] += 1
                a[2] = value if a[2] is None else min(a[2], value)
                a[3] = value if a[3] is None else max(a[3], value)
            else:
                a[4][r.entity_id] = (value, capacity)
    changed: dict[str, Partial] = {}
    for (metric, group, window, window_s), (total, count, lo, hi, members) in acc.items():
        blank = Partial(metric, group, window, window_s, shard)
        key = blank.key
        current = partials.get(key)
        if current is None and load is not None:
            current = load(key)
        current = current or blank
        if members:
            merged = {**current.members, **members}
            new = replace(current, members=merged, count=len(merged), total=sum(v for v, _ in merged.values()))
        else:
            new = replace(current, total=current.total + total, count=current.count + count,
                          minimum=lo if current.minimum is None else min(current.minimum, lo),
                          maximum=hi if current.maximum is None else max(current.maximum, hi))
        partials[key] = changed[key] = new
    return changed


def combine(parts: Iterable[Partial]) -> dict[str, Any]:
    """Combine the partials of one (metric, group, window) into the figure a reader shows."""
    parts = list(parts)
    if not parts:
        raise ValueError("no partials to combine")
    first = parts[0]
    if any((p.metric, p.group, p.window) != (first.metric, first.group, first.window) for p in parts):
        raise ValueError("partials of different aggregates cannot be combined")
    if first.window is None:  # current occupancy: latest per member sensor
        members: dict[str, tuple[float, float]] = {}
        for p in parts:
            members.update(p.members)
        occupied = sum(v for v, _ in members.values())
        capacity = sum(c for _, c in members.values())
        return {"metric": first.metric, "group": first.group, "occupied": occupied, "capacity": capacity,
                "ratio": occupied / capacity if capacity else None, "sensors": len(members)}
    total = sum(p.total for p in parts)
    count = sum(p.count for p in parts)
    mins = [p.minimum for p in parts if p.minimum is not None]
    maxs = [p.maximum for p in parts if p.maximum is not None]
    return {"metric": first.metric, "group": first.group, "window": first.window.isoformat(), "window_s": first.window_s,
            "sum": total, "count": count, "mean": total / count if count else None,
            "min": min(mins) if mins else None, "max": max(maxs) if maxs else None}
