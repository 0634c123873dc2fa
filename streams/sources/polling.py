"""What the polling HTTP sources (PEGELONLINE, GBFS) share: the failure classes of a request, ``Retry-After``, the
metrics server, Kafka retries, the loop over items that fall due, and the stop."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pydantic_settings import BaseSettings

from streams.catalogue import DEAD_LETTERS
from streams.publisher import EventPublisher
from streams.serde import encode_event
from streams.sources.kafka_retry import Abandoned, retry_kafka
from twin.events import DeadLettered


class Transient(Exception):
    """A failure that passes (timeout, refused connection, 429, 5xx): retried with backoff, never a dead letter."""

    def __init__(self, what: str, wait_s: float | None = None) -> None:
        super().__init__(what)
        self.wait_s = wait_s


class Permanent(Exception):
    """A 4xx other than 429: the request itself is wrong; retried at the cap after saying what to check."""


def retry_after(value: str) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date), None when absent or unreadable."""
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None


def get(http: httpx.Client, url: str, timeout_s: float, headers: dict[str, str] | None = None) -> httpx.Response:
    """GET *url*; transport failures, 429 and 5xx raise :class:`Transient` (with the server's Retry-After)."""
    try:
        resp = http.get(url, headers=headers or {})
    except httpx.TimeoutException as exc:
        raise Transient(f"timeout after {timeout_s:.0f} s ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise Transient(f"{type(exc).__name__}: {exc}") from exc
    if resp.status_code == 429 or resp.status_code >= 500:
        raise Transient(f"HTTP {resp.status_code}", retry_after(resp.headers.get("Retry-After", "")))
    return resp


def validators(resp: httpx.Response) -> dict[str, str]:
    """The conditional-request headers for the next GET of the same URL (from its ``ETag`` / ``Last-Modified``)."""
    out = {}
    if resp.headers.get("ETag"):
        out["If-None-Match"] = resp.headers["ETag"]
    if resp.headers.get("Last-Modified"):
        out["If-Modified-Since"] = resp.headers["Last-Modified"]
    return out


class BackoffSettings(Protocol):
    backoff_base_s: float
    backoff_cap_s: float


def backoff_delay(s: BackoffSettings, failures: int, exc: Transient) -> float:
    """Exponential backoff with jitter after *failures* failed requests in a row, at least the server's Retry-After
    (both capped at ``backoff_cap_s``)."""
    delay = min(s.backoff_cap_s, s.backoff_base_s * 2 ** min(failures - 1, 30)) * random.uniform(0.5, 1.0)
    if exc.wait_s is not None:
        delay = max(delay, min(exc.wait_s, s.backoff_cap_s))
    return delay


def source_dead_letter(processor: str, dead_letter_id: str, original_topic: str, key: str, value: bytes, kind: str,
                       reason: str) -> DeadLettered:
    """A source's dead letter as the worker writes them (no partition or offset: it never was a Kafka record). The
    caller derives *dead_letter_id* from the defect, so that a defect the feed repeats is written once."""
    return DeadLettered(dead_letter_id=dead_letter_id, original_topic=original_topic, original_partition=-1,
                        original_offset=-1, original_key=key.encode(), original_value=value, batch_index=-1,
                        error_type=kind, reason=reason[:1000], processor=processor)


def send_dead_letter(pub: EventPublisher, d: DeadLettered) -> None:
    """Queue *d* on the dead-letters topic (the caller flushes), with its reason and error type as headers."""
    pub.send_raw(DEAD_LETTERS.name, d.original_topic.encode(), encode_event(pub.codec, d),
                 [("reason", d.reason.encode()[:1000]), ("error-type", d.error_type.encode())])


class HttpSourceSettings(BaseSettings):
    """The settings every polling HTTP source has (subclasses set ``env_prefix`` and the metrics port)."""

    timeout_s: float = 20.0
    flush_timeout_s: float = 10.0
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 300.0
    health_every_s: float = 60.0  # a health line in the log this often
    metrics_host: str = "127.0.0.1"


class SourceMetrics:
    """The metrics every polling source has: polls, retries, last success and failing per polled URL (*item*: file,
    feed), up. Subclasses add their own to ``registry``."""

    def __init__(self, prefix: str, item: str) -> None:
        self.registry = r = CollectorRegistry()
        p = f"plietsch_{prefix}"
        self.polls = Counter(f"{p}_polls", f"requests answered or failed, per {item}", [item], registry=r)
        self.retries = Counter(f"{p}_retries", "requests and flushes retried after a failure, per cause", ["cause"],
                               registry=r)
        self.last_success = Gauge(f"{p}_last_success_timestamp_seconds", "unix time of the last answered poll", [item],
                                  registry=r)
        self.failing = Gauge(f"{p}_failing", f"1 while a {item}'s requests fail", [item], registry=r)
        self.up = Gauge(f"{p}_up", "1 while the source runs", registry=r)


@dataclass
class Polled:
    """One URL a source polls: when next, the validators for a conditional request, failures in a row, its state."""

    name: str
    url: str
    due: float = 0.0
    conditional: tuple[str, dict[str, str]] = ("", {})  # (url, validators the server sent for it)
    failures: int = 0
    state: str = "new"  # "ok" or the failure's description: logged once per change
    ok_at: float = 0.0

    def headers(self) -> dict[str, str]:
        """The conditional-request headers for the next GET (none when the URL changed since)."""
        return self.conditional[1] if self.conditional[0] == self.url else {}

    def answered(self, resp: httpx.Response) -> None:
        self.conditional = (self.url, validators(resp))

    def health(self, now: float) -> str:
        return f"{self.name} {'ok ' + format(now - self.ok_at, '.0f') + ' s ago' if self.state == 'ok' else self.state[:60]}"


class Due(Protocol):
    due: float  # time.monotonic() at which the item is polled next


class SourceSettings(Protocol):
    timeout_s: float
    metrics_port: int
    metrics_host: str
    backoff_base_s: float
    backoff_cap_s: float


class PollingSource:
    """The skeleton of a polling source: ``start`` serves /metrics and learns the topics' partitions (retried while
    Kafka is away), ``run`` polls whatever falls due next (:meth:`next_item`, :meth:`step`) until stopped, ``stop``.
    Subclasses set ``metrics`` (with ``up`` and ``retries``), ``topic`` and ``left_for_next_run``."""

    topic: str  # the sensor topic the source writes
    left_for_next_run: str  # what a Kafka outage that outlasts the stop leaves for the next run (for the log)
    metrics: Any

    def __init__(self, settings: SourceSettings, publisher: EventPublisher, report: Callable[[str], None],
                 user_agent: str) -> None:
        self.settings = settings
        self.pub = publisher
        self.report = report
        self.http = httpx.Client(timeout=settings.timeout_s, headers={"User-Agent": user_agent})
        self.server: Any = None
        self.stop_event = threading.Event()
        self.stopping: Callable[[], bool] = self.stop_event.is_set
        self.next_health = 0.0  # the first turn of the loop sets it: the first line comes health_every_s after the start

    def next_item(self) -> Due:
        raise NotImplementedError

    def step(self, item: Any) -> None:
        raise NotImplementedError

    def health(self) -> str | None:
        """The health line for the log every ``health_every_s``; None: no line."""
        return None

    def tick(self) -> None:
        """Called on every turn of the loop: the health line when it is due."""
        every = getattr(self.settings, "health_every_s", 0.0)
        now = time.monotonic()
        if not every or now < self.next_health:
            return
        if self.next_health:
            line = self.health()
            if line:
                self.report(line)
        self.next_health = now + every

    def poll_failed(self, item: Polled, exc: Transient | Permanent, label: str) -> None:
        """Count a failed request of *item* (*label* names it in the log), say a change of its state once, and schedule
        the retry: with backoff after a transient failure, at the cap after a refusal."""
        s = self.settings
        item.failures += 1
        self.metrics.failing.labels(item.name).set(1)
        if isinstance(exc, Transient):
            self.metrics.retries.labels("http").inc()
            delay = backoff_delay(s, item.failures, exc)
            state = f"transient {exc}"
            message = (f"{label} ({item.url}): {exc}; retrying with backoff (next in {delay:.1f} s, at most "
                       f"{s.backoff_cap_s:.0f} s apart)")
        else:
            self.metrics.retries.labels("refused").inc()
            delay = s.backoff_cap_s
            state, message = f"permanent {exc}", f"{label}: {exc}; retrying every {delay:.0f} s"
        if state != item.state:
            self.report(message)
        item.state, item.due = state, time.monotonic() + delay

    def poll_answered(self, item: Polled, label: str, interval_s: float) -> None:
        """*item* answered: say so after failures, and schedule its next poll."""
        if item.failures:
            self.report(f"{label}: answering again after {item.failures} failed request(s)")
        item.failures, item.state, item.ok_at = 0, "ok", time.monotonic()
        self.metrics.failing.labels(item.name).set(0)
        item.due = item.ok_at + interval_s

    def _retry(self, what: str, action: Callable[[], Any]) -> None:
        retry_kafka(what, action, stopping=self.stopping, report=self.report,
                    wait=self.stop_event.wait,  # a stop ends the wait; the next attempt then gives up (Abandoned)
                    counted=self.metrics.retries.labels("kafka").inc, left_for_next_run=self.left_for_next_run)

    def start(self) -> PollingSource:
        self.server, _ = start_http_server(self.settings.metrics_port, self.settings.metrics_host,
                                           registry=self.metrics.registry)
        self.metrics.up.set(1)
        self._retry("learning the topics' partitions", lambda: [self.pub.partitions(t) for t in (self.topic, DEAD_LETTERS.name)])
        return self

    def run(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Poll until *should_stop* (or ``stop_event``)."""
        stop = should_stop or self.stop_event.is_set
        self.stopping = lambda: stop() or self.stop_event.is_set()
        try:
            while not self.stopping():
                self.tick()
                item = self.next_item()
                wait = item.due - time.monotonic()
                if wait > 0:
                    self.stop_event.wait(min(wait, 0.2))
                    continue
                self.step(item)
        except Abandoned as exc:
            self.report(str(exc))

    def stop(self) -> None:
        self.metrics.up.set(0)
        self.stop_event.set()
        self.http.close()
        if self.server is not None:
            self.server.shutdown()
