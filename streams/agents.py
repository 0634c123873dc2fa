"""The agents' work per batch of Kafka records of one input partition, without Faust: decode, skip what the markers say
is applied, fold, build outputs, and hand everything to one transaction (``streams.tables.TxTables.commit``).

The sensor unit is one atomic unit for sensor state, coast state (alerts) and aggregate partials: one decode per
datum, one transaction per batch. Per batch it reads each changed key once and writes it once, builds one
``TwinEntityUpdated`` per changed entity and one ``AggregateUpdated`` per changed partial, and encodes them straight
from dicts (no pydantic object on the hot path). Output event ids are derived from what caused them, so a batch
processed again after a crash gives the same ids.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import polars as pl

from streams import metrics
from streams.catalogue import AGGREGATES, ALERTS, BY_NAME, DEAD_LETTERS, TWIN_UPDATES
from streams.columnar import MIN_COLUMNAR, ColumnarDecoder
from streams.fastpath import light_to_model
from streams.ingest import RecordDecoder
from streams.publisher import homes, municipal_homes, sensor_homes
from streams.serde import Codec, encode_event
from streams.tables import Encoded, Output, dumps, is_internal
from twin import aggregates, columnar, municipal
from twin.coast import CoastState, assess
from twin.events import BY_NAME as EVENT_TYPES
from twin.events import DeadLettered, Event, Reading, RoadWorksAnnounced
from twin.region import RegionPack
from twin.sensors import SensorState
from twin.sensors import fold_rows as fold_sensor_rows

log = logging.getLogger("plietsch.streams")

SENSOR_TABLE = "twin-sensor-state"
COAST_TABLE = "twin-coast-state"
AGGREGATE_TABLE = "twin-aggregates"
MUNICIPAL_TABLE = "twin-municipal-state"
AGGREGATED = ("TrafficCounted", "AirQualityMeasured", "ParkingOccupancyReported")
WATERMARK_KEY = b"__watermark__"  # aggregate table: per windowed reading type the newest reading time (horizon rule)
REPLAY_HEADER = "plietsch-replay"
ORIGIN_HEADER = "plietsch-origin"


def stable_id(*parts: object) -> str:
    """An event id derived from what caused the event: the same when a batch is processed again after a crash."""
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=16).hexdigest()


class Message(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


class Tx(Protocol):
    def part(self, p: int) -> dict[str, dict[bytes, Any]]: ...

    def applied(self, p: int, epoch: str, topic: str, partition: int, table: str | None = None) -> int: ...

    def commit(self, p: int, changes: dict[str, dict[bytes, Any]], outputs: list[Output],
               markers: dict[str, dict[tuple[str, str, int], int]]) -> None: ...


def origin(msg: Message, epoch: str) -> tuple[str, str, int, int]:
    """Contract 2: a live record's own (epoch, topic, partition, offset), a replayed record's from its header."""
    headers = msg.headers
    if headers:
        pairs = headers.items() if isinstance(headers, dict) else headers
        for k, v in pairs:
            if k == ORIGIN_HEADER and v:
                e, t, p, o = v.decode().rsplit("|", 3)
                return e, t, int(p), int(o)
    return epoch, msg.topic, msg.partition, msg.offset


def fresh(tx: Tx, p: int, msgs: Iterable[Message], epoch: str, agent: str,
          markers: dict[tuple[str, str, int], int], table: str | None = None, count: bool = True) -> list[Message]:
    """The records whose effects on *table* are not applied yet (origin offset above its marker); updates *markers*."""
    out = []
    for msg in msgs:
        e, t, part, off = origin(msg, epoch)
        key = (e, t, part)
        last = markers.get(key)
        if last is None:
            last = tx.applied(p, e, t, part, table)
        if off <= last:
            if count:
                metrics.SKIPPED.labels(agent).inc()
            continue
        markers[key] = off
        out.append(msg)
    return out


def dead_outputs(codec: Codec, agent: str, dead: Iterable[DeadLettered]) -> list[Output]:
    out: list[Output] = []
    for d in dead:
        log.warning("dead letter from %s[%d]@%d #%d: %s", d.original_topic, d.original_partition, d.original_offset,
                    d.batch_index, d.reason[:300])
        metrics.DEAD.labels(agent, d.error_type).inc()
        out.append((DEAD_LETTERS.name, d.original_topic.encode(), encode_event(codec, d),
                    [("reason", d.reason.encode()[:1000]), ("error-type", d.error_type.encode())]))
    return out


def update_record(entity_id: str, entity_type: str, revision: int, state: dict[str, Any] | str, at: datetime, cause: str,
                  region: str, source: str) -> dict[str, Any]:
    """A ``TwinEntityUpdated`` as the Avro record (the model's fields), its event id stable for a replay."""
    state_json = state if isinstance(state, str) else dumps(state).decode()
    return {"event_id": stable_id("upd", entity_id, revision, cause), "entity_id": entity_id, "region": region,
            "occurred_at": at.isoformat(), "source": source, "entity_type": entity_type, "revision": revision,
            "state_json": state_json, "cause_event_id": cause}


@dataclass
class LevelRow:
    """A water-level reading as ``twin.coast.assess`` reads it, from a light row."""

    entity_id: str
    occurred_at: datetime
    level_m: float
    event_id: str


class SensorUnit:
    """Sensor state, coast state and alerts, and aggregate partials, from the sensor topics; one transaction a batch."""

    agent = "twin-sensor-state"
    tables = (SENSOR_TABLE, AGGREGATE_TABLE, COAST_TABLE)
    topics: set[str] = set()  # the input topics (set by the app), for revocation

    def __init__(self, codec: Codec, pack: RegionPack, epoch: str, horizon_h: float, partitions: int | None = None,
                 min_columnar: int = MIN_COLUMNAR) -> None:
        """*partitions*: the sensor topics' partition count; given, a datum on another partition than its sensor's is
        a dead letter (``RecordDecoder.home``). *min_columnar*: below this many datums (a group of the decoder, the
        rows of a fold) the per-reading code decides and folds, which the columnar code equals (tested): polars' fixed
        cost per call is milliseconds, more than a few readings cost one by one."""
        self.codec, self.pack, self.epoch = codec, pack, epoch
        self.min_columnar = min_columnar
        self.region = pack.id
        sensors = pack.sensors
        from streams.catalogue import SENSOR_TOPICS

        self.decoder = ColumnarDecoder(codec, self.agent, expected={s.name: s.value_schemas for s in SENSOR_TOPICS.values()},
                                       known_entities=set(sensors), entity_kinds={sid: s.sensor_kind for sid, s in sensors.items()},
                                       home=sensor_homes(sensors, partitions) if partitions else None,
                                       min_columnar=min_columnar)
        self.kind_of = {name: getattr(t, "sensor_kind", "") for name, t in EVENT_TYPES.items()}
        self.groups = columnar.Groups(sensors)
        self.horizon = timedelta(hours=horizon_h)
        self.evicted_to: dict[int, Any] = {}  # per partition: the sweep key last swept (twin.aggregates.sweep_key)
        self.stats: dict[str, float] = {"records": 0, "datums": 0, "dead": 0, "changed": 0, "skipped": 0}

    def process(self, tx: Tx, p: int, msgs: list[Message]) -> None:
        # per table: normally the same records; after a crash cut a transaction short on a broker that shows aborted
        # records, a table may hold a batch that another does not: each table applies only what it lacks
        markers: dict[str, dict[tuple[str, str, int], int]] = {n: {} for n in self.tables}
        todo = {n: fresh(tx, p, msgs, self.epoch, self.agent, markers[n], n, n == SENSOR_TABLE) for n in self.tables}
        if not any(markers.values()):
            self.stats["skipped"] += len(msgs)
            return
        tables = tx.part(p)
        outputs: list[Output] = []
        todo_ids = {id(msg) for n in self.tables for msg in todo[n]}
        wanted = [msg for msg in msgs if id(msg) in todo_ids]
        batch = self.decoder.batch(wanted)
        position = {id(msg): k for k, msg in enumerate(wanted)}
        datums = sum(batch.datums.values())
        for msg in todo[SENSOR_TABLE]:
            dead = batch.dead.get(position[id(msg)])
            if dead:
                outputs.extend(dead_outputs(self.codec, self.agent, dead))
                self.stats["dead"] += len(dead)

        def frames(n: str, names: Iterable[str] | None = None) -> dict[str, pl.DataFrame]:
            records = [position[id(msg)] for msg in todo[n]]
            out = {}
            for name in batch.frames if names is None else names:
                df = batch.rows(name, records)
                if df is not None and len(df):
                    out[name] = df
            return out

        changes: dict[str, dict[bytes, Any]] = {SENSOR_TABLE: {}, AGGREGATE_TABLE: {}, COAST_TABLE: {}}
        if f := frames(SENSOR_TABLE):
            self._sensors(tables[SENSOR_TABLE], f, changes[SENSOR_TABLE], outputs)
        if f := frames(COAST_TABLE, ("WaterLevelMeasured",)):
            self._coast(tables[COAST_TABLE], f["WaterLevelMeasured"], changes[COAST_TABLE], outputs)
        if f := frames(AGGREGATE_TABLE, AGGREGATED):
            self._aggregates(p, tables[AGGREGATE_TABLE], f, changes[AGGREGATE_TABLE], outputs)
        tx.commit(p, changes, outputs, markers)
        n_records = len(wanted)
        self.stats["records"] += n_records
        self.stats["skipped"] += len(msgs) - n_records
        self.stats["datums"] += datums
        metrics.RECORDS.labels(self.agent).inc(n_records)
        metrics.READINGS.labels(self.agent).inc(datums)

    def _sensors(self, table: Mapping[bytes, Any], frames: dict[str, pl.DataFrame], changes: dict[bytes, Any],
                 outputs: list[Output]) -> None:
        states: dict[str, SensorState | None] = {}
        for df in frames.values():
            for sid in df["entity_id"].unique(maintain_order=True).to_list():
                raw = table.get(sid.encode())
                states[sid] = None if raw is None else SensorState.from_json(raw)
        if sum(len(df) for df in frames.values()) < self.min_columnar:
            changed = fold_sensor_rows(states, columnar.rows_of(frames), self.kind_of.__getitem__)
        else:
            changed = columnar.fold_sensors(states, frames, self.kind_of.__getitem__)
        self.stats["changed"] += len(changed)
        metrics.STATE_CHANGES.labels(self.agent).inc(len(changed))
        encode = self.codec.encode
        for sid, st in changed.items():
            doc = st.to_json()
            data = dumps(doc)
            text = data.decode()
            changes[sid.encode()] = Encoded(doc, data)
            rec = update_record(sid, "sensor", st.revision, text, st.observed_at, st.last_event_id, self.region, self.agent)
            outputs.append((TWIN_UPDATES.name, sid.encode(), encode("TwinEntityUpdated", rec), None))

    def _coast(self, table: Mapping[bytes, Any], levels: pl.DataFrame, changes: dict[bytes, Any],
               outputs: list[Output]) -> None:
        by_gauge = self.pack.coast_by_gauge
        states: dict[str, CoastState | None] = {}
        changed: dict[str, CoastState] = {}
        levels = levels.filter(pl.col("entity_id").is_in(list(by_gauge)))
        for _name, rec, t in columnar.to_rows("WaterLevelMeasured", levels):
            segments = by_gauge.get(rec["entity_id"])
            if not segments:
                continue
            reading = LevelRow(rec["entity_id"], t, rec["level_m"], rec["event_id"])
            for seg in segments:
                if seg.id not in states:
                    raw = table.get(seg.id.encode())
                    states[seg.id] = None if raw is None else CoastState.from_json(raw)
                prev = states[seg.id]
                new, raised = assess(seg, prev, reading)
                if new is prev:
                    continue
                states[seg.id] = changed[seg.id] = new
                for a in raised:  # event ids derived from the reading (twin.coast.alert_event_id): stable for a replay
                    log.info("%s %s: %s", type(a).__name__, a.alert_id, a.message)  # type: ignore[attr-defined]
                    outputs.append((ALERTS.name, a.alert_id.encode(), encode_event(self.codec, a), None))  # type: ignore[attr-defined]
        encode = self.codec.encode
        for seg_id, st in changed.items():
            doc = st.to_json()
            changes[seg_id.encode()] = doc
            rec = update_record(seg_id, "coast", st.revision, doc, st.observed_at, st.gauge, self.region, "twin-coast-state")
            outputs.append((TWIN_UPDATES.name, seg_id.encode(), encode("TwinEntityUpdated", rec), None))

    def _aggregates(self, p: int, table: MutableMapping[bytes, Any], frames: dict[str, pl.DataFrame],
                    changes: dict[bytes, Any], outputs: list[Output]) -> None:
        def load(key: str) -> aggregates.Partial | None:
            raw = table.get(key.encode())
            return None if raw is None else aggregates.Partial.from_json(raw)

        raw = table.get(WATERMARK_KEY)
        marks: dict[str, datetime] = {} if not raw else {n: datetime.fromisoformat(t) for n, t in raw.items()}
        if sum(len(df) for df in frames.values()) < self.min_columnar:  # the one horizon rule, on rows
            kept, moved = aggregates.within_horizon(columnar.rows_of(frames), marks, self.horizon)
            changed = aggregates.fold_rows({}, kept, self.pack.sensors, p, load) if kept else {}
        else:  # on columns
            admitted, moved = columnar.within_horizon(frames, marks, self.horizon)
            changed = columnar.fold_aggregates({}, admitted, self.groups, p, load) if admitted else {}
        newest = columnar.newest(frames)
        if newest is None:
            return
        encode = self.codec.encode
        latest = newest.isoformat()
        at = {n: t.isoformat() for n, t in moved.items()}
        for key, part in changed.items():
            doc = part.to_json()
            data = dumps(doc)
            text = data.decode()
            changes[key.encode()] = Encoded(doc, data)
            # occurred_at: the watermark of the partial's reading type on this shard (the API applies the same rule)
            rec = {"event_id": stable_id("agg", key, part.rev), "entity_id": part.group, "region": self.region,
                   "occurred_at": at.get(aggregates.SOURCE.get(part.metric, ""), latest), "source": self.agent,
                   "metric": part.metric, "window_start": doc["window"] or "", "window_s": part.window_s, "shard": p,
                   "partial_json": text}
            outputs.append((AGGREGATES.name, key.encode(), encode("AggregateUpdated", rec), None))
        if moved is not marks:
            self._evict(p, table, moved, changes, outputs)
            changes[WATERMARK_KEY] = at  # after the partials: visible only with them (a broker that shows aborted records)

    def _evict(self, p: int, table: Mapping[bytes, Any], marks: dict[str, datetime], changes: dict[bytes, Any],
               outputs: list[Output]) -> None:
        """Partials past the horizon (``twin.aggregates.expired_by``) leave the hot state: a tombstone in the changelog
        and on twin.aggregates. The table is scanned only when a cutoff enters a new eviction step
        (``twin.aggregates.sweep_key``, 15 minutes of event time): exact, since window ends are multiples of a step."""
        step = aggregates.sweep_key(marks, self.horizon)
        if self.evicted_to.get(p) == step:
            return
        self.evicted_to[p] = step
        candidates = dict(table)
        candidates.update((k, v.value if isinstance(v, Encoded) else v) for k, v in changes.items())
        for key, doc in candidates.items():
            if key.startswith(b"__") or not isinstance(doc, dict) or not doc.get("window"):
                continue
            if aggregates.expired_by(doc["metric"], datetime.fromisoformat(doc["window"]), doc["window_s"], marks,
                                     self.horizon):
                changes[key] = None
                outputs.append((AGGREGATES.name, key, None, None))


class MunicipalUnit:
    """Road works (on known road segments), defect reports and public events into entity state and updates."""

    agent = "twin-municipal-state"
    tables = (MUNICIPAL_TABLE,)
    topics: set[str] = set()

    def __init__(self, codec: Codec, pack: RegionPack, epoch: str, partitions: int | None = None) -> None:
        from streams.catalogue import MUNICIPAL_TOPICS

        self.codec, self.pack, self.epoch, self.region = codec, pack, epoch, pack.id
        self.decoder = RecordDecoder(codec, self.agent, expected={t.name: t.value_schemas for t in MUNICIPAL_TOPICS.values()},
                                     home=municipal_homes(pack.entities()) if partitions else None)

    def process(self, tx: Tx, p: int, msgs: list[Message]) -> None:
        markers: dict[tuple[str, str, int], int] = {}
        todo = fresh(tx, p, msgs, self.epoch, self.agent, markers)
        if not markers:
            return
        table = tx.part(p)[MUNICIPAL_TABLE]
        changes: dict[bytes, Any] = {}
        outputs: list[Output] = []
        for msg in todo:
            decoded = self.decoder.decode(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.headers)
            for e in decoded.events:
                if isinstance(e, RoadWorksAnnounced) and e.entity_id not in self.pack.roads:
                    decoded.dead.append(self.decoder.dead_letter(
                        msg.topic, msg.partition, msg.offset, msg.key, encode_event(self.codec, e), -1, "unknown_entity",
                        f"road works on {e.entity_id}, which is not a road segment of the pack; "
                        "list them with GET /entities?type=road"))
                    continue
                key = e.entity_id.encode()
                new = municipal.apply(changes.get(key, table.get(key)), e)
                if new is None:
                    continue
                changes[key] = new
                state = {k: v for k, v in new.items() if k != "event_ids"}
                rec = update_record(e.entity_id, e.entity_id.kind.value, new["revision"], state, e.occurred_at, e.event_id,
                                    self.region, self.agent)
                outputs.append((TWIN_UPDATES.name, key, self.codec.encode("TwinEntityUpdated", rec), None))
            outputs.extend(dead_outputs(self.codec, self.agent, decoded.dead))
            metrics.READINGS.labels(self.agent).inc(len(decoded.events) + len(decoded.dead))
        metrics.RECORDS.labels(self.agent).inc(len(todo))
        tx.commit(p, {MUNICIPAL_TABLE: changes}, outputs, {MUNICIPAL_TABLE: markers})


class ProcessorError(RuntimeError):
    pass


class StateView(MutableMapping[str, Any]):
    """A processor's state for one partition: reads the committed table, collects writes for the transaction."""

    def __init__(self, table: Mapping[bytes, Any]) -> None:
        self.table = table
        self.changes: dict[bytes, Any] = {}

    def __getitem__(self, key: str) -> Any:
        k = key.encode()
        if k in self.changes:
            value = self.changes[k]
            if value is None:
                raise KeyError(key)
            return value
        return self.table[k]

    def __setitem__(self, key: str, value: Any) -> None:
        if is_internal(key.encode()):
            raise ProcessorError(f"state key {key!r} is reserved for the platform's markers; choose another key")
        try:  # state must be JSON: fail here, with the processor's key, not in the transaction
            dumps(value)
        except TypeError as exc:
            raise TypeError(f"state {key!r} of processor state is not JSON: {exc}") from exc
        self.changes[key.encode()] = value

    def __delitem__(self, key: str) -> None:
        self[key]  # noqa: B018 - raises KeyError for a missing key, as a mapping must
        self.changes[key.encode()] = None

    def _keys(self) -> set[bytes]:
        keys = {k for k in self.table if not is_internal(k)}
        for k, v in self.changes.items():
            if v is None:
                keys.discard(k)
            else:
                keys.add(k)
        return keys

    def __iter__(self) -> Any:
        return (k.decode() for k in self._keys())

    def __len__(self) -> int:
        return len(self._keys())


class ProcessorUnit:
    """Runs one processor (``streams.processors``): its state in a table, its outputs only to its declared topic."""

    def __init__(self, proc: Any, codec: Codec, pack: RegionPack, epoch: str, sensor_topics: set[str],
                 partitions: int | None = None) -> None:
        self.proc, self.codec, self.epoch = proc, codec, epoch
        self.agent = proc.name
        self.table = f"{proc.name}-state"
        self.tables = (self.table,)
        self.allowed = frozenset(BY_NAME[proc.output].value_schemas)
        self.sensor_topics = sensor_topics
        self.topics = set(proc.topics)
        self.decoder = ColumnarDecoder(codec, proc.name, expected={t: BY_NAME[t].value_schemas for t in proc.topics},
                                       known_entities=set(pack.entities()),
                                       home=homes(pack.entities(), dict.fromkeys(proc.topics, partitions))
                                       if partitions else None)

    def process(self, tx: Tx, p: int, msgs: list[Message]) -> None:
        markers: dict[tuple[str, str, int], int] = {}
        todo = fresh(tx, p, msgs, self.epoch, self.agent, markers)
        if not markers:
            return
        view = StateView(tx.part(p)[self.table])
        outputs: list[Output] = []
        batch = self.decoder.batch(todo)
        for k, msg in enumerate(todo):
            dead = batch.dead.get(k)
            if dead and msg.topic not in self.sensor_topics:  # sensor topics' bad records are the core agent's
                outputs.extend(dead_outputs(self.codec, self.agent, dead))
        if hasattr(self.proc, "handle_frame"):
            self._frames(todo, batch.frames, view, outputs)
        else:
            self._events(todo, batch.frames, view, outputs)
        metrics.RECORDS.labels(self.agent).inc(len(todo))
        tx.commit(p, {self.table: view.changes}, outputs, {self.table: markers})

    def _frames(self, todo: list[Message], frames: dict[str, pl.DataFrame], view: StateView,
                outputs: list[Output]) -> None:
        """The columnar API: the whole take's readings as one frame per record name, one call; output ids from the
        take's first and last origin. If the call fails, the records one at a time, to keep only the failing one."""
        frames = {name: df for name, df in frames.items() if len(df)}
        if not frames:
            return
        n = sum(len(df) for df in frames.values())
        before = dict(view.changes)
        try:
            emitted = self.proc.handle_frame(frames, view)
            first, last = origin(todo[0], self.epoch), origin(todo[-1], self.epoch)
            outputs.extend([self._output(e, (*first, *last), i) for i, e in enumerate(emitted)])
            metrics.READINGS.labels(self.agent).inc(n)
            return
        except Exception:
            if len(todo) == 1:
                view.changes = before
                self._failed(todo[0], outputs)
                return
            view.changes = before
        for k, msg in enumerate(todo):
            one = {name: df.filter(pl.col("_m") == k).with_columns(_m=pl.lit(0, dtype=df.schema["_m"]))
                   for name, df in frames.items()}
            self._frames([msg], one, view, outputs)

    def _failed(self, msg: Message, outputs: list[Output]) -> None:
        exc = sys.exc_info()[1]
        log.exception("%s: processing %s[%d]@%d failed", self.agent, msg.topic, msg.partition, msg.offset)
        d = self.decoder.dead_letter(msg.topic, msg.partition, msg.offset, msg.key, msg.value or b"", -1,
                                     "processing", f"{type(exc).__name__}: {exc}")
        outputs.extend(dead_outputs(self.codec, self.agent, [d]))

    def _events(self, todo: list[Message], frames: dict[str, pl.DataFrame], view: StateView,
                outputs: list[Output]) -> None:
        """The per-event API: each record's readings as pydantic events, one call per record."""
        per_record = columnar.rows_by_record(frames)
        for k, msg in enumerate(todo):
            events = [light_to_model(EVENT_TYPES[name], rec, t) for name, rec, t in per_record.get(k, ())]  # type: ignore[arg-type]
            if not events:
                continue
            before = dict(view.changes)
            try:
                emitted = self.proc.handle(events, view)
                outputs.extend([self._output(e, origin(msg, self.epoch), i) for i, e in enumerate(emitted)])
            except Exception:  # a bug in the processor, for this record: keep the record, with the reason
                view.changes = before
                self._failed(msg, outputs)
            metrics.READINGS.labels(self.agent).inc(len(events))

    def _output(self, e: Any, cause: tuple[Any, ...], i: int) -> Output:
        name = type(e).__name__
        if not isinstance(e, Event) or name not in self.allowed:
            raise ProcessorError(f"processor {self.agent!r} emitted {name}, but its declared output topic "
                                 f"{self.proc.output!r} carries only {', '.join(sorted(self.allowed))}; a processor "
                                 "writes only to its declared output topic")
        e = e.model_copy(update={"event_id": stable_id(self.agent, *cause, i)})
        key = getattr(e, "alert_id", None) or e.entity_id
        return (self.proc.output, str(key).encode(), encode_event(self.codec, e), None)


def is_reading(e: Event) -> bool:
    return isinstance(e, Reading)
