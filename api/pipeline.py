"""The rest of the pipeline as the API sees it: how far the worker's and the archive sink's consumer groups are behind
their input topics (records committed against the end of each partition, ``streams.startup.group_lag``), checked in
a thread. /health turns 503 when a group stays beyond the limit for longer than the grace: the twin or the archive is
falling behind (or the process is not running), and a probe or an operator should know, not only the read model's
own state.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("plietsch.api")


@dataclass
class Group:
    label: str  # what it is, in words: "the worker", "the archive sink"
    group_id: str
    topics: list[str]
    lag: int | None = None
    behind_since: float | None = None  # monotonic time the lag first exceeded the limit (None: within it)


@dataclass
class PipelineWatch:
    bootstrap: str
    groups: list[Group]
    limit: int
    grace_s: float
    every_s: float = 5.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.groups:
            self._thread = threading.Thread(target=self._run, name="plietsch-pipeline-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        from streams.startup import group_consumers, group_lag

        consumers = group_consumers(self.bootstrap, [g.group_id for g in self.groups])
        try:
            while not self._stop.is_set():
                for g in self.groups:
                    self.observe(g, group_lag({g.group_id: consumers[g.group_id]}, g.topics))
                self._stop.wait(self.every_s)
        except Exception:  # the watch must never take the API down; /health then says the lag is unknown
            log.exception("pipeline watch stopped")
        finally:
            for consumer in consumers.values():
                consumer.close()

    def observe(self, g: Group, lag: int | None, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        g.lag = lag
        if lag is not None and lag > self.limit:
            if g.behind_since is None:
                g.behind_since = now
                log.warning("%s (consumer group %s) is %d records behind on %s", g.label, g.group_id, lag,
                            ", ".join(g.topics))
        elif lag is not None:
            g.behind_since = None

    def status(self, now: float | None = None) -> tuple[str, str | None]:
        """('ok' | 'degraded', why)."""
        now = time.monotonic() if now is None else now
        for g in self.groups:
            if g.behind_since is not None and now - g.behind_since >= self.grace_s:
                return "degraded", (f"{g.label} (consumer group {g.group_id}) has been more than {self.limit} records "
                                    f"behind its input topics for {now - g.behind_since:.0f} s (now {g.lag}); is it "
                                    "running? Its log and /metrics say why; PLIETSCH_HEALTH_LAG_LIMIT sets the limit")
        return "ok", None

    def lags(self) -> dict[str, int | None]:
        return {g.group_id: g.lag for g in self.groups}
