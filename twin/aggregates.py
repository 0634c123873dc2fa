"""Windowed aggregates over readings (pure): traffic counts per road segment per 15 minutes, parking occupancy per
neighbourhood (the current value, and hourly sums of occupied and of offered spaces over the readings: the day's
curve), hourly air-quality means per neighbourhood.

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
PARKING_WINDOW = timedelta(hours=1)


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
    # for 'current' aggregates: the latest (value, capacity) per member sensor, and when it was measured (RFC 3339)
    members: dict[str, tuple[float, float]] = field(default_factory=dict)
    member_at: dict[str, str] = field(default_factory=dict)
    rev: int = 0  # grows with every change of this partial: a reader keeps the highest

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
                "minimum": self.minimum, "maximum": self.maximum, "members": {k: list(v) for k, v in self.members.items()},
                "member_at": dict(self.member_at), "rev": self.rev}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Partial:
        return cls(metric=d["metric"], group=d["group"], window=datetime.fromisoformat(d["window"]) if d["window"] else None,
                   window_s=d["window_s"], shard=d["shard"], total=d["total"], count=d["count"], minimum=d["minimum"],
                   maximum=d["maximum"], members={k: (v[0], v[1]) for k, v in d["members"].items()},
                   member_at=dict(d.get("member_at") or {}), rev=int(d.get("rev", 0)))


def contributions(reading: Reading, sensor: Sensor) -> list[tuple[str, str, datetime | None, int, float, float | None]]:
    """What one reading adds: (metric, group, window, window_s, value, capacity-or-None)."""
    out: list[tuple[str, str, datetime | None, int, float, float | None]] = []
    t = reading.occurred_at
    if isinstance(reading, TrafficCounted) and sensor.road:
        out.append(("traffic_vehicles", sensor.road, window_start(t, TRAFFIC_WINDOW), int(TRAFFIC_WINDOW.total_seconds()),
                    float(reading.vehicles), None))
    elif isinstance(reading, ParkingOccupancyReported) and sensor.neighbourhood:
        out.append(("parking_occupancy", sensor.neighbourhood, None, 0, float(reading.occupied), float(reading.capacity)))
        w, ws = window_start(t, PARKING_WINDOW), int(PARKING_WINDOW.total_seconds())
        out += [("parking_occupied_spaces", sensor.neighbourhood, w, ws, float(reading.occupied), None),
                ("parking_capacity_spaces", sensor.neighbourhood, w, ws, float(reading.capacity), None)]
    elif isinstance(reading, AirQualityMeasured) and sensor.neighbourhood:
        w, ws = window_start(t, AIR_WINDOW), int(AIR_WINDOW.total_seconds())
        out += [("air_no2_ugm3", sensor.neighbourhood, w, ws, reading.no2_ugm3, None),
                ("air_pm10_ugm3", sensor.neighbourhood, w, ws, reading.pm10_ugm3, None),
                ("air_pm25_ugm3", sensor.neighbourhood, w, ws, reading.pm25_ugm3, None)]
    return out


def fold(partials: dict[str, Partial], readings: Iterable[Reading], sensors: dict[str, Sensor], shard: int,
         load: Any = None) -> dict[str, Partial]:
    """Add readings to the partials (mutated; *load(key)* fetches one not yet in it); returns the changed partials.

    Windowed metrics add every reading to the window of its event time (late ones too); parking keeps per member the
    reading with the newest ``occurred_at``. Each call counts what it is given: the caller makes sure a reading comes
    once (the worker by its applied-offset markers)."""
    rows = ((type(r).__name__, {**r.__dict__, "entity_id": str(r.entity_id)}, r.occurred_at) for r in readings)
    return fold_rows(partials, rows, sensors, shard, load)


Acc = dict[tuple[str, str, int | None, int], list[Any]]

WINDOWED = {
    "TrafficCounted": (("traffic_vehicles", "vehicles"),),
    "AirQualityMeasured": (("air_no2_ugm3", "no2_ugm3"), ("air_pm10_ugm3", "pm10_ugm3"), ("air_pm25_ugm3", "pm25_ugm3")),
    # the hour's occupancy of a neighbourhood is sum(occupied) / sum(capacity) over its readings (readers divide)
    "ParkingOccupancyReported": (("parking_occupied_spaces", "occupied"), ("parking_capacity_spaces", "capacity")),
}
WINDOW_S = {"TrafficCounted": int(TRAFFIC_WINDOW.total_seconds()), "AirQualityMeasured": int(AIR_WINDOW.total_seconds()),
            "ParkingOccupancyReported": int(PARKING_WINDOW.total_seconds())}


def fold_rows(partials: dict[str, Partial], rows: Iterable[tuple[str, dict[str, Any], datetime]], sensors: dict[str, Sensor],
              shard: int, load: Any = None) -> dict[str, Partial]:
    """:func:`fold` on light rows ``(record name, Avro dict, occurred_at)``: the hot path's variant, the same result."""
    acc: Acc = {}  # key -> [total, count, min, max, members, member_at]
    for name, rec, t in rows:
        sensor = sensors.get(rec["entity_id"])
        if sensor is None:
            continue
        if name == "ParkingOccupancyReported":
            if not sensor.neighbourhood:
                continue
            k: tuple[str, str, int | None, int] = ("parking_occupancy", sensor.neighbourhood, None, 0)
            a = acc.get(k)
            if a is None:
                a = acc[k] = [0.0, 0, None, None, {}, {}]
            sid = rec["entity_id"]
            seen = a[5].get(sid)
            if seen is None or t >= seen:
                a[4][sid] = (float(rec["occupied"]), float(rec["capacity"]))
                a[5][sid] = t
        metrics = WINDOWED.get(name)
        if metrics is None:
            continue
        group = str(sensor.road or "") if name == "TrafficCounted" else str(sensor.neighbourhood or "")  # parking: has one
        if not group:
            continue
        ws = WINDOW_S[name]
        w: int | None = int(t.timestamp()) // ws * ws
        for metric, fld in metrics:
            value = float(rec[fld])
            k = (metric, group, w, ws)
            a = acc.get(k)
            if a is None:
                acc[k] = [value, 1, value, value, None, None]
            else:
                a[0] += value
                a[1] += 1
                if value < a[2]:
                    a[2] = value
                if value > a[3]:
                    a[3] = value
    return merge(partials, acc, shard, load)


def merge(partials: dict[str, Partial], acc: Acc, shard: int, load: Any = None) -> dict[str, Partial]:
    """Merge a batch's accumulators into the partials (mutated): ``acc[(metric, group, window start s or None,
    window_s)] = [total, count, min, max, members, member_at]`` (members/member_at: the newest (value, capacity) and
    time per member for 'current' metrics, else None). Returns the changed partials."""
    changed: dict[str, Partial] = {}
    iso: dict[int, tuple[datetime, str]] = {}
    for (metric, group, w, ws), (total, count, lo, hi, members, member_at) in acc.items():
        if w is None:
            window, wtext = None, "current"
        else:
            if w not in iso:
                dt = datetime.fromtimestamp(w, UTC)
                iso[w] = (dt, dt.isoformat())
            window, wtext = iso[w]
        key = f"{metric}|{group}|{wtext}|{shard}"
        current = partials.get(key)
        if current is None and load is not None:
            current = load(key)
        if members is not None:
            current = current or Partial(metric, group, window, ws, shard)
            merged, merged_at = dict(current.members), dict(current.member_at)
            for sid, value_cap in members.items():
                at_new = member_at[sid]
                before = merged_at.get(sid)
                if before is None or at_new >= datetime.fromisoformat(before):
                    merged[sid] = value_cap
                    merged_at[sid] = at_new.isoformat()
            if merged == current.members and merged_at == current.member_at:
                continue
            new = replace(current, members=merged, member_at=merged_at, count=len(merged),
                          total=sum(v for v, _ in merged.values()), rev=current.rev + 1)
        elif current is None:
            new = Partial(metric, group, window, ws, shard, total, count, lo, hi, {}, {}, 1)
        else:
            new = Partial(metric, group, window, ws, shard, current.total + total, current.count + count,
                          lo if current.minimum is None else min(current.minimum, lo),
                          hi if current.maximum is None else max(current.maximum, hi), {}, {}, current.rev + 1)
        partials[key] = changed[key] = new
    return changed


# -- the horizon: one rule for the worker, time travel and the API ----------------------------------------------------
#
# Per shard (the Kafka partition a reading came from) and per windowed reading type (one input topic each:
# TrafficCounted, AirQualityMeasured, ParkingOccupancyReported), the *watermark* is the newest ``occurred_at`` of such
# readings of that shard folded so far. A windowed partial stays in the hot state while its window ends after
# ``watermark - horizon`` (the watermark of its metric's reading type and its shard); once its end is at or before that
# cutoff it leaves (the worker writes a tombstone, time travel drops it, the API forgets it), and a reading whose window
# ends at or before the cutoff (the watermark counted with that reading) adds to no partial: it is answered from
# history only (a parking reading that late adds neither to its hour nor to the current occupancy). Current values
# (parking) never leave. A watermark follows one topic partition, so it depends only on that partition's offset order,
# which the broker, the archive and a replay all keep (not on how a consumer interleaves topics). Window ends are
# multiples of ``EVICT_STEP``: the partials past a cutoff change only when ``step_of(cutoff)`` grows, so sweeping then
# is exact.

EVICT_STEP = 900  # seconds; every window size is a multiple of it
if any(ws % EVICT_STEP for ws in WINDOW_S.values()):
    raise RuntimeError(f"aggregate windows {WINDOW_S} must be multiples of EVICT_STEP={EVICT_STEP} s")
SOURCE = {metric: name for name, metrics in WINDOWED.items() for metric, _ in metrics}  # metric -> reading type


def cutoff(watermark: datetime, horizon: timedelta) -> datetime:
    """Windows ending at or before this leave the hot state (``watermark``: the newest reading of their type and shard)."""
    return watermark - horizon


def step_of(cut: datetime) -> int:
    """The eviction step a cutoff lies in: the set of expired windows changes only when this grows."""
    return int(cut.timestamp()) // EVICT_STEP


def sweep_key(watermarks: dict[str, datetime], horizon: timedelta) -> tuple[tuple[str, int], ...]:
    """Changes exactly when some reading type's cutoff enters a new step: the moments a sweep finds something new."""
    return tuple(sorted((name, step_of(cutoff(t, horizon))) for name, t in watermarks.items()))


def expired(p: Partial, cutoff: datetime) -> bool:
    """True when the partial's window ended at or before *cutoff* (the hot state's horizon); current values never
    expire."""
    return p.window is not None and p.window + timedelta(seconds=p.window_s) <= cutoff


def expired_by(metric: str, window: datetime | None, window_s: int, watermarks: dict[str, datetime],
               horizon: timedelta) -> bool:
    """The horizon rule for one partial of a shard, given that shard's watermarks (by reading type)."""
    if window is None:
        return False
    wm = watermarks.get(SOURCE.get(metric, ""))
    return wm is not None and window + timedelta(seconds=window_s) <= cutoff(wm, horizon)


def within_horizon(rows: Iterable[tuple[str, dict[str, Any], datetime]], watermarks: dict[str, datetime],
                   horizon: timedelta) -> tuple[list[tuple[str, dict[str, Any], datetime]], dict[str, datetime]]:
    """The rows (in order) that may add to a partial under the horizon rule, and the shard's watermarks after them.

    A windowed row (parking's too: its hour) first advances its type's watermark and is left out when its window ends at
    or before ``watermark - horizon``; other rows pass (``fold_rows`` ignores them). *watermarks* is not
    changed: the result is a new dict when a watermark moved."""
    kept = []
    h = horizon.total_seconds()
    marks = watermarks
    ts_of = {name: t.timestamp() for name, t in watermarks.items()}
    for row in rows:
        name, _, t = row
        ws = WINDOW_S.get(name)
        if ws is not None:
            ts = t.timestamp()
            wm = ts_of.get(name)
            if wm is None or ts > wm:
                if marks is watermarks:
                    marks = dict(watermarks)
                ts_of[name], marks[name], wm = ts, t, ts
            if (ts // ws + 1) * ws <= wm - h:
                continue
        kept.append(row)
    return kept, marks


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
