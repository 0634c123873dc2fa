"""GBFS 3.0 bike sharing polled continuously: ``plietsch source gbfs`` (README section: docs/gbfs.md).

The source reads the discovery file ``gbfs.json`` (``PLIETSCH_GBFS_URL``), then the files it lists that the twin uses:
``station_information`` (names and places, for the log and the dead letters of unknown stations), ``station_status``
(the readings) and ``vehicle_status`` where offered (counts on /metrics). Each file is polled again after its own
``ttl`` (at least ``min_interval_s``, at most ``max_interval_s``), with ``If-None-Match`` / ``If-Modified-Since`` when
the server sent an ``ETag`` / ``Last-Modified`` for that URL; a 304, or a body whose ``last_updated`` is the one already
read, is "unchanged" and publishes nothing. The discovery file is re-read by its ttl too (feeds come and go).

Every file is checked against MobilityData's GBFS 3.0 JSON Schema (``validate.py``). A file that fails becomes a dead
letter (dead-letters topic, as the worker writes them) naming the file, the JSON path and what is wrong; a defect inside
one station or vehicle entry costs that entry only, a defect of the document (version, ttl, data) all of it. The same
defect repeated by later versions of the file is dead-lettered once. Transient failures (timeout, connection refused,
5xx, 429) are retried with exponential backoff and jitter up to ``backoff_cap_s`` and never dead-lettered; another 4xx
is logged with what to check and retried at the cap. Readings and dead letters are flushed to Kafka (a failing flush is
retried with backoff) and only then is ``<data_dir>/gbfs/<system>/state.json`` written: per station the
``last_reported`` published, and the dead letters written, so a restart publishes nothing twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import Counter, Gauge
from pydantic_settings import SettingsConfigDict

from streams.catalogue import SENSOR_TOPICS
from streams.files import atomic_write
from streams.publisher import EventPublisher
from streams.sources.gbfs.convert import (
    dead_letter,
    defect_key,
    describe,
    split_problems,
    station_names,
    station_status,
    vehicle_counts,
)
from streams.sources.gbfs.mapping import Mapping, MappingError
from streams.sources.gbfs.validate import check
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
from twin.events import DeadLettered

log = logging.getLogger("plietsch.gbfs")

# SprottenFlotte, the KielRegion's bike sharing (operated by Donkey Republic since 2023): its public GBFS 3.0 feed.
SPROTTENFLOTTE_URL = "https://stables.donkey.bike/api/public/gbfs/3.0/donkey_kielsmile/gbfs.json"
USED = ("station_information", "station_status", "vehicle_status")  # the order they are read in a round
ORDER = {"gbfs": 0, **{n: i + 1 for i, n in enumerate(USED)}}  # among files due at once: discovery first
MAX_DEAD_IDS = 5000


class GbfsSettings(HttpSourceSettings):
    """``PLIETSCH_GBFS_*``: the feed, the station mapping, the poll limits, the backoff, the metrics port."""

    model_config = SettingsConfigDict(env_prefix="PLIETSCH_GBFS_", extra="ignore")

    url: str = SPROTTENFLOTTE_URL  # the discovery file gbfs.json of a GBFS 3.0 feed
    stations: Path | None = None  # the station mapping (JSON); setting it turns the source on in 'plietsch run'
    min_interval_s: float = 10.0  # a file's ttl below this (0 = "always refresh") is read this often
    max_interval_s: float = 3600.0  # and never less often than this
    metrics_port: int = 9468


class Metrics(SourceMetrics):
    def __init__(self) -> None:
        super().__init__("gbfs", "file")
        r = self.registry
        self.files = Counter("plietsch_gbfs_files", "file polls per outcome: fetched (new content), unchanged (304 or the "
                             "same last_updated), invalid (schema or JSON), failed (HTTP)", ["file", "outcome"], registry=r)
        self.published = Counter("plietsch_gbfs_readings_published", "readings written to the bike share topic", registry=r)
        self.duplicates = Counter("plietsch_gbfs_duplicates", "station reports whose last_reported was published already",
                                  registry=r)
        self.dead = Counter("plietsch_gbfs_dead_letters", "dead letters written, per reason", ["reason"], registry=r)
        self.unknown = Gauge("plietsch_gbfs_unknown_stations", "stations of the last station_status not in the mapping",
                             registry=r)
        self.stations = Gauge("plietsch_gbfs_stations", "stations of the last station_status, mapped or not",
                              ["mapped"], registry=r)
        self.vehicles = Gauge("plietsch_gbfs_vehicles", "vehicles of the last vehicle_status per station ('free_floating' "
                              "outside stations) and status", ["station", "status"], registry=r)


@dataclass
class Feed(Polled):
    ttl: int | None = None
    last_updated: str | None = None  # of the last body read


@dataclass
class State:
    """``<data_dir>/gbfs/<system>/state.json``: ``{"stations": {station_id: last_reported}, "dead": [ids]}``."""

    path: Path
    stations: dict[str, str] = field(default_factory=dict)
    dead: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise MappingError(f"{path} is not readable JSON ({exc}); fix or delete it (deleting it publishes the "
                               "stations' current status again, with the same event ids)") from exc
        return cls(path, dict(data.get("stations") or {}), list(data.get("dead") or []))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps({"stations": self.stations, "dead": self.dead[-MAX_DEAD_IDS:]}, indent=1).encode())


class GbfsSource(PollingSource):
    topic = SENSOR_TOPICS["bike_share"].name
    left_for_next_run = ("the state file is not advanced; the next run reads the feed again and publishes these readings "
                         "with the same event ids")

    def __init__(self, settings: GbfsSettings, mapping: Mapping, publisher: EventPublisher, data_dir: Path,
                 metrics: Metrics | None = None, report: Callable[[str], None] = log.info) -> None:
        super().__init__(settings, publisher, report, "plietsch-twin (gbfs source)")
        self.settings: GbfsSettings = settings
        self.mapping = mapping
        self.metrics = metrics or Metrics()
        self.feeds: dict[str, Feed] = {"gbfs": Feed("gbfs", settings.url)}
        self.state = State.load(data_dir / "gbfs" / mapping.system / "state.json")
        self.dead_ids = set(self.state.dead)
        self.names: dict[str, dict[str, Any]] = {}
        self.counts = {"readings": 0, "duplicates": 0, "dead": 0, "unknown": 0}

    # -- HTTP ------------------------------------------------------------------------------------------------------
    def _get(self, feed: Feed, headers: dict[str, str]) -> httpx.Response:
        resp = get(self.http, feed.url, self.settings.timeout_s, headers)
        if 400 <= resp.status_code < 500:
            hint = "check PLIETSCH_GBFS_URL (the feed's gbfs.json)" if feed.name == "gbfs" else \
                f"gbfs.json lists {feed.url} for {feed.name}, which the server refuses"
            raise Permanent(f"HTTP {resp.status_code} for {feed.url}: {hint}; body {resp.text[:200]!r}")
        return resp

    # -- one poll of one file --------------------------------------------------------------------------------------
    def poll(self, feed: Feed) -> str:
        """Fetch, check and use *feed* once; returns the outcome (fetched, unchanged, invalid)."""
        resp = self._get(feed, feed.headers())
        self.metrics.last_success.labels(feed.name).set(time.time())
        if resp.status_code == 304:
            return "unchanged"
        feed.answered(resp)
        body = resp.content
        try:
            doc = json.loads(body)
        except ValueError as exc:
            self._emit([], [dead_letter(self.mapping.system, feed.name, feed.url, body, "not_json",
                                        f"{feed.url} is not JSON ({exc}): {body[:120]!r}", f"not_json|{feed.url}")])
            return "invalid"
        problems = check(feed.name, doc)
        whole, entries = split_problems(feed.name, problems)
        if isinstance(doc, dict) and isinstance(doc.get("ttl"), int) and not any(p.path[:1] == ("ttl",) for p in whole):
            feed.ttl = doc["ttl"]
        if problems:
            use = "the whole file was not used" if whole else \
                f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} not used, the rest was"
            self._emit([], [dead_letter(self.mapping.system, feed.name, feed.url, body, "schema",
                                        f"{feed.url}: {describe(problems)}; {use}", defect_key(feed.name, problems))])
            if whole:
                feed.last_updated = None
                return "invalid"
        if doc["last_updated"] == feed.last_updated:
            return "unchanged"
        self._use(feed, doc, set(entries))
        feed.last_updated = doc["last_updated"]
        return "invalid" if problems else "fetched"

    def _use(self, feed: Feed, doc: dict[str, Any], skip: set[int]) -> None:
        if feed.name == "gbfs":
            self._discover(doc)
        elif feed.name == "station_information":
            self.names = station_names(doc, skip)
            missing = sorted(s for s in self.mapping.sensors if s not in self.names)
            if missing:
                self.report(f"GBFS {self.mapping.system}: mapped station(s) {', '.join(missing[:10])} not in "
                            f"station_information ({len(self.names)} stations): removed or renamed by the operator?")
        elif feed.name == "station_status":
            out = station_status(doc, skip, self.mapping, self.state.stations, self.names)
            self._emit(out.readings, out.dead, out.newest)
            self.counts["duplicates"] += out.duplicates
            self.metrics.duplicates.inc(out.duplicates)
            self.counts["unknown"] = len(out.unknown)
            self.metrics.unknown.set(len(out.unknown))
            self.metrics.stations.labels("true").set(out.mapped_seen)
            self.metrics.stations.labels("false").set(len(out.unknown))
        elif feed.name == "vehicle_status":
            counts = vehicle_counts(doc, skip)
            self.metrics.vehicles.clear()
            for (station, status), n in counts.items():
                self.metrics.vehicles.labels(station, status).set(n)

    def _discover(self, doc: dict[str, Any]) -> None:
        offered = {f["name"]: f["url"] for f in doc["data"]["feeds"]}
        now = time.monotonic()
        for name in USED:
            url = offered.get(name)
            old = self.feeds.get(name)
            if url is None:
                if old is not None:
                    del self.feeds[name]
                    self.report(f"GBFS {self.mapping.system}: gbfs.json no longer lists {name}; not reading it")
                continue
            if old is None or old.url != url:
                self.feeds[name] = Feed(name, url, due=now)
        if "station_status" not in offered:
            self.report(f"GBFS {self.mapping.system}: gbfs.json lists no station_status ({', '.join(sorted(offered))}): "
                        "no station readings from this feed")

    def _emit(self, readings: list[tuple[str, Any]], dead: list[DeadLettered], newest: dict[str, datetime] | None = None) -> None:
        """Publish, flush, then remember: the state advances only with what Kafka has."""
        dead = [d for d in dead if d.dead_letter_id not in self.dead_ids]
        if not readings and not dead and not newest:
            return
        topic = SENSOR_TOPICS["bike_share"].name
        for _, r in readings:
            self.pub.add(topic, str(r.entity_id), r)
        for d in dead:
            log.warning("dead letter: %s", d.reason[:300])
            send_dead_letter(self.pub, d)
        if readings or dead:
            self._retry("writing the readings to Kafka", lambda: self.pub.flush(timeout=self.settings.flush_timeout_s))
        for sid, t in (newest or {}).items():
            self.state.stations[sid] = t.isoformat()
        for d in dead:
            self.dead_ids.add(d.dead_letter_id)
            self.state.dead.append(d.dead_letter_id)
        self.state.dead = self.state.dead[-MAX_DEAD_IDS:]
        self.state.save()
        self.metrics.published.inc(len(readings))
        self.counts["readings"] += len(readings)
        self.counts["dead"] += len(dead)
        for d in dead:
            self.metrics.dead.labels(d.error_type).inc()

    # -- scheduling ------------------------------------------------------------------------------------------------
    def interval(self, feed: Feed) -> float:
        s = self.settings
        return min(s.max_interval_s, max(s.min_interval_s, float(feed.ttl or 0)))

    def step(self, feed: Feed) -> None:
        """Poll *feed* once and schedule its next turn."""
        self.metrics.polls.labels(feed.name).inc()
        try:
            outcome = self.poll(feed)
        except (Transient, Permanent) as exc:
            self.metrics.files.labels(feed.name, "failed").inc()
            self.poll_failed(feed, exc, f"GBFS {feed.name}")
            return
        self.metrics.files.labels(feed.name, outcome).inc()
        self.poll_answered(feed, f"GBFS {feed.name}", self.interval(feed))

    def health(self) -> str:
        now = time.monotonic()
        files = ", ".join(f.health(now) for f in self.feeds.values())
        c = self.counts
        return (f"GBFS health {self.mapping.system}: {files}; readings {c['readings']}, duplicates {c['duplicates']}, "
                f"dead letters {c['dead']}, unknown stations {c['unknown']}, mapped stations {len(self.mapping)}")

    def next_item(self) -> Feed:
        return min(self.feeds.values(), key=lambda f: (f.due, ORDER[f.name]))


def build(settings: GbfsSettings, bootstrap: str, pack_path: Path, data_dir: Path, codec: Any,
          report: Callable[[str], None]) -> GbfsSource:
    from streams.sources.gbfs.mapping import load_mapping
    from twin.region import load_pack

    if settings.stations is None:
        raise MappingError("PLIETSCH_GBFS_STATIONS is not set: point it at the station mapping (JSON; docs/gbfs.md)")
    mapping = load_mapping(settings.stations, load_pack(pack_path))
    report(f"GBFS station mapping {settings.stations}: system {mapping.system}, {len(mapping)} station(s)")
    return GbfsSource(settings, mapping, EventPublisher(bootstrap, codec, linger_ms=5), data_dir, report=report)
