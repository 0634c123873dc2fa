"""GTFS-Realtime feeds (protobuf ``FeedMessage``, https://gtfs.org/documentation/realtime/reference/) against the
static schedule: vehicle states, trip delays, departure boards and dead letters (no I/O here).

- VehiclePositions -> one twin entity per vehicle, ``<region>:_:vehicle:bus-<vehicle id>`` (scope ``_``: a bus crosses
  neighbourhoods), its state the position, bearing, speed, trip, route and headsign.
- TripUpdates -> per trip the stop time updates, turned into an estimate per stop of the trip: a stop's own update
  (absolute ``time`` or ``delay``, departure before arrival), else the delay of the nearest update upstream (the spec's
  propagation); stops before the first update have no estimate; ``SKIPPED`` stops and ``CANCELED`` trips show as
  cancelled.
- Departure boards -> one twin entity per stop, ``<region>:<neighbourhood or _>:stop:<stop id>``: the next departures
  (scheduled, estimated, delay, route, headsign) of the services running today (and yesterday's after midnight).

Deduplication is by (entity id, timestamp): an entity whose timestamp (else the header's) is not newer than the last
one used is skipped. An entity that names a trip or stop the schedule does not know is a dead letter with the reason.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.protobuf.message import DecodeError
from google.transit import gtfs_realtime_pb2 as rt

from streams.sources.gtfs.static import Schedule, StopTime, route_order
from streams.sources.polling import source_dead_letter
from twin.events import DeadLettered
from twin.ids import EntityId, EntityKind

PROCESSOR = "gtfs"
SKIPPED = rt.TripUpdate.StopTimeUpdate.SKIPPED
NO_DATA = rt.TripUpdate.StopTimeUpdate.NO_DATA
CANCELED = rt.TripDescriptor.CANCELED
_BAD = re.compile(r"[^A-Za-z0-9._-]")


class FeedError(ValueError):
    """The body is not a GTFS-Realtime FeedMessage."""


def decode(body: bytes) -> rt.FeedMessage:
    msg = rt.FeedMessage()
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        raise FeedError(f"not a GTFS-Realtime FeedMessage (protobuf: {exc}); first bytes {body[:40]!r}") from None
    if not msg.HasField("header") or not msg.header.gtfs_realtime_version:
        raise FeedError("FeedMessage without header.gtfs_realtime_version (required); is the URL a GTFS-Realtime feed?")
    return msg


def entity_name(raw: str, prefix: str = "") -> str:
    """A GTFS id as the name part of an entity id: characters an entity id does not allow become '-', and then a short
    hash of the original keeps two ids apart that differ only there."""
    name = prefix + _BAD.sub("-", raw)
    if name != prefix + raw or not name[:1].isalnum():
        name = f"{name.strip('-._')[:100]}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"
    return name[:128]


def dead(feed: str, key: str, value: bytes, kind: str, reason: str, dedup: str) -> DeadLettered:
    did = hashlib.sha256("|".join(("plietsch-gtfs", feed, kind, dedup)).encode()).hexdigest()[:32]
    return source_dead_letter(PROCESSOR, did, f"gtfs-rt:{feed}", key, value, kind, f"GTFS-Realtime {feed}: {reason}")


@dataclass
class Update:
    """A TripUpdate as the boards use it."""

    trip_id: str
    cancelled: bool
    by_seq: dict[int, tuple[int | None, int | None, bool]]  # stop_sequence -> (absolute time, delay, skipped)
    by_stop: dict[str, tuple[int | None, int | None, bool]]  # stop_id -> the same, for updates without a sequence


@dataclass
class Outcome:
    states: list[tuple[EntityId, int, dict[str, Any]]] = field(default_factory=list)  # (entity, revision, state)
    dead: list[DeadLettered] = field(default_factory=list)
    duplicates: int = 0
    trips: int = 0  # trip updates taken


def _timestamp(entity_ts: int, header_ts: int) -> int:
    return entity_ts or header_ts


def vehicle_positions(msg: rt.FeedMessage, schedule: Schedule, region: str, last: dict[str, int]) -> Outcome:
    """Vehicle states from a VehiclePositions feed; *last* (entity id -> timestamp used) is updated."""
    out = Outcome()
    for ent in msg.entity:
        if not ent.HasField("vehicle"):
            continue
        v = ent.vehicle
        vid = v.vehicle.id or ent.id
        ts = _timestamp(v.timestamp, msg.header.timestamp)
        eid = EntityId.of(region, "_", EntityKind.VEHICLE, entity_name(vid, "bus-"))
        if ts <= 0:
            out.dead.append(dead("vehicle_positions", ent.id, ent.SerializeToString(), "no_timestamp",
                                 f"vehicle {vid!r} has no timestamp, nor has the feed header: its positions cannot be "
                                 "ordered; the producer must set one of them", f"ts|{vid}"))
            continue
        if last.get(eid, -1) >= ts:
            out.duplicates += 1
            continue
        trip_id = v.trip.trip_id
        trip = schedule.trips.get(trip_id) if trip_id else None
        if trip_id and trip is None:
            out.dead.append(dead("vehicle_positions", ent.id, ent.SerializeToString(), "unknown_trip",
                                 f"vehicle {vid!r} runs trip {trip_id!r}, which the static schedule ({schedule.source}) "
                                 "does not have; is PLIETSCH_GTFS_STATIC the schedule this feed belongs to (and "
                                 "current)?", f"trip|{trip_id}"))
            last[eid] = ts
            continue
        if not v.HasField("position"):
            continue
        p = v.position
        state: dict[str, Any] = {
            "vehicle_id": vid, "label": v.vehicle.label or None, "lat": round(p.latitude, 5), "lon": round(p.longitude, 5),
            "bearing_deg": p.bearing if p.HasField("bearing") else None,
            "speed_ms": round(p.speed, 2) if p.HasField("speed") else None,
            "trip_id": trip_id or None, "route": schedule.routes.get(trip.route_id) if trip else None,
            "headsign": trip.headsign or None if trip else None, "stop_id": v.stop_id or None,
            "observed_at": datetime.fromtimestamp(ts, UTC).isoformat(), "source": f"GTFS-Realtime {schedule.source}",
            "synthetic": schedule.synthetic}
        out.states.append((eid, ts, state))
        last[eid] = ts
    return out


def _point(e: Any) -> tuple[int | None, int | None]:
    """(absolute time, delay) of a StopTimeEvent; departure is preferred by the caller."""
    return (e.time if e.HasField("time") else None, e.delay if e.HasField("delay") else None)


def trip_updates(msg: rt.FeedMessage, schedule: Schedule, updates: dict[str, Update], last: dict[str, int]) -> Outcome:
    """Take a TripUpdates feed into *updates* (trip_id -> Update); *last* (trip id -> timestamp used) is updated."""
    out = Outcome()
    for ent in msg.entity:
        if not ent.HasField("trip_update"):
            continue
        tu = ent.trip_update
        trip_id = tu.trip.trip_id
        ts = _timestamp(tu.timestamp, msg.header.timestamp)
        key = f"trip|{trip_id or ent.id}"
        if last.get(key, -1) >= ts:
            out.duplicates += 1
            continue
        last[key] = ts
        if trip_id not in schedule.trips:
            what = f"trip {trip_id!r}" if trip_id else "a trip update without trip_id"
            out.dead.append(dead("trip_updates", ent.id, ent.SerializeToString(), "unknown_trip",
                                 f"{what} is not in the static schedule ({schedule.source}); is PLIETSCH_GTFS_STATIC the "
                                 "schedule this feed belongs to (and current)?", f"trip|{trip_id or ent.id}"))
            continue
        unknown = [u.stop_id for u in tu.stop_time_update if u.stop_id and u.stop_id not in schedule.stops]
        if unknown:
            out.dead.append(dead("trip_updates", ent.id, ent.SerializeToString(), "unknown_stop",
                                 f"trip {trip_id!r} updates stop(s) {', '.join(map(repr, unknown[:5]))}, which the static "
                                 f"schedule ({schedule.source}) does not have; the trip's update is not used",
                                 f"stop|{trip_id}|{'|'.join(unknown)}"))
            continue
        by_seq: dict[int, tuple[int | None, int | None, bool]] = {}
        by_stop: dict[str, tuple[int | None, int | None, bool]] = {}
        for u in tu.stop_time_update:
            if u.schedule_relationship == NO_DATA:
                t, d = None, None
            else:
                t, d = _point(u.departure) if u.HasField("departure") else (None, None)
                if t is None and d is None and u.HasField("arrival"):
                    t, d = _point(u.arrival)
            value = (t, d, u.schedule_relationship == SKIPPED)
            if u.HasField("stop_sequence"):
                by_seq[u.stop_sequence] = value
            elif u.stop_id:
                by_stop[u.stop_id] = value
        updates[trip_id] = Update(trip_id, tu.trip.schedule_relationship == CANCELED, by_seq, by_stop)
        out.trips += 1
    return out


def estimates(schedule: Schedule, update: Update, day_start: datetime) -> dict[int, tuple[int | None, bool]]:
    """stop_sequence -> (estimated unix time or None, cancelled) for every stop of the trip."""
    out: dict[int, tuple[int | None, bool]] = {}
    delay: int | None = None
    base = int(day_start.timestamp())
    for st in schedule.by_trip.get(update.trip_id, []):
        sched = base + st.departure_s
        u = update.by_seq.get(st.sequence) or update.by_stop.get(st.stop_id)
        skipped = False
        if u is not None:
            t, d, skipped = u
            if t is not None:
                delay = t - sched
            elif d is not None:
                delay = d
            elif not skipped:
                delay = None  # NO_DATA: nothing known from here on until the next update
        out[st.sequence] = (None if delay is None else sched + delay, skipped or update.cancelled)
    return out


def board(schedule: Schedule, updates: dict[str, Update], stop_id: str, now: datetime, horizon_s: int = 5400,
          limit: int = 12) -> list[dict[str, Any]]:
    """The next departures at *stop_id*: in the coming *horizon_s* by their estimate (else the schedule), at most
    *limit*, cancelled ones included (marked), departures already gone left out."""
    stop_times = schedule.by_stop.get(stop_id, [])
    local = now.astimezone(schedule.timezone).date()
    t_now = int(now.timestamp())
    rows: list[dict[str, Any]] = []
    for day in (local - timedelta(days=1), local):
        start = schedule.day_start(day)
        base = int(start.timestamp())
        # late buses can still come: look back up to an hour of schedule
        first = bisect.bisect_left(stop_times, t_now - base - 3600, key=lambda s: s.departure_s)
        for st in stop_times[first:]:
            sched = base + st.departure_s
            if sched > t_now + horizon_s:
                break
            trip = schedule.trips[st.trip_id]
            if not schedule.runs_on(trip.service_id, day):
                continue
            row = _row(schedule, updates.get(st.trip_id), st, start, sched, day)
            if row["_at"] >= t_now and row["_at"] <= t_now + horizon_s:
                rows.append(row)
    rows.sort(key=lambda r: (r["_at"], r["route"], r["trip_id"]))
    for r in rows:
        del r["_at"]
    return rows[:limit]


def _row(schedule: Schedule, update: Update | None, st: StopTime, start: datetime, sched: int, day: date) -> dict[str, Any]:
    est, cancelled = (None, False)
    if update is not None:
        est, cancelled = estimates(schedule, update, start).get(st.sequence, (None, False))
    trip = schedule.trips[st.trip_id]
    iso = lambda t: datetime.fromtimestamp(t, schedule.timezone).isoformat()  # noqa: E731
    return {"trip_id": st.trip_id, "route": schedule.routes[trip.route_id], "headsign": trip.headsign,
            "scheduled": iso(sched), "estimated": None if est is None else iso(est),
            "delay_s": None if est is None else est - sched, "realtime": est is not None, "cancelled": cancelled,
            "service_day": day.isoformat(), "_at": sched if est is None else est}


def _languages(text: Any) -> dict[str, str]:
    """The translations of a TranslatedString in German or English, by 'de' / 'en' (tags like 'de-DE' count); others
    and untagged ones are left out (public text is only what the feed gives in these languages)."""
    out: dict[str, str] = {}
    for t in text.translation:
        lang = t.language.lower().split("-")[0]
        if lang in ("de", "en") and t.text.strip() and lang not in out:
            out[lang] = t.text.strip()[:300]
    return out


def service_alerts(msg: rt.FeedMessage, schedule: Schedule, now: int) -> tuple[dict[str, list[dict[str, Any]]],
                                                                            list[DeadLettered]]:
    """The alerts active at *now* of an Alerts feed, per affected stop_id: a stop named by the alert, the stops of a
    route or trip it names. Each alert: id, header (de/en as the feed gives them), cause, effect, routes, active_until.
    An alert naming a stop, route or trip the schedule lacks is a dead letter (``unknown_stop`` / ``unknown_route`` /
    ``unknown_trip``) and is not shown; one without a German or English header is shown without text."""
    by_stop: dict[str, list[dict[str, Any]]] = {}
    dead_letters: list[DeadLettered] = []
    for ent in msg.entity:
        if not ent.HasField("alert"):
            continue
        a = ent.alert
        periods = [(p.start or 0, p.end or 2**63) for p in a.active_period]
        if periods and not any(s <= now <= e for s, e in periods):
            continue
        stops: set[str] = set()
        routes: set[str] = set()
        unknown = ""
        for sel in a.informed_entity:
            trip_id = sel.trip.trip_id if sel.HasField("trip") else ""
            if sel.stop_id and sel.stop_id not in schedule.stops:
                unknown = f"unknown_stop|stop {sel.stop_id!r}"
            elif sel.route_id and sel.route_id not in schedule.routes:
                unknown = f"unknown_route|route {sel.route_id!r}"
            elif trip_id and trip_id not in schedule.trips:
                unknown = f"unknown_trip|trip {trip_id!r}"
            if unknown:
                break
            route_id = sel.route_id or (schedule.trips[trip_id].route_id if trip_id else "")
            if route_id:
                routes.add(schedule.routes[route_id])
            if sel.stop_id:
                stops.add(sel.stop_id)
            elif trip_id:
                stops.update(st.stop_id for st in schedule.by_trip.get(trip_id, []))
            elif route_id:
                stops.update(st.stop_id for t in schedule.trips.values() if t.route_id == route_id
                             for st in schedule.by_trip.get(t.trip_id, []))
        if unknown:
            kind, what = unknown.split("|", 1)
            dead_letters.append(dead("alerts", ent.id, ent.SerializeToString(), kind,
                                     f"alert {ent.id!r} names {what}, which the static schedule ({schedule.source}) does "
                                     "not have; the alert is not shown", f"alert|{ent.id}|{what}"))
            continue
        ends = [e for _, e in periods if e < 2**63]
        item = {"alert_id": ent.id, "header": _languages(a.header_text), "cause": rt.Alert.Cause.Name(a.cause),
                "effect": rt.Alert.Effect.Name(a.effect), "routes": sorted(routes, key=route_order),
                "active_until": datetime.fromtimestamp(max(ends), UTC).isoformat() if ends and len(ends) == len(periods)
                else None}
        for sid in stops:
            by_stop.setdefault(sid, []).append(item)
    for items in by_stop.values():
        items.sort(key=lambda i: i["alert_id"])
    return by_stop, dead_letters
