"""GTFS static + GTFS-Realtime buses polled continuously: ``plietsch source gtfs`` (README section GTFS).

The schedule (``PLIETSCH_GTFS_STATIC``, a GTFS zip or folder) is read once at start (``static.py``). Two GTFS-Realtime
feeds are polled every ``interval_s``: ``PLIETSCH_GTFS_VEHICLE_POSITIONS_URL`` and ``PLIETSCH_GTFS_TRIP_UPDATES_URL``
(either may be empty), with ``If-None-Match`` / ``If-Modified-Since`` when the server sent an ``ETag`` /
``Last-Modified``; a 304, or a feed whose header timestamp is the one already read, is "unchanged".

Into the twin: the source writes ``TwinEntityUpdated`` records to ``twin.updates`` (the compacted latest-state topic
the API's read model folds) for each bus (``<region>:_:vehicle:bus-<id>``, revision = the position's timestamp) and for
each stop's departure board (``<region>:<neighbourhood or _>:stop:<stop id>``, revision = unix time of the board, written
when the board changed). No new topic, schema or worker agent: these entities have no readings to fold, the feed already
holds their state. A body that is not a FeedMessage is a dead letter (``decode``), as is an entity naming a trip or stop
the schedule does not know (``unknown_trip``, ``unknown_stop``), once per defect. Transient failures (timeout,
connection refused, 5xx, 429) are retried with exponential backoff and jitter up to ``backoff_cap_s``; another 4xx is
logged with what to check and retried at the cap. Records are flushed to Kafka with retries (``kafka_retry``).

A restart repeats nothing: what the dedupe needs (each feed's last header timestamp, the timestamp used per bus and
trip, the trip delays held, a digest of each board written, the dead letters written) is kept in
``<data_dir>/gtfs/state.json``, written after each poll that changed it (to a temporary file, then renamed over the old
one: a crash leaves the old or the new file, never half of one). A run killed between the flush and that write
repeats the last poll's records once, with the same event ids (readers dedupe).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge
from pydantic_settings import SettingsConfigDict

from streams.catalogue import TWIN_UPDATES
from streams.files import atomic_write
from streams.publisher import EventPublisher
from streams.sources.gtfs.realtime import (
    FeedError,
    Outcome,
    Update,
    board,
    dead,
    decode,
    entity_name,
    service_alerts,
    trip_updates,
    vehicle_positions,
)
from streams.sources.gtfs.static import Schedule, load_schedule
from streams.sources.polling import (
    HttpSourceSettings,
    Permanent,
    Polled,
    PollingSource,
    SourceMetrics,
    Transient,
    get,
    send_dead_letter,
)
from twin.events import DeadLettered, TwinEntityUpdated
from twin.ids import EntityId, EntityKind
from twin.region import RegionPack

log = logging.getLogger("plietsch.gtfs")
FEEDS = ("vehicle_positions", "trip_updates", "alerts")
ORDER = {"vehicle_positions": 0, "alerts": 1, "trip_updates": 2, "schedule": 3}  # among feeds due at once: positions first
MAX_DEAD_IDS = 5000
KEEP_S = 2 * 86400  # buses and trips not heard of for this long (before the newest timestamp) are forgotten


class GtfsSettings(HttpSourceSettings):
    """``PLIETSCH_GTFS_*``: the schedule, the two realtime feeds, the boards, the poll limits, the metrics port."""

    model_config = SettingsConfigDict(env_prefix="PLIETSCH_GTFS_", extra="ignore")

    static: Path | None = None  # the GTFS zip (or folder); setting it turns the source on in 'plietsch run'
    vehicle_positions_url: str = ""  # a GTFS-Realtime VehiclePositions feed (protobuf)
    trip_updates_url: str = ""  # a GTFS-Realtime TripUpdates feed (protobuf)
    alerts_url: str = ""  # a GTFS-Realtime Alerts feed (protobuf): service alerts onto the affected stops' boards
    stops: str = ""  # comma-separated stop_ids with a departure board; empty: every stop inside the region's bbox
    interval_s: float = 30.0
    board_horizon_s: int = 5400  # departures of the next 90 minutes
    board_limit: int = 12  # at most this many per board
    metrics_port: int = 9469


class Metrics(SourceMetrics):
    def __init__(self) -> None:
        super().__init__("gtfs", "feed")
        r = self.registry
        self.feeds = Counter("plietsch_gtfs_feeds", "feed polls per outcome: fetched, unchanged (304 or the same header "
                             "timestamp), invalid (not a FeedMessage), failed (HTTP)", ["feed", "outcome"], registry=r)
        self.published = Counter("plietsch_gtfs_updates_published", "twin updates written, per entity kind", ["kind"],
                                 registry=r)
        self.duplicates = Counter("plietsch_gtfs_duplicates", "entities skipped: (entity id, timestamp) used already",
                                  ["feed"], registry=r)
        self.dead = Counter("plietsch_gtfs_dead_letters", "dead letters written, per reason", ["reason"], registry=r)
        self.vehicles = Gauge("plietsch_gtfs_vehicles", "vehicles in the last VehiclePositions feed", registry=r)
        self.trips = Gauge("plietsch_gtfs_trips_with_updates", "trips with a realtime update held", registry=r)
        self.boards = Gauge("plietsch_gtfs_boards", "stops with a departure board", registry=r)


@dataclass
class Feed(Polled):
    header_ts: int | None = None  # of the last feed read


def board_stops(schedule: Schedule, pack: RegionPack, wanted: str) -> dict[str, EntityId]:
    """stop_id -> entity id of the stops that get a board: the listed ones, else those inside the region's bbox."""
    if wanted.strip():
        ids = [s.strip() for s in wanted.split(",") if s.strip()]
        unknown = [s for s in ids if s not in schedule.stops]
        if unknown:
            raise ValueError(f"PLIETSCH_GTFS_STOPS names stop(s) {', '.join(map(repr, unknown[:10]))} that are not in "
                             f"{schedule.source} stops.txt")
    else:
        ids = region_stops(schedule, pack)
    return {sid: stop_entity(schedule, pack, sid) for sid in ids}


def region_stops(schedule: Schedule, pack: RegionPack) -> list[str]:
    """The stop_ids with departures inside the region's bbox."""
    w, s, e, n = pack.manifest.bbox
    return [sid for sid, st in schedule.stops.items() if w <= st.lon <= e and s <= st.lat <= n and sid in schedule.by_stop]


def stop_entity(schedule: Schedule, pack: RegionPack, stop_id: str) -> EntityId:
    """The stop's entity id: scope its neighbourhood (by its position), else '_'."""
    st = schedule.stops[stop_id]
    hood = pack.index.locate(st.lon, st.lat)["neighbourhood"]
    return EntityId.of(pack.id, EntityId.parse(hood).name if hood else "_", EntityKind.STOP, entity_name(stop_id))


class GtfsSource(PollingSource):
    topic = TWIN_UPDATES.name
    left_for_next_run = "the next run reads the feeds again and writes the current state"

    def __init__(self, settings: GtfsSettings, schedule: Schedule, pack: RegionPack, publisher: EventPublisher,
                 metrics: Metrics | None = None, report: Callable[[str], None] = log.info,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), data_dir: Path | None = None) -> None:
        super().__init__(settings, publisher, report, "plietsch-twin (gtfs source)")
        self.settings: GtfsSettings = settings
        self.schedule = schedule
        self.region = pack.id
        self.metrics = metrics or Metrics()
        self.clock = clock
        urls = {"vehicle_positions": settings.vehicle_positions_url, "trip_updates": settings.trip_updates_url,
                "alerts": settings.alerts_url}
        self.feeds = {n: Feed(n, u) for n, u in urls.items() if u}
        if not self.feeds:  # the schedule alone: boards by the timetable, refreshed every interval
            self.feeds["schedule"] = Feed("schedule", str(settings.static or schedule.source))
        self.stops = board_stops(schedule, pack, settings.stops)
        self.metrics.boards.set(len(self.stops))
        self.updates: dict[str, Update] = {}
        self.alerts: dict[str, list[dict[str, Any]]] = {}  # stop_id -> the active service alerts of the last Alerts feed
        self.last: dict[str, int] = {}  # dedupe: entity id (or 'trip|<id>') -> timestamp used
        self.boards: dict[str, str] = {}  # stop entity -> digest of the board last written
        self.dead_ids: set[str] = set()
        self.counts = {"vehicles": 0, "boards": 0, "duplicates": 0, "dead": 0}
        self.state_path = None if data_dir is None else data_dir / "gtfs" / "state.json"
        self.saved: str | None = None  # the state file's text as last written or read
        self.load_state()

    def _state(self) -> dict[str, Any]:
        return {"feeds": {n: f.header_ts for n, f in self.feeds.items()}, "last": self.last, "boards": self.boards,
                "alerts": self.alerts,
                "dead": sorted(self.dead_ids),
                "updates": {t: [u.cancelled, [[k, *v] for k, v in u.by_seq.items()], [[k, *v] for k, v in u.by_stop.items()]]
                            for t, u in self.updates.items()}}

    def load_state(self) -> None:
        """Take up where the last run stopped (``<data_dir>/gtfs/state.json``); a broken file is refused with what to do."""
        if self.state_path is None:
            return
        try:
            text = self.state_path.read_text()
            data = json.loads(text)
            for name, ts in data["feeds"].items():
                if name in self.feeds:
                    self.feeds[name].header_ts = ts
            self.last = {str(k): int(v) for k, v in data["last"].items()}
            self.boards = {str(k): str(v) for k, v in data["boards"].items()}
            self.dead_ids = set(data["dead"])
            self.alerts = dict(data.get("alerts") or {})
            self.updates = {t: Update(t, bool(c), {int(k): (a, b, bool(x)) for k, a, b, x in seq},
                                      {str(k): (a, b, bool(x)) for k, a, b, x in by_stop})
                            for t, (c, seq, by_stop) in data["updates"].items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"GTFS state {self.state_path} is not readable ({type(exc).__name__}: {exc}); delete it (the "
                             "next run then writes the current buses and boards again, and repeats dead letters "
                             "once, with the same ids)") from None
        self.saved = text
        self.report(f"GTFS: took up the state of the last run ({self.state_path}: {len(self.last)} buses and trips, "
                    f"{len(self.boards)} boards, {len(self.dead_ids)} dead letters)")

    def forget_old(self) -> None:
        """Forget buses and trips not heard of for KEEP_S before the newest timestamp (with a trip its delays): the
        state does not grow with every day's trips. A feed naming one again is taken as new."""
        if not self.last:
            return
        horizon = max(self.last.values()) - KEEP_S
        for key in [k for k, ts in self.last.items() if ts < horizon]:
            del self.last[key]
            if key.startswith("trip|"):
                self.updates.pop(key.removeprefix("trip|"), None)

    def save_state(self) -> None:
        """Write the state if it changed: to a temporary file, then renamed over the old one."""
        if self.state_path is None:
            return
        self.forget_old()
        text = json.dumps(self._state(), sort_keys=True, separators=(",", ":"))
        if text == self.saved:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.state_path, text.encode())
        self.saved = text

    def poll(self, feed: Feed) -> str:
        resp = get(self.http, feed.url, self.settings.timeout_s, feed.headers())
        if 400 <= resp.status_code < 500:
            env = f"PLIETSCH_GTFS_{feed.name.upper()}_URL"
            raise Permanent(f"HTTP {resp.status_code} for {feed.url}: check {env}; body {resp.text[:200]!r}")
        self.metrics.last_success.labels(feed.name).set(time.time())
        if resp.status_code == 304:
            return "unchanged"
        feed.answered(resp)
        try:
            msg = decode(resp.content)
        except FeedError as exc:
            self._emit([], [dead(feed.name, feed.url, resp.content, "decode", f"{feed.url}: {exc}",
                                 f"decode|{feed.url}|{resp.content[:64]!r}")])
            return "invalid"
        if feed.header_ts is not None and msg.header.timestamp and msg.header.timestamp == feed.header_ts:
            return "unchanged"
        feed.header_ts = msg.header.timestamp or None
        self.take(feed.name, msg)
        return "fetched"

    def take(self, name: str, msg: Any) -> None:
        """Take a decoded FeedMessage of feed *name* ('vehicle_positions', 'trip_updates' or 'alerts'): vehicle updates
        and dead letters written, trip delays and service alerts held for the next boards."""
        if name == "alerts":  # a full dataset: the alerts now active replace the last ones
            self.alerts, dead_letters = service_alerts(msg, self.schedule, int(self.clock().timestamp()))
            self._emit([], dead_letters)
            return
        if name == "vehicle_positions":
            out = vehicle_positions(msg, self.schedule, self.region, self.last)
            self.metrics.vehicles.set(sum(1 for e in msg.entity if e.HasField("vehicle")))
            records = [self._update(eid, "vehicle", rev, state, datetime.fromtimestamp(rev, UTC))
                       for eid, rev, state in out.states]
            self.counts["vehicles"] += len(records)
        else:
            out = trip_updates(msg, self.schedule, self.updates, self.last)
            self.metrics.trips.set(len(self.updates))
            records = []
        self._count(name, out)
        self._emit(records, out.dead)

    def _count(self, name: str, out: Outcome) -> None:
        self.metrics.duplicates.labels(name).inc(out.duplicates)
        self.counts["duplicates"] += out.duplicates

    def _update(self, eid: EntityId, kind: str, revision: int, state: dict[str, Any], at: datetime) -> TwinEntityUpdated:
        event_id = hashlib.sha256(f"gtfs|{eid}|{revision}|{state.get('departures', '')}|{state.get('alerts', '')}"
                                  .encode()).hexdigest()[:32]
        return TwinEntityUpdated(event_id=event_id, entity_id=eid,
                                 region=self.region, occurred_at=at, source="gtfs", entity_type=kind,
                                 revision=revision, state_json=json.dumps(state, ensure_ascii=False, sort_keys=True),
                                 cause_event_id="")

    def refresh_boards(self) -> int:
        """Compute every stop's board; write those that changed. Returns how many were written."""
        now = self.clock()
        records = []
        for sid, eid in self.stops.items():
            deps = board(self.schedule, self.updates, sid, now, self.settings.board_horizon_s, self.settings.board_limit)
            alerts = self.alerts.get(sid, [])
            digest = hashlib.sha256(json.dumps([deps, alerts], sort_keys=True).encode()).hexdigest()[:24]
            if self.boards.get(eid) == digest:
                continue
            stop = self.schedule.stops[sid]
            state = {"stop_id": sid, "name": stop.name, "lat": stop.lat, "lon": stop.lon, "departures": deps,
                     "board_at": now.isoformat(), "source": f"GTFS {self.schedule.source}",
                     "synthetic": self.schedule.synthetic, "alerts": alerts}
            records.append((eid, digest, self._update(eid, "stop", int(now.timestamp()), state, now)))
        self._emit([r for _, _, r in records], [])
        for eid, digest, _ in records:
            self.boards[eid] = digest
        self.counts["boards"] += len(records)
        return len(records)

    def _emit(self, records: list[TwinEntityUpdated], dead_letters: list[DeadLettered]) -> None:
        dead_letters = [d for d in dead_letters if d.dead_letter_id not in self.dead_ids]
        if not records and not dead_letters:
            return
        for r in records:
            self.pub.add(TWIN_UPDATES.name, str(r.entity_id), r)
        for d in dead_letters:
            log.warning("dead letter: %s", d.reason[:300])
            send_dead_letter(self.pub, d)
        self._retry("writing the bus updates to Kafka", lambda: self.pub.flush(timeout=self.settings.flush_timeout_s))
        for r in records:
            self.metrics.published.labels(r.entity_type).inc()
        for d in dead_letters:
            self.dead_ids.add(d.dead_letter_id)
            self.metrics.dead.labels(d.error_type).inc()
        if len(self.dead_ids) > MAX_DEAD_IDS:
            self.dead_ids.clear()  # a later repeat is written once more: ids stay the same, readers can dedupe
        self.counts["dead"] += len(dead_letters)

    def step(self, feed: Feed) -> None:
        self.metrics.polls.labels(feed.name).inc()
        try:
            outcome = "fetched" if feed.name == "schedule" else self.poll(feed)
        except (Transient, Permanent) as exc:
            self.metrics.feeds.labels(feed.name, "failed").inc()
            self.poll_failed(feed, exc, f"GTFS-Realtime {feed.name}")
            return
        self.metrics.feeds.labels(feed.name, outcome).inc()
        self.poll_answered(feed, f"GTFS-Realtime {feed.name}", self.settings.interval_s)
        written = 0
        if feed.name != "vehicle_positions" or "trip_updates" not in self.feeds:
            written = self.refresh_boards()  # once a round: after the delays, or by the schedule alone without them
        if outcome != "unchanged" or written:  # a 304 or the same feed again changes no state: nothing to write
            self.save_state()

    def health(self) -> str:
        now = time.monotonic()
        feeds = ", ".join(f.health(now) for f in self.feeds.values())
        c = self.counts
        return (f"GTFS health: {feeds}; vehicle updates {c['vehicles']}, boards written {c['boards']} ({len(self.stops)} "
                f"stops), trips with delays {len(self.updates)}, duplicates {c['duplicates']}, dead letters {c['dead']}")

    def next_item(self) -> Feed:
        return min(self.feeds.values(), key=lambda f: (f.due, ORDER[f.name]))


def build(settings: GtfsSettings, bootstrap: str, pack_path: Path, codec: Any, report: Callable[[str], None],
          data_dir: Path | None = None) -> GtfsSource:
    from twin.region import load_pack

    if settings.static is None:
        raise ValueError("PLIETSCH_GTFS_STATIC is not set: point it at the GTFS zip of the schedule (README, section GTFS)")
    schedule = load_schedule(settings.static)
    pack = load_pack(pack_path)
    src = GtfsSource(settings, schedule, pack, EventPublisher(bootstrap, codec, linger_ms=5), report=report,
                     data_dir=data_dir)
    report(f"GTFS schedule {settings.static}: {len(schedule.stops)} stops, {len(schedule.routes)} routes, "
           f"{len(schedule.trips)} trips; departure boards for {len(src.stops)} stop(s)")
    return src
