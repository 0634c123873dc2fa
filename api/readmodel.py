"""The API's read model, folded from the twin's output topics by one consumer thread per API process:

- ``twin.updates``: the latest state per entity (newest revision wins; of two with the same revision but different
  states the later one, since that is a write redone after an aborted transaction whose records the broker showed);
- ``twin.alerts``: the active alerts; per alert id the record with the newest ``occurred_at`` wins and a redelivered
  event (same event id) changes nothing, so a Raised/Cleared pair that arrives in reverse order leaves no alert behind;
- ``twin.aggregates``: per-shard partials of the windowed aggregates (highest ``rev`` wins), combined per figure on
  change, windows older than the horizon left out (``api.aggview``); a tombstone deletes its partial;
- ``scenario.results``: progress and outcome per scenario (a finished state beats a running one, then the higher step).

The consumer reads committed records only (contract 6). A record it cannot use (undecodable bytes, a valid record of a
type its topic does not carry, an event that breaks the event rules, broken ``state_json``/``partial_json``) is counted
per topic and reason, logged once per (topic, reason), shown on /health and /metrics, and skipped: everything after it
is applied as usual, and a restart over the same compacted topics starts just as well.

Every applied change gets a sequence number; live subscribers receive the deltas in order, and a client that
reconnects with the last sequence it saw resumes from the ring buffer without gaps (or is told to re-snapshot).
Several API processes can run side by side: each keeps its own model; none writes to Kafka except through events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import BaseModel, ValidationError

from api.aggview import AggregateView, BadPartial, parse_partial
from api.retention import finished_at
from infra.kafka_security import secured
from schemas.codec import CodecError, is_batch, iter_batch
from streams.catalogue import AGGREGATES, ALERTS, BY_NAME, SCENARIO_RESULTS, TWIN_UPDATES
from streams.consume import take_ready
from streams.serde import Codec
from twin.events import AggregateUpdated, AlertCleared, AlertRaised, ScenarioProgressed, TwinEntityUpdated

log = logging.getLogger("plietsch.api")
TOPICS = (TWIN_UPDATES.name, ALERTS.name, AGGREGATES.name, SCENARIO_RESULTS.name)
MODELS: dict[str, type[BaseModel]] = {m.__name__: m for m in (TwinEntityUpdated, AlertRaised, AlertCleared,
                                                                 AggregateUpdated, ScenarioProgressed)}
FINISHED = {"queued": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2}  # a run never goes back
BROKER_GRACE_S = 3.0  # the broker unreachable this long makes the read model degraded
STALL_S = 30.0  # the consumer thread not polling this long makes it degraded
ALERT_SWEEP_EVERY = 1024  # alert records between sweeps of old cleared-alert markers
LAG_WARNING = 10_000  # records behind (all topics) from which a growing lag is logged, at most once a minute


class _OncePerMinute(logging.Filter):
    """librdkafka repeats a connection failure many times a second while the broker is away: one line per kind (its
    facility, e.g. FAIL) a minute; /health and /metrics say the rest."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        key = str(args[0]) if isinstance(args, tuple) and args else record.getMessage()[:40]
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.every_s:
            return False
        self._last[key] = now
        return True


kafka_log = logging.getLogger("plietsch.api.kafka")
kafka_log.addFilter(_OncePerMinute())


class BrokenRecord(Exception):
    """A record the read model cannot use; ``reason`` is a short label for counting, the message says what is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Delta:
    seq: int
    kind: str  # "entity", "alert", "alert_cleared", "aggregate", "scenario"
    entity_id: str
    entity_type: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "entity_id": self.entity_id, "entity_type": self.entity_type,
                "data": self.data}


class Subscriber:
    """A live subscriber: the deltas its filter *accept* takes, queued on its event loop (at most *maxsize*; past that
    it is marked overflowed and takes no more until :meth:`reset`). Subscribers with the same *key* (their filter's
    parameters) share one call of *accept* per delta."""

    def __init__(self, loop: asyncio.AbstractEventLoop, accept: Callable[[Delta], bool], maxsize: int = 10_000,
                 key: Hashable | None = None) -> None:
        self.loop = loop
        self.accept = accept
        self.key: Hashable = key if key is not None else object()
        self.maxsize = maxsize
        self.items: deque[Delta] = deque()
        self.overflowed = False
        self._waiter: asyncio.Future[None] | None = None

    def push(self, d: Delta) -> None:
        """Queue *d* (accepted already); on the subscriber's loop."""
        if self.overflowed:
            return
        if len(self.items) >= self.maxsize:  # a client that cannot keep up is cut off; it resumes from its last sequence
            self.overflowed = True
            self.items.clear()
        else:
            self.items.append(d)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def offer(self, d: Delta) -> None:
        if self.accept(d):
            self.push(d)

    def __len__(self) -> int:
        return len(self.items)

    async def wait(self, timeout: float) -> bool:
        """Until a delta is queued (or it overflowed); False after *timeout* seconds without."""
        if self.items or self.overflowed:
            return True
        self._waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(timeout):  # no task per wait, as wait_for makes in 3.11
                await self._waiter
        except TimeoutError:
            return False
        finally:
            self._waiter = None
        return True

    def take(self, n: int | None = None) -> list[Delta]:
        """The queued deltas, oldest first (at most *n*), removed from the queue."""
        if n is None or n >= len(self.items):
            out = list(self.items)
            self.items.clear()
            return out
        return [self.items.popleft() for _ in range(n)]

    def reset(self) -> None:
        """Forget what is queued and take deltas again (after an overflow)."""
        self.items.clear()
        self.overflowed = False


def _offer_all(subs: tuple[Subscriber, ...], deltas: list[Delta]) -> None:
    """Hand *deltas* to *subs* (all of one event loop), each filter run once per delta for all subscribers sharing
    its key (200 clients of ``/stream?type=sensor`` cost one check per delta, not 200)."""
    groups: dict[Hashable, list[Subscriber]] = {}
    for sub in subs:
        groups.setdefault(sub.key, []).append(sub)
    for members in groups.values():
        accept = members[0].accept
        for d in deltas:
            if accept(d):
                for sub in members:
                    sub.push(d)


def _brief(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']} (got {str(e.get('input'))[:60]!r})"
                     for e in exc.errors()[:3])


def _coast_state_ok(state: dict[str, Any]) -> bool:
    def num(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)

    return num(state.get("level_m")) and num(state.get("freeboard_m")) and (
        state.get("surge_class") is None or isinstance(state.get("surge_class"), str))


class ReadModel:
    def __init__(self, bootstrap_servers: str, codec: Codec, history: int = 20_000,
                 aggregate_horizon: timedelta = timedelta(hours=48), subscriber_queue: int = 10_000,
                 scenario_keep: timedelta | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.codec = codec
        self.subscriber_queue = subscriber_queue
        self.state: dict[str, dict[str, Any]] = {}
        self.alerts: dict[str, dict[str, Any]] = {}  # active alerts by alert id
        self.aggs = AggregateView(aggregate_horizon)
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.recent: deque[Delta] = deque(maxlen=history)
        # per alert id: (occurred_at, 0 raised / 1 cleared, event id) of the record that decided its state
        self._alert_last: dict[str, tuple[datetime, int, str]] = {}
        self._alert_newest: datetime | None = None
        self._alert_records = 0
        self._scenario_order: dict[str, tuple[int, int]] = {}
        self.scenario_keep = scenario_keep  # finished runs that ended longer ago are not kept (api/retention.py)
        # health
        self.applied: dict[str, int] = dict.fromkeys(TOPICS, 0)
        self.skipped: dict[tuple[str, str], int] = {}
        self.broken: dict[tuple[str, str], int] = {}
        self.sse_cut: dict[str, int] = {}  # live clients cut off, per reason (fell_behind, not_reading)
        self.lag: dict[tuple[str, int], int] = {}
        self._logged: set[tuple[str, str]] = set()
        self.ready = threading.Event()
        self.error: str | None = None  # why the consumer thread stopped
        self.waiting: str | None = "connecting to Kafka"  # what the model waits for while starting
        self.broker_down_since: float | None = None
        self.broker_error: str | None = None
        self.last_poll: float | None = None
        self._lag_warned = float("-inf")
        self._subs: set[Subscriber] = set()
        self._by_loop: dict[asyncio.AbstractEventLoop, tuple[Subscriber, ...]] = {}  # the subscribers per event loop
        self._outbox: list[Delta] = []  # deltas not yet handed to the subscribers (see _flush)
        self._batching = False  # in the consume loop: flush once per poll
        self.frames: OrderedDict[int, bytes] = OrderedDict()  # SSE frames of recent deltas by seq (api.routes.live)
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
            self._group_subscribers()
            if after is None:
                return []
            backlog = self._since_locked(after)
            return None if backlog is None else [d for d in backlog if sub.accept(d)]

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)
            self._group_subscribers()

    def _group_subscribers(self) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Subscriber]] = {}
        for sub in self._subs:
            by_loop.setdefault(sub.loop, []).append(sub)
        self._by_loop = {loop: tuple(subs) for loop, subs in by_loop.items()}

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def active_alerts(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self.alerts.values(), key=lambda a: a["_seq"])

    def aggregates(self, metric: str | None = None, group: str | None = None, latest: bool = False) -> list[dict[str, Any]]:
        """Combined figures (shards combined when they changed, not per call), windows within the horizon."""
        with self._lock:
            return self.aggs.list(metric, group, latest)

    # -- health -------------------------------------------------------------------------------------------------
    def status(self) -> tuple[str, str | None]:
        """('starting' | 'ok' | 'degraded', why not ok)."""
        now = time.monotonic()
        if self._thread is None:
            return "starting", "the read model has not been started"
        if not self._thread.is_alive():
            return "degraded", f"the read model has stopped: {self.error or 'stopped by the API'}"
        if self.broker_down_since is not None and now - self.broker_down_since >= BROKER_GRACE_S:
            return "degraded", (f"the read model cannot reach Kafka at {self.bootstrap_servers} for "
                                f"{now - self.broker_down_since:.0f} s ({self.broker_error}); is the broker up?")
        if self.last_poll is not None and now - self.last_poll > STALL_S:
            return "degraded", f"the read model has not polled Kafka for {now - self.last_poll:.0f} s"
        if not self.ready.is_set():
            return "starting", self.waiting
        return "ok", None

    def broken_by_topic(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (topic, reason), n in dict(self.broken).items():
            out.setdefault(topic, {})[reason] = n
        return out

    def lag_by_topic(self) -> dict[str, int]:
        out = dict.fromkeys(TOPICS, 0)
        for (topic, _), n in dict(self.lag).items():
            out[topic] = out.get(topic, 0) + n
        return out

    def _count_broken(self, topic: str, reason: str, where: str, message: str, trace: bool = False) -> None:
        self.broken[(topic, reason)] = self.broken.get((topic, reason), 0) + 1
        if (topic, reason) not in self._logged:
            self._logged.add((topic, reason))
            log.warning("read model: skipping a broken record on %s (%s) at %s: %s. Further %s records on %s are counted "
                        "on /health and /metrics without a log line.", topic, reason, where, message, reason, topic,
                        exc_info=trace)

    # -- applying -----------------------------------------------------------------------------------------------
    def handle(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
               headers: Any = None) -> None:
        """Apply one Kafka record (or each datum of a batch record); never raises: what cannot be used is counted and
        skipped, and the rest is applied."""
        where = f"{topic}[{partition}]@{offset}"
        datums: list[bytes | None] = [value]
        if value is not None and headers and is_batch(headers):
            try:
                datums = list(iter_batch(value))
                if not all(datums):  # no datum is empty: a frame over zero bytes is one broken record, not N
                    raise CodecError("decode", f"{sum(not d for d in datums)} of its {len(datums)} datums are empty")
            except CodecError as exc:
                self._count_broken(topic, "undecodable", where, f"broken batch frame: {exc}")
                return
        for i, datum in enumerate(datums):
            try:
                outcome = self._tombstone(topic, key) if datum is None else self._datum(topic, key, datum)
            except BrokenRecord as exc:
                self._count_broken(topic, exc.reason, where if len(datums) == 1 else f"{where}#{i}", str(exc))
                continue
            except Exception as exc:  # a defect here must not stop the model either; logged once with its trace
                self._count_broken(topic, "internal_error", where, f"{type(exc).__name__}: {exc}", trace=True)
                continue
            if outcome is None:
                self.applied[topic] = self.applied.get(topic, 0) + 1
            else:
                self.skipped[(topic, outcome)] = self.skipped.get((topic, outcome), 0) + 1

    def _tombstone(self, topic: str, key: bytes | None) -> str | None:
        if topic != AGGREGATES.name:
            return "tombstone"
        if key is None:
            raise BrokenRecord("no_key", "a tombstone without a key names no partial to delete")
        with self._lock:
            return None if self.aggs.delete(key.decode("utf-8", "replace")) else "tombstone_unknown"

    def _datum(self, topic: str, key: bytes | None, datum: bytes) -> str | None:
        try:
            name, rec = self.codec.decode(datum)
        except CodecError as exc:
            raise BrokenRecord("undecodable" if exc.kind == "decode" else "unknown_schema", str(exc)) from None
        allowed = BY_NAME[topic].value_schemas
        if name not in allowed:
            raise BrokenRecord("wrong_type", f"a valid {name} record, but {topic} carries only {', '.join(allowed)}")
        try:
            event = MODELS[name].model_validate(rec)
        except ValidationError as exc:
            raise BrokenRecord("invalid", f"{name} breaks the event rules: {_brief(exc)}") from None
        if isinstance(event, TwinEntityUpdated):
            return self.apply_update(rec)
        if isinstance(event, AlertRaised | AlertCleared):
            return self.apply_alert(name, rec, event)
        if isinstance(event, AggregateUpdated):
            return self.apply_aggregate(None if key is None else key.decode("utf-8", "replace"), rec)
        if isinstance(event, ScenarioProgressed):
            return self.apply_scenario(rec)
        raise BrokenRecord("wrong_type", f"no read model for {name}")

    def _emit(self, delta: Delta) -> None:
        self.recent.append(delta)
        self._outbox.append(delta)
        if not self._batching:
            self._flush()

    def _flush(self) -> None:
        """Hand the deltas emitted since the last flush to the subscribers: one wake-up per event loop and poll, not
        one per delta (nor per subscriber)."""
        if not self._outbox:
            return
        deltas, self._outbox = self._outbox, []
        for loop, subs in self._by_loop.items():
            loop.call_soon_threadsafe(_offer_all, subs, deltas)

    def apply_update(self, rec: dict[str, Any]) -> str | None:
        """Keep an entity update if it is newer than what the model holds (revisions are per entity)."""
        eid, revision = rec["entity_id"], rec["revision"]
        try:
            state = json.loads(rec["state_json"])
        except (TypeError, ValueError) as exc:
            raise BrokenRecord("bad_state_json", f"state_json of {eid} revision {revision} is not JSON ({exc}): "
                                                 f"{str(rec['state_json'])[:80]!r}") from None
        if not isinstance(state, dict):
            raise BrokenRecord("bad_state_json", f"state_json of {eid} revision {revision} must be a JSON object, "
                                                 f"got {type(state).__name__}")
        kind = eid.split(":")[2]
        if rec["entity_type"] != kind:
            raise BrokenRecord("bad_state", f"{eid} has entity_type {rec['entity_type']!r}, its id says {kind!r}")
        if kind == "coast" and not _coast_state_ok(state):
            raise BrokenRecord("bad_state", f"coast state of {eid} revision {revision} needs numbers level_m and "
                                            f"freeboard_m and a surge_class string or null: {str(rec['state_json'])[:120]}")
        with self._lock:
            prev = self.state.get(eid)
            if prev is not None and prev["revision"] > revision:
                return "stale_revision"
            if prev is not None and prev["revision"] == revision and prev["state"] == state:
                return "duplicate"  # redelivered; the same revision with another state is a redone write: it wins
            rec = {k: v for k, v in rec.items() if k != "state_json"}
            rec["state"] = state
            self.seq += 1
            rec["_seq"] = self.seq
            self.state[eid] = rec
            self._emit(Delta(self.seq, "entity", eid, rec["entity_type"], rec))
            return None

    def apply_alert(self, name: str, rec: dict[str, Any], event: AlertRaised | AlertCleared) -> str | None:
        aid = event.alert_id
        order = (event.occurred_at, 1 if name == "AlertCleared" else 0, event.event_id)
        with self._lock:
            self._alert_records += 1
            last = self._alert_last.get(aid)
            if last is not None and last[2] == event.event_id:
                return "duplicate"
            if last is not None and order <= last:
                return "stale"
            self._alert_last[aid] = order
            if self._alert_newest is None or event.occurred_at > self._alert_newest:
                self._alert_newest = event.occurred_at
            if self._alert_records % ALERT_SWEEP_EVERY == 0:
                self._sweep_alert_markers()
            if name == "AlertRaised":
                self.seq += 1
                rec = {**rec, "_seq": self.seq, "type": name}
                self.alerts[aid] = rec
                self._emit(Delta(self.seq, "alert", rec["entity_id"], "alert", rec))
            elif self.alerts.pop(aid, None) is not None:
                self.seq += 1
                rec = {**rec, "_seq": self.seq, "type": name}
                self._emit(Delta(self.seq, "alert_cleared", rec["entity_id"], "alert", rec))
            return None

    def _sweep_alert_markers(self) -> None:
        """Forget cleared alerts older than the horizon behind the newest alert (a reordering that deep is not kept)."""
        if self._alert_newest is None:
            return
        cutoff = self._alert_newest - self.aggs.horizon
        for aid in [a for a, (t, cleared, _) in self._alert_last.items() if cleared and t < cutoff and a not in self.alerts]:
            del self._alert_last[aid]

    def apply_aggregate(self, key: str | None, rec: dict[str, Any]) -> str | None:
        try:
            doc = json.loads(rec["partial_json"])
        except (TypeError, ValueError) as exc:
            raise BrokenRecord("bad_partial_json", f"partial_json under key {key!r} is not JSON ({exc}): "
                                                   f"{str(rec['partial_json'])[:80]!r}") from None
        try:
            rev, partial = parse_partial(doc)
        except BadPartial as exc:
            raise BrokenRecord("bad_partial_json", f"partial under key {key!r}: {exc}") from None
        pkey = partial.key
        if key is not None and key != pkey:
            raise BrokenRecord("key_mismatch", f"record key {key!r}, but its partial is {pkey!r}")
        at = rec.get("occurred_at")
        try:  # the shard's newest reading time when the partial was written (the horizon rule's watermark)
            watermark = datetime.fromisoformat(at) if isinstance(at, str) else at if isinstance(at, datetime) else None
        except ValueError:
            watermark = None
        if watermark is not None and watermark.tzinfo is None:
            watermark = None
        with self._lock:
            why = self.aggs.put(pkey, rev, partial, watermark)
            if why is not None:
                return why
            self.seq += 1
            self._emit(Delta(self.seq, "aggregate", rec["entity_id"], "aggregate",
                             {"metric": partial.metric, "group": partial.group, "window": rec["window_start"]}))
            return None

    def apply_scenario(self, rec: dict[str, Any]) -> str | None:
        sid = rec["entity_id"]
        order = (FINISHED[rec["status"]], rec["step"])
        if self.scenario_keep is not None and (end := finished_at(rec)) is not None \
                and end < datetime.now(UTC) - self.scenario_keep:
            return "expired"
        with self._lock:
            prev = self._scenario_order.get(sid)
            if prev is not None and order <= prev:
                return "stale"
            self._scenario_order[sid] = order
            self.seq += 1
            rec = {**rec, "_seq": self.seq}
            self.scenarios[sid] = rec
            self._emit(Delta(self.seq, "scenario", sid, "scenario",
                             {k: rec[k] for k in ("status", "step", "steps", "message")}))
            return None

    def forget_scenarios(self, sids: list[str]) -> None:
        """Drops the records of runs whose results are gone for good (api/retention.py)."""
        with self._lock:
            for sid in sids:
                self.scenarios.pop(sid, None)
                self._scenario_order.pop(sid, None)

    def drop_summaries(self, sids: list[str]) -> None:
        """Expired results: the record stays (status, expiry), its summary goes."""
        with self._lock:
            for sid in sids:
                if (rec := self.scenarios.get(sid)) is not None and rec.get("summary_json"):
                    self.scenarios[sid] = {**rec, "summary_json": ""}

    # -- the consumer thread ------------------------------------------------------------------------------------
    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.broker_down_since is None:
                self.broker_down_since = time.monotonic()
            self.broker_error = err.str()

    def _on_stats(self, raw: str) -> None:
        """librdkafka's statistics (every second): broker reachability, and the lag per partition = the end of the
        committed records (last stable offset) minus the position. Tansu reports the high watermark as the base
        offset of the last record batch + 1, so the lag can read up to one batch low; it never reads below 0."""
        try:
            stats = json.loads(raw)
            up = any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in stats.get("brokers", {}).values())
            if up:
                self.broker_down_since, self.broker_error = None, None
            elif self.broker_down_since is None:
                self.broker_down_since = time.monotonic()
                self.broker_error = "no broker connection is up"
            lag = {}
            for topic in TOPICS:
                for p, part in stats.get("topics", {}).get(topic, {}).get("partitions", {}).items():
                    pid = int(p)
                    if pid < 0:
                        continue
                    end = part.get("ls_offset", -1)
                    if end < 0:
                        end = part.get("hi_offset", -1)
                    pos = part.get("app_offset", -1)
                    if pos < 0:
                        pos = max(part.get("lo_offset", 0), 0)
                    if end >= 0:
                        lag[(topic, pid)] = max(0, end - pos)
            before, total = sum(self.lag.values()), sum(lag.values())
            self.lag = lag
            now = time.monotonic()
            if total >= LAG_WARNING and total > before and now - self._lag_warned >= 60 and self.ready.is_set():
                self._lag_warned = now
                log.warning("read model: %d records behind and growing (%s); live clients see the twin late",
                            total, ", ".join(f"{t} {n}" for t, n in self.lag_by_topic().items() if n))
        except (ValueError, TypeError, AttributeError) as exc:
            log.debug("unreadable librdkafka statistics: %s", exc)

    def _run(self) -> None:
        try:
            self._consume()
        except Exception as exc:  # reported by /health (503)
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("read model stopped")

    def _consume(self) -> None:
        consumer = Consumer(secured({
            "bootstrap.servers": self.bootstrap_servers, "group.id": f"plietsch-api-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": "read_committed",
            "fetch.wait.max.ms": 50,  # deltas reach live clients quickly
            "statistics.interval.ms": 1000, "stats_cb": self._on_stats, "error_cb": self._on_error,
            "logger": kafka_log}))
        try:
            assigned = self._assign(consumer)
            if assigned is None:
                return
            ends = self._ends(consumer, assigned)
            self.waiting = "reading the twin's topics up to their current end"
            idle_since = time.monotonic()
            batch = 1000
            while not self._stop.is_set():
                msgs = take_ready(consumer, batch, 0.1)  # consume(batch, 0.1) held every delta up to 0.1 s
                now = self.last_poll = time.monotonic()
                self._batching = True
                try:
                    for msg in msgs:
                        err = msg.error()
                        if err is not None:
                            if err.code() != KafkaError._PARTITION_EOF:
                                log.debug("consumer: %s", err.str())
                            continue
                        self.handle(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0), msg.key(),
                                    msg.value(), msg.headers())
                finally:
                    self._batching = False
                    with self._lock:
                        self._flush()
                if msgs:
                    idle_since = now
                if not self.ready.is_set():
                    caught_up = len(msgs) < batch and all(
                        ends[(tp.topic, tp.partition)] == 0 or tp.offset >= ends[(tp.topic, tp.partition)]
                        for tp in consumer.position(assigned))
                    if caught_up or now - idle_since > 1.0:
                        self.waiting = None
                        self.ready.set()
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> list[TopicPartition] | None:
        """Assign every partition of the four topics from the beginning; waits (and says so) while a topic is missing
        or the broker cannot be reached."""
        while not self._stop.is_set():
            try:
                md = consumer.list_topics(timeout=5)
            except KafkaException as exc:
                self.waiting = f"cannot reach Kafka at {self.bootstrap_servers}: {exc}"
                if self.broker_down_since is None:
                    self.broker_down_since = time.monotonic()
                self.broker_error = str(exc)
                self._stop.wait(1.0)
                continue
            missing = [t for t in TOPICS if t not in md.topics or md.topics[t].error is not None]
            if missing:
                self.waiting = (f"topics {', '.join(missing)} do not exist yet; run 'plietsch topics create' "
                                "or start the worker")
                self._stop.wait(1.0)
                continue
            tps = [TopicPartition(t, p, OFFSET_BEGINNING) for t in TOPICS for p in sorted(md.topics[t].partitions)]
            consumer.assign(tps)
            return [TopicPartition(tp.topic, tp.partition) for tp in tps]
        return None

    def _ends(self, consumer: Consumer, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """The end of each partition when the model starts: it is ready once it has read that far."""
        ends: dict[tuple[str, int], int] = {}
        for tp in tps:
            try:
                lo, hi = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            except KafkaException as exc:
                log.warning("no watermark for %s[%d] (%s); readiness falls back to an idle second", tp.topic, tp.partition, exc)
                lo, hi = 0, 2**62
            ends[(tp.topic, tp.partition)] = 0 if hi <= lo else hi
        return ends
