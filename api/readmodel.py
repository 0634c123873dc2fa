"""The API's read model, folded from the twin's output topics by one consumer thread per API process:

- ``twin.updates``: the latest state per entity (snapshot from the beginning, then deltas);
- ``twin.alerts``: the active alerts (raised, not yet cleared);
- ``twin.aggregates``: per-shard partials of the windowed aggregates, combined on read.

Every applied change gets a sequence number; live subscribers receive the deltas in order, and a client that
reconnects with the last sequence it saw resumes from the ring buffer without gaps (or is told to re-snapshot).
Several API processes can run side by side: each keeps its own model; none writes to Kafka except through events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.codec import CodecError
from streams.catalogue import AGGREGATES, ALERTS, SCENARIO_RESULTS, TWIN_UPDATES
from streams.serde import Codec
from twin.aggregates import Partial, combine

log = logging.getLogger("plietsch.api")


@dataclass(frozen=True)
class Delta:
    seq: int
    kind: str  # "entity", "alert", "alert_cleared", "aggregate"
    entity_id: str
    entity_type: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "entity_id": self.entity_id, "entity_type": self.entity_type,
                "data": self.data}


class Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, accept: Callable[[Delta], bool], maxsize: int = 10_000) -> None:
        self.loop = loop
        self.accept = accept
        self.queue: asyncio.Queue[Delta] = asyncio.Queue(maxsize=maxsize)
        self.overflowed = False

    def offer(self, d: Delta) -> None:
        if not self.accept(d):
            return
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(d)
        except asyncio.QueueFull:  # a client that cannot keep up is cut off; it resumes from its last sequence
            self.overflowed = True


class ReadModel:
    def __init__(self, bootstrap_servers: str, codec: Codec, history: int = 200_000) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.codec = codec
        self.state: dict[str, dict[str, Any]] = {}
        self.alerts: dict[str, dict[str, Any]] = {}
        self.partials: dict[str, Partial] = {}
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.recent: deque[Delta] = deque(maxlen=history)
        self.applied = 0
        self.skipped = 0
        self.ready = threading.Event()
        self.error: str | None = None
        self._subs: set[Subscriber] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- reading ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="read-model", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def get(self, entity_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.state.get(entity_id)

    def snapshot(self, accept: Callable[[Delta], bool]) -> tuple[int, list[Delta]]:
        """The current state as deltas (entities and active alerts) and the sequence it stands at."""
        with self._lock:
            items = [Delta(rec["_seq"], "entity", eid, rec["entity_type"], rec) for eid, rec in self.state.items()]
            items += [Delta(a["_seq"], "alert", a["entity_id"], "alert", a) for a in self.alerts.values()]
            return self.seq, [d for d in sorted(items, key=lambda d: d.seq) if accept(d)]

    def _since_locked(self, seq: int) -> list[Delta] | None:
        if seq > self.seq:
            return None
        if seq == self.seq:
            return []
        if not self.recent or self.recent[0].seq > seq + 1:
            return None
        return list(self.recent)[seq + 1 - self.recent[0].seq:]

    def subscribe(self, sub: Subscriber, after: int | None) -> list[Delta] | None:
        """Register *sub* for live deltas; returns the backlog after sequence *after* that it accepts, or None when
        that is no longer buffered (the client must take a new snapshot). Atomic with the live feed: no gap."""
        with self._lock:
            self._subs.add(sub)
            if after is None:
                return []
            backlog = self._since_locked(after)
            return None if backlog is None else [d for d in backlog if sub.accept(d)]

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    def aggregates(self, metric: str | None = None, group: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            parts = [p for p in self.partials.values() if (metric is None or p.metric == metric) and (group is None or p.group == group)]
        by_key: dict[tuple[str, str, str], list[Partial]] = {}
        for p in parts:
            by_key.setdefault((p.metric, p.group, p.window.isoformat() if p.window else ""), []).append(p)
        return [combine(v) for _, v in sorted(by_key.items())]

    # -- applying -----------------------------------------------------------------------------------------------
    def _emit(self, delta: Delta) -> None:
        self.recent.append(delta)
        for sub in list(self._subs):
            sub.loop.call_soon_threadsafe(sub.offer, delta)

    def apply_update(self, rec: dict[str, Any]) -> bool:
        """Keep an entity update if it is newer than what the model holds (revisions are per entity)."""
        with self._lock:
            prev = self.state.get(rec["entity_id"])
            if prev is not None and prev["revision"] >= rec["revision"]:
                return False
            rec = dict(rec)
            rec["state"] = json.loads(rec.pop("state_json"))
            self.seq += 1
            rec["_seq"] = self.seq
            self.state[rec["entity_id"]] = rec
            self.applied += 1
            self._emit(Delta(self.seq, "entity", rec["entity_id"], rec["entity_type"], rec))
            return True

    def apply_alert(self, name: str, rec: dict[str, Any]) -> None:
        with self._lock:
            self.seq += 1
            rec = {**rec, "_seq": self.seq, "type": name}
            if name == "AlertRaised":
                self.alerts[rec["alert_id"]] = rec
                self._emit(Delta(self.seq, "alert", rec["entity_id"], "alert", rec))
            else:
                self.alerts.pop(rec["alert_id"], None)
                self._emit(Delta(self.seq, "alert_cleared", rec["entity_id"], "alert", rec))

    def apply_aggregate(self, key: str, rec: dict[str, Any]) -> None:
        partial = Partial.from_json(json.loads(rec["partial_json"]))
        with self._lock:
            self.partials[key] = partial
            self.seq += 1
            self._emit(Delta(self.seq, "aggregate", rec["entity_id"], "aggregate",
                             {"metric": partial.metric, "group": partial.group, "window": rec["window_start"]}))

    def apply_scenario(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self.seq += 1
            rec = {**rec, "_seq": self.seq}
            self.scenarios[rec["entity_id"]] = rec
            self._emit(Delta(self.seq, "scenario", rec["entity_id"], "scenario",
                             {k: rec[k] for k in ("status", "step", "steps", "message")}))

    def _run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": f"plietsch-api-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "fetch.wait.max.ms": 50})  # deltas reach live clients quickly
        topics = (TWIN_UPDATES.name, ALERTS.name, AGGREGATES.name, SCENARIO_RESULTS.name)
        try:
            md = consumer.list_topics(timeout=15)
            missing = [t for t in topics if t not in md.topics]
            if missing:
                self.error = f"topics {', '.join(missing)} do not exist yet; run 'plietsch topics create' or start the worker"
                self.ready.set()
                return
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in md.topics[t].partitions])
            idle_since = time.monotonic()
            while not self._stop.is_set():
                msgs = consumer.consume(1000, 0.1)
                if not msgs:
                    # snapshot complete once the topics have been idle a moment (Tansu's watermarks are unreliable)
                    if not self.ready.is_set() and time.monotonic() - idle_since > 1.0:
                        self.ready.set()
                    continue
                idle_since = time.monotonic()
                for msg in msgs:
                    value = msg.value()
                    if msg.error() or value is None:
                        continue
                    try:
                        name, rec = self.codec.decode(value)
                    except CodecError as exc:
                        self.skipped += 1
                        log.warning("skipping undecodable record at %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
                        continue
                    if name == "TwinEntityUpdated":
                        self.apply_update(rec)
                    elif name in ("AlertRaised", "AlertCleared"):
                        self.apply_alert(name, rec)
                    elif name == "AggregateUpdated":
                        self.apply_aggregate((msg.key() or b"").decode(), rec)
                    elif name == "ScenarioProgressed":
                        self.apply_scenario(rec)
        except Exception as exc:  # reported by /health
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("read model stopped")
            self.ready.set()
        finally:
            consumer.close()
