"""The worker's Prometheus metrics (served on ``/metrics`` of the worker's web port)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("plietsch_worker_records", "Kafka records processed, per agent", ["agent"])
READINGS = Counter("plietsch_worker_datums", "datums (readings, events) processed, per agent", ["agent"])
SKIPPED = Counter("plietsch_worker_records_skipped", "records skipped because their effects are already applied "
                  "(applied-offset markers: redelivery or replay)", ["agent"])
SKIPPED_REVOKED = Counter("plietsch_worker_records_left_to_new_owner", "records of a take whose partition was revoked "
                          "before they were processed (the new owner processes them), per agent", ["agent"])
STATE_CHANGES = Counter("plietsch_worker_state_changes", "entity states changed, per agent", ["agent"])
DEAD = Counter("plietsch_worker_dead_letters", "dead letters written, per agent and reason class", ["agent", "reason"])
CHANGELOG_SKIPPED = Counter("plietsch_worker_changelog_records_skipped", "changelog records skipped when a table is "
                            "loaded because no worker could have written them (junk from a foreign client), per agent",
                            ["agent"])
TX_COMMITS = Counter("plietsch_worker_transactions_committed", "transactions committed, per agent", ["agent"])
TX_ABORTS = Counter("plietsch_worker_transactions_aborted", "transactions aborted, per agent", ["agent"])
TX_SECONDS = Histogram("plietsch_worker_transaction_seconds", "time from begin to commit of a transaction (outputs, "
                       "changelogs, markers), per agent", ["agent"],
                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
TX_RETRIES = Counter("plietsch_worker_transaction_retries", "transaction attempts retried after a transient error",
                     ["agent"])
RATE = Gauge("plietsch_worker_datums_per_second", "datums processed per second over the last interval, per agent",
             ["agent"])
LOOP_LAG_MAX = Gauge("plietsch_worker_loop_lag_max_seconds", "the longest the worker's event loop woke late from a short "
                     "sleep since the worker started (a blocked loop: no polling, no heartbeats, no web page)")
LOOP_LAG = Gauge("plietsch_worker_loop_lag_seconds", "how late the worker's event loop woke from its last short sleep")
LAG = Gauge("plietsch_worker_consumer_lag", "records behind the high watermark, per input partition",
            ["topic", "partition"])


class LagWatch:
    """Decides when the worker warns about consumer lag: the total lag above *threshold* and rising over the last
    *window* samples (one sample per progress report), at most once per *every_s* seconds. ``observe`` returns the
    warning text, or None."""

    def __init__(self, threshold: int = 50_000, window: int = 3, every_s: float = 60.0) -> None:
        self.threshold, self.window, self.every_s = threshold, window, every_s
        self.samples: list[int] = []
        self._last_warned: float | None = None

    def observe(self, lag: int, now: float) -> str | None:
        self.samples = [*self.samples[-(self.window - 1):], lag]
        h = self.samples
        rising = len(h) == self.window and all(a < b for a, b in zip(h, h[1:], strict=False))
        if not rising or lag <= self.threshold:
            return None
        if self._last_warned is not None and now - self._last_warned < self.every_s:
            return None
        self._last_warned = now
        return (f"consumer lag grows: {lag} records behind ({' -> '.join(map(str, h))}, threshold {self.threshold}); "
                "the worker does not keep up with its input: start a second worker with the same PLIETSCH_APP_ID, or "
                "lower the input rate, and check the broker and the machine's load")


class LoopLag:
    """Measures how long the event loop is blocked: a task sleeps *interval_s* again and again and records how much
    later than asked it woke (``observe`` keeps the newest and the largest). Exported as LOOP_LAG and LOOP_LAG_MAX."""

    def __init__(self, interval_s: float = 0.1, report: Callable[[float, float], None] | None = None) -> None:
        self.interval_s = interval_s
        self.last = self.max = 0.0
        self.report = report or self._export

    @staticmethod
    def _export(last: float, largest: float) -> None:
        LOOP_LAG.set(last)
        LOOP_LAG_MAX.set(largest)

    def observe(self, late_s: float) -> None:
        self.last = max(0.0, late_s)
        self.max = max(self.max, self.last)
        self.report(self.last, self.max)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.observe(loop.time() - asked)
