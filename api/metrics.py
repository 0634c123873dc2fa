"""Prometheus metrics of one API process (prometheus-client, a registry per app so that two apps in one process keep
their own figures): the read model's records applied, skipped and broken per topic and reason, its consumer lag per
topic, live SSE subscribers, and requests and their latency per route."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.readmodel import ReadModel

STATUS_CODE = {"starting": 0, "ok": 1, "degraded": 2}


class ReadModelCollector(Collector):
    """Reads the read model's own counters at scrape time (the consumer thread never touches prometheus objects)."""

    def __init__(self, rm: ReadModel) -> None:
        self.rm = rm

    def collect(self) -> Iterator[Metric]:
        rm = self.rm
        applied = CounterMetricFamily("plietsch_read_model_records_applied", "Records applied to the read model",
                                      labels=["topic"])
        for topic, n in dict(rm.applied).items():
            applied.add_metric([topic], n)
        yield applied
        skipped = CounterMetricFamily("plietsch_read_model_records_skipped",
                                      "Valid records that changed nothing (stale revision, redelivery, beyond the horizon)",
                                      labels=["topic", "reason"])
        for (topic, reason), n in dict(rm.skipped).items():
            skipped.add_metric([topic, reason], n)
        yield skipped
        broken = CounterMetricFamily("plietsch_read_model_records_broken",
                                     "Records the read model could not use, skipped and counted", labels=["topic", "reason"])
        for (topic, reason), n in dict(rm.broken).items():
            broken.add_metric([topic, reason], n)
        yield broken
        lag = GaugeMetricFamily("plietsch_read_model_lag_records",
                                "Committed records not yet read, per topic (librdkafka statistics, every second)",
                                labels=["topic"])
        for topic, n in rm.lag_by_topic().items():
            lag.add_metric([topic], n)
        yield lag
        status, _ = rm.status()
        yield GaugeMetricFamily("plietsch_read_model_status", "0 starting, 1 ok, 2 degraded", value=STATUS_CODE[status])
        yield GaugeMetricFamily("plietsch_sse_subscribers", "Live SSE subscribers", value=rm.subscribers)
        cut = CounterMetricFamily("plietsch_sse_cut_off", "Live SSE clients cut off and told to resume, per reason "
                                  "(fell_behind: its queue overflowed; not_reading: its connection took nothing)",
                                  labels=["reason"])
        for reason, n in dict(rm.sse_cut).items():
            cut.add_metric([reason], n)
        yield cut
        yield GaugeMetricFamily("plietsch_read_model_entities", "Entities with live state", value=len(rm.state))
        yield GaugeMetricFamily("plietsch_read_model_active_alerts", "Active alerts", value=len(rm.alerts))
        yield GaugeMetricFamily("plietsch_read_model_aggregate_partials", "Aggregate partials held (within the horizon)",
                                value=len(rm.aggs))
        yield GaugeMetricFamily("plietsch_read_model_sequence", "Sequence number of the newest delta", value=rm.seq)


class RequestMetrics:
    """ASGI middleware: requests per route template (not per raw path) and method and status, and the time to the
    response's first byte (for the SSE stream: until it opens)."""

    def __init__(self, app: Any, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("plietsch_api_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
        self.latency = Histogram("plietsch_api_request_seconds", "Time to the response's first byte", ["method", "route"],
                                 registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        def route() -> str:
            r = scope.get("route")
            return getattr(r, "path", None) or "unmatched"

        async def timed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                self.latency.labels(scope["method"], route()).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.requests.labels(scope["method"], route(), str(status[0])).inc()


class OutboxCollector(Collector):
    """The audit outbox (``api.audit.Relay``): events waiting for Kafka, and how long the oldest has waited."""

    def __init__(self, state: Callable[[], tuple[int, float | None]]) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        n, age = self.state()
        yield GaugeMetricFamily("plietsch_audit_outbox_pending", "Audit events written with their action, not yet on Kafka",
                                value=n)
        yield GaugeMetricFamily("plietsch_audit_outbox_oldest_seconds", "Age of the oldest audit event waiting (0: none)",
                                value=age or 0.0)


class ArchiveCollector(Collector):
    """The archive as its manifest tells it (the history engine's copy, read again only when the file changed):
    records the sink skipped because the twin would not accept them (the worker dead-letters those), and the events
    kept. An unreadable manifest leaves them out (``/history`` and ``/health`` name the error)."""

    def __init__(self, manifest: Callable[[], Any]) -> None:
        self.manifest = manifest

    def collect(self) -> Iterator[Metric]:
        try:
            m = self.manifest()
        except ValueError:
            return
        yield CounterMetricFamily("plietsch_archive_invalid_skipped", "Records the archive sink skipped as invalid "
                                  "(the worker dead-letters them; history never sees them)", value=m.invalid_skipped)
        yield GaugeMetricFamily("plietsch_archive_events", "Events in the archive", value=m.summary()["events"])


def metrics_registry(rm: ReadModel, outbox: Callable[[], tuple[int, float | None]] | None = None,
                     archive: Callable[[], Any] | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ReadModelCollector(rm))
    if outbox is not None:
        registry.register(OutboxCollector(outbox))
    if archive is not None:
        registry.register(ArchiveCollector(archive))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST

