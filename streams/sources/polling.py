"""What the polling HTTP sources (PEGELONLINE, GBFS) share: the failure classes of a request, ``Retry-After``, the
metrics server, Kafka retries, the loop over items that fall due, and the stop."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
from prometheus_client import start_http_server

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


class Due(Protocol):
    due: float  # time.monotonic() at which the item is polled next


class SourceSettings(Protocol):
    timeout_s: float
    metrics_port: int
    metrics_host: str


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

    def next_item(self) -> Due:
        raise NotImplementedError

    def step(self, item: Any) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Called on every turn of the loop (a health line, ...)."""

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
