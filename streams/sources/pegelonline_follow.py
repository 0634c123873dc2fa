"""PEGELONLINE polled continuously: ``plietsch source pegelonline --follow``.

Per configured station (``PLIETSCH_PEGELONLINE_STATIONS="9610066=kiel:_:sensor:gauge-holtenau,..."``) the source
first reads the station's metadata, ``stations/{number}.json?includeTimeseries=true&includeCharacteristicValues=true``:
its uuid, the gauge zero of the W timeseries (``gaugeZero``, m above NHN, logged and kept in each reading's ``source``)
and the mean water level MW (characteristic value ``MW`` of W, cm above gauge zero). PEGELONLINE's W is in cm above the
gauge zero (PNP); the twin speaks metres above mean water level: ``level_m = (W - MW) / 100``. Without MW in the
metadata the configured ``PLIETSCH_PEGELONLINE_MEAN_CM="9610066=504"`` is used; without either the source refuses to
start and says what to set.

Then, every ``interval_s``, it asks only for what is new: ``stations/{uuid}/W/measurements.json?start=<ISO time one
second after the last published>`` (``start=P1D`` the first time), with ``If-None-Match`` / ``If-Modified-Since`` when
the server sent an ``ETag`` / ``Last-Modified`` for that same URL (a 304 is "nothing new"). Entries at or before the
last published time are dropped here too (a server that ignores ``start`` publishes nothing twice).

A failed request (connection refused, timeout, 5xx, 429) is retried with exponential backoff and jitter, capped at
``backoff_cap_s`` (5 min; a 429's ``Retry-After`` is honoured up to the cap); a 4xx other than 429 (e.g. an unknown
station) is logged with what to check and retried at the cap. Each change of a station's state is logged once, not
each retry. Readings are flushed to Kafka (a failing flush is retried with backoff, as the LoRaWAN source does) and only
then is the newest published time written to ``<data_dir>/pegelonline/state.json``: a restart publishes nothing twice,
and event ids are deterministic (``pegelonline-<sensor>-<time>``) for consumers that deduplicate. An entry that cannot
become a reading (no offset, not a number, out of range, missing fields) is a dead letter on the dead-letters topic with
the reason, as the worker writes them, and counted; the source keeps running. Counts and health are on ``/metrics`` of
``PLIETSCH_PEGELONLINE_METRICS_PORT``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.catalogue import DEAD_LETTERS, SENSOR_TOPICS
from streams.files import atomic_write
from streams.publisher import EventPublisher
from streams.serde import encode_event
from streams.sources.pegelonline import BASE_URL, SOURCE, parse_entry
from streams.sources.polling import Permanent, PollingSource, Transient, get
from twin.events import DeadLettered, WaterLevelMeasured

log = logging.getLogger("plietsch.pegelonline")
PROCESSOR = "pegelonline"
MAX_BACK = timedelta(days=30)  # PEGELONLINE keeps 31 days of measurements; an older cursor asks for all of them


class ConfigError(ValueError):
    """The configuration cannot work: the message says what to set."""


class PegelSettings(BaseSettings):
    """``PLIETSCH_PEGELONLINE_*``: the API, the stations, the poll interval, the backoff, the metrics port."""

    model_config = SettingsConfigDict(env_prefix="PLIETSCH_PEGELONLINE_", extra="ignore")

    base_url: str = BASE_URL
    stations: str = ""  # "number=sensor_id,..."; setting it turns the source on in 'plietsch run'
    mean_cm: str = ""  # "number=cm,...": the mean water level where the API gives no MW
    region: str = "kiel"
    interval_s: float = 60.0  # PEGELONLINE updates every 1 to 15 minutes
    start: str = "P1D"  # how far back the first poll of a station reaches (ISO 8601 duration, at most P31D)
    timeout_s: float = 20.0
    flush_timeout_s: float = 10.0  # a Kafka flush not done by then is retried (with backoff)
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 300.0
    metrics_port: int = 9467
    metrics_host: str = "127.0.0.1"


def parse_pairs(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{what}: {part!r} must look like 'number=value', e.g. '9610066=kiel:_:sensor:gauge-holtenau'")
        out[key.strip()] = value.strip()
    return out


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.polls = Counter("plietsch_pegelonline_polls", "measurement requests answered (200 or 304), per station",
                             ["station"], registry=r)
        self.not_modified = Counter("plietsch_pegelonline_not_modified", "304 answers (nothing new), per station",
                                    ["station"], registry=r)
        self.published = Counter("plietsch_pegelonline_readings_published", "readings written to the water level topic",
                                 ["station"], registry=r)
        self.dead = Counter("plietsch_pegelonline_dead_letters", "dead letters written, per reason", ["reason"], registry=r)
        self.retries = Counter("plietsch_pegelonline_retries", "requests and flushes retried after a failure, per cause",
                               ["cause"], registry=r)
        self.last_success = Gauge("plietsch_pegelonline_last_success_timestamp_seconds",
                                  "unix time of the last answered poll, per station", ["station"], registry=r)
        self.failing = Gauge("plietsch_pegelonline_failing", "1 while a station's requests fail", ["station"], registry=r)
        self.up = Gauge("plietsch_pegelonline_up", "1 while the source runs", registry=r)


@dataclass
class Station:
    number: str
    sensor_id: str
    uuid: str = ""
    mean_cm: float = 0.0
    source: str = SOURCE
    last: datetime | None = None  # the newest measurement time published (and flushed)
    conditional: tuple[str, dict[str, str]] = ("", {})  # (url, validators the server sent for it)
    failures: int = 0
    state: str = "new"  # "ok" or the failure's description: logged once per change
    due: float = 0.0
    dead_ids: list[str] = field(default_factory=list)  # dead letters already written (bounded), for entries seen again


def mean_water_level(meta: dict[str, Any]) -> tuple[float | None, float | None]:
    """(MW in cm above gauge zero, gauge zero in m above NHN) of the W timeseries, None where absent."""
    for ts in meta.get("timeseries") or []:
        if not isinstance(ts, dict) or ts.get("shortname") != "W":
            continue
        gz = ts.get("gaugeZero") or {}
        zero = float(gz["value"]) if isinstance(gz, dict) and isinstance(gz.get("value"), int | float) else None
        mws = [c for c in ts.get("characteristicValues") or []
               if isinstance(c, dict) and c.get("shortname") == "MW" and isinstance(c.get("value"), int | float)]
        mws.sort(key=lambda c: str(c.get("timespanEnd") or c.get("validFrom") or ""))
        return (float(mws[-1]["value"]) if mws else None), zero
    return None, None


def dead_letter(st: Station, row: object, kind: str, reason: str) -> DeadLettered:
    body = json.dumps(row, sort_keys=True, default=str).encode()
    did = str(uuid.uuid5(uuid.NAMESPACE_URL, f"plietsch-dead|{PROCESSOR}|{st.number}|{hashlib.sha256(body).hexdigest()}"))
    return DeadLettered(dead_letter_id=did, original_topic=f"pegelonline:{st.number}", original_partition=-1,
                        original_offset=-1, original_key=st.number.encode(), original_value=body, batch_index=-1,
                        error_type=kind, reason=f"PEGELONLINE station {st.number} ({st.sensor_id}): {reason}"[:1000],
                        processor=PROCESSOR)


class StateFile:
    """``{"stations": {number: {"last": iso, "dead": [ids]}}}``, replaced atomically after each successful flush."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path} is not readable JSON ({exc}); fix or delete it (deleting it re-publishes "
                              "the last day, which consumers deduplicate by event id)") from exc
        return data.get("stations", {}) if isinstance(data, dict) else {}

    def save(self, stations: list[Station]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"stations": {s.number: {"last": s.last.isoformat() if s.last else None, "dead": s.dead_ids[-200:]}
                             for s in stations}}
        atomic_write(self.path, json.dumps(data, indent=1).encode())


class PegelSource(PollingSource):
    topic = SENSOR_TOPICS["water_level"].name
    left_for_next_run = "the state file is not advanced; the next run asks PEGELONLINE again for these measurements"

    def __init__(self, settings: PegelSettings, publisher: EventPublisher, data_dir: Path,
                 metrics: Metrics | None = None, report: Callable[[str], None] = log.info) -> None:
        super().__init__(settings, publisher, report, "plietsch-twin (pegelonline source)")
        self.settings: PegelSettings = settings
        self.metrics = metrics or Metrics()
        self.base = settings.base_url.rstrip("/")
        pairs = parse_pairs(settings.stations, "PLIETSCH_PEGELONLINE_STATIONS")
        if not pairs:
            raise ConfigError("PLIETSCH_PEGELONLINE_STATIONS is not set: give 'number=sensor_id' pairs, e.g. "
                              "9610066=kiel:_:sensor:gauge-holtenau (README, PEGELONLINE)")
        self.means = parse_pairs(settings.mean_cm, "PLIETSCH_PEGELONLINE_MEAN_CM")
        self.stations = [Station(n, s) for n, s in pairs.items()]
        self.state = StateFile(data_dir / "pegelonline" / "state.json")
        loaded = self.state.load()
        for st in self.stations:
            saved = loaded.get(st.number) or {}
            try:
                st.last = datetime.fromisoformat(saved["last"]) if saved.get("last") else None
            except (TypeError, ValueError):
                raise ConfigError(f"{self.state.path}: station {st.number} has last {saved.get('last')!r}, not an ISO "
                                  "time; fix or delete the entry") from None
            st.dead_ids = list(saved.get("dead") or [])

    # -- HTTP ------------------------------------------------------------------------------------------------------
    def _get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        resp = get(self.http, url, self.settings.timeout_s, headers)
        if 400 <= resp.status_code < 500:
            hint = ("unknown station: check the number in PLIETSCH_PEGELONLINE_STATIONS against "
                    f"{self.base}/stations.json" if resp.status_code == 404 else "the request was refused")
            raise Permanent(f"HTTP {resp.status_code} for {url}: {hint}; body {resp.text[:200]!r}")
        return resp

    def _json(self, resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError as exc:
            raise Transient(f"answer is not JSON ({exc}): {resp.text[:120]!r}") from exc

    # -- metadata --------------------------------------------------------------------------------------------------
    def _resolve(self, st: Station) -> None:
        url = f"{self.base}/stations/{quote(st.number)}.json?includeTimeseries=true&includeCharacteristicValues=true"
        meta = self._json(self._get(url))
        if not isinstance(meta, dict) or not meta.get("uuid"):
            raise Transient(f"station metadata without uuid: {str(meta)[:120]!r}")
        mw, zero = mean_water_level(meta)
        origin = "MW from PEGELONLINE"
        configured_mw = self.means.get(st.number)
        if mw is not None and configured_mw is not None:
            self.report(f"PEGELONLINE station {st.number}: PLIETSCH_PEGELONLINE_MEAN_CM gives {configured_mw} cm, "
                        f"PEGELONLINE's MW is {mw:g} cm: using PEGELONLINE's (unset the setting to silence this)")
        if mw is None:
            configured = self.means.get(st.number)
            if configured is None:
                raise ConfigError(
                    f"station {st.number} ({meta.get('longname') or meta.get('shortname')}): PEGELONLINE gives no mean "
                    f"water level (characteristic value MW of W); set it in cm above gauge zero, e.g. "
                    f"PLIETSCH_PEGELONLINE_MEAN_CM=\"{st.number}=504\"")
            try:
                mw = float(configured)
            except ValueError:
                raise ConfigError(f"PLIETSCH_PEGELONLINE_MEAN_CM for {st.number}: {configured!r} is not a number of cm") from None
            origin = "MW configured"
        st.uuid, st.mean_cm = str(meta["uuid"]), mw
        zero_txt = f"{zero:.2f} m NHN" if zero is not None else "unknown"
        st.source = f"{SOURCE}; PNP {zero_txt}; {origin} {mw:g} cm"[:128]
        self.report(f"PEGELONLINE station {st.number} {meta.get('longname', '')} (uuid {st.uuid}) -> {st.sensor_id}: "
                    f"gauge zero (PNP) {zero_txt}, {origin} {mw:g} cm above PNP; level_m = (W - {mw:g}) / 100; "
                    f"last published {st.last.isoformat() if st.last else 'none (first poll: ' + self.settings.start + ')'}")

    # -- polling ---------------------------------------------------------------------------------------------------
    def measurements_url(self, st: Station) -> str:
        if st.last is None:
            start = self.settings.start
        elif datetime.now(UTC) - st.last > MAX_BACK:
            start = "P31D"
        else:
            start = quote((st.last + timedelta(seconds=1)).isoformat(), safe="")
        return f"{self.base}/stations/{st.uuid}/W/measurements.json?start={start}"

    def poll(self, st: Station) -> int:
        """One poll of one station: publish what is new, flush, save the state. Returns the readings published."""
        url = self.measurements_url(st)
        headers = st.conditional[1] if st.conditional[0] == url else {}
        resp = self._get(url, headers)
        self.metrics.polls.labels(st.number).inc()
        self.metrics.last_success.labels(st.number).set(time.time())
        if resp.status_code == 304:
            self.metrics.not_modified.labels(st.number).inc()
            return 0
        validators = {}
        if resp.headers.get("ETag"):
            validators["If-None-Match"] = resp.headers["ETag"]
        if resp.headers.get("Last-Modified"):
            validators["If-Modified-Since"] = resp.headers["Last-Modified"]
        rows = self._json(resp)
        if not isinstance(rows, list):
            raise Transient(f"measurements must be a JSON list, got {type(rows).__name__}")
        events: list[WaterLevelMeasured] = []
        dead: list[DeadLettered] = []
        newest = st.last
        for row in rows:
            got = parse_entry(row, st.sensor_id, st.mean_cm, self.settings.region, st.source)
            if isinstance(got, WaterLevelMeasured):
                if st.last is not None and got.occurred_at <= st.last:
                    continue
                events.append(got)
                newest = got.occurred_at if newest is None else max(newest, got.occurred_at)
            else:
                d = dead_letter(st, row, *got)
                if d.dead_letter_id not in st.dead_ids:
                    dead.append(d)
        events.sort(key=lambda e: e.occurred_at)
        topic = SENSOR_TOPICS["water_level"].name
        for e in events:
            self.pub.add(topic, st.sensor_id, e)
        for d in dead:
            log.warning("dead letter: %s", d.reason[:300])
            self.pub.send_raw(DEAD_LETTERS.name, d.original_topic.encode(), encode_event(self.pub.codec, d),
                              [("reason", d.reason.encode()[:1000]), ("error-type", d.error_type.encode())])
        if events or dead:
            self._retry("writing the readings to Kafka", lambda: self.pub.flush(timeout=self.settings.flush_timeout_s))
            st.last = newest
            st.dead_ids = [*st.dead_ids, *(d.dead_letter_id for d in dead)][-200:]
            self.state.save(self.stations)
            self.metrics.published.labels(st.number).inc(len(events))
            for d in dead:
                self.metrics.dead.labels(d.error_type).inc()
        # a validator belongs to the URL it came for; after new data the next URL differs
        st.conditional = (url, validators) if not events else ("", {})
        return len(events)

    def _backoff(self, st: Station, wait_s: float | None = None) -> float:
        s = self.settings
        delay = min(s.backoff_cap_s, s.backoff_base_s * 2 ** min(st.failures - 1, 30)) * random.uniform(0.5, 1.0)
        if wait_s is not None:
            delay = max(delay, min(wait_s, s.backoff_cap_s))
        return delay

    def _set_state(self, st: Station, state: str, message: str) -> None:
        if state != st.state:
            self.report(message)
        st.state = state

    def step(self, st: Station) -> None:
        """Resolve or poll *st* once and schedule its next turn."""
        now = time.monotonic()
        resolving = not st.uuid
        try:
            if resolving:
                self._resolve(st)
            else:
                self.poll(st)
        except Transient as exc:
            st.failures += 1
            self.metrics.retries.labels("http").inc()
            self.metrics.failing.labels(st.number).set(1)
            delay = self._backoff(st, exc.wait_s)
            self._set_state(st, f"transient {exc}", f"PEGELONLINE station {st.number}: {exc}; retrying with backoff "
                            f"(next in {delay:.1f} s, at most {self.settings.backoff_cap_s:.0f} s apart)")
            st.due = now + delay
            return
        except Permanent as exc:
            st.failures += 1
            self.metrics.retries.labels("refused").inc()
            self.metrics.failing.labels(st.number).set(1)
            self._set_state(st, f"permanent {exc}", f"PEGELONLINE station {st.number}: {exc}; retrying every "
                            f"{self.settings.backoff_cap_s:.0f} s")
            st.due = now + self.settings.backoff_cap_s
            return
        if st.failures:
            self.report(f"PEGELONLINE station {st.number}: answering again after {st.failures} failed request(s)")
        st.failures = 0
        st.state = "ok"
        self.metrics.failing.labels(st.number).set(0)
        st.due = now if resolving else now + self.settings.interval_s  # once resolved, poll right away

    def next_item(self) -> Station:
        return min(self.stations, key=lambda s: s.due)


def build(settings: PegelSettings, bootstrap: str, data_dir: Path, codec: Any, report: Callable[[str], None]) -> PegelSource:
    return PegelSource(settings, EventPublisher(bootstrap, codec, linger_ms=5), data_dir, report=report)
