"""The Faust app factory and the twin's agents.

Hot path: a Kafka record carries a batch of datums (see ``streams.publisher``). Per record, an agent decodes every
datum, folds them with the pure ``twin`` function per entity, writes each changed entity's state to its Faust table
once, and emits one ``TwinEntityUpdated`` per changed entity. Faust's per-record and per-table-write costs are paid
per batch and per changed entity, not per reading. Single-datum records from other producers work the same way.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import faust
from confluent_kafka import Producer

from schemas.codec import CodecError
from streams.catalogue import (
    AGGREGATES,
    ALERTS,
    DEAD_LETTERS,
    MUNICIPAL_TOPICS,
    SCENARIO_REQUESTS,
    SCENARIO_RESULTS,
    SENSOR_TOPICS,
    TWIN_UPDATES,
)
from streams.ingest import RecordDecoder
from streams.publisher import producer_config
from streams.serde import Codec, encode_event, make_codec
from streams.settings import StreamSettings
from twin import aggregates, municipal
from twin.coast import CoastState, assess
from twin.events import (
    AggregateUpdated,
    DeadLettered,
    Event,
    Reading,
    RoadWorksAnnounced,
    ScenarioCancelRequested,
    ScenarioRequested,
    TwinEntityUpdated,
    WaterLevelMeasured,
)
from twin.region import RegionPack, load_pack
from twin.sensors import SensorState, apply

log = logging.getLogger("plietsch.streams")

SENSOR_AGENT = "twin-sensor-state"
SENSOR_TABLE = "twin-sensor-state"
COAST_AGENT = "twin-coast-state"
COAST_TABLE = "twin-coast-state"
AGGREGATE_TABLE = "twin-aggregates"
MUNICIPAL_AGENT = "twin-municipal-state"
MUNICIPAL_TABLE = "twin-municipal-state"


@dataclass
class Emitter:
    """Output side of the agents: twin updates, alerts and dead letters through one confluent-kafka producer."""

    codec: Codec
    producer: Producer
    counts: dict[str, int] = field(default_factory=lambda: {"updates": 0, "dead": 0, "alerts": 0})

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, headers=headers or [])
                return
            except BufferError:
                self.producer.poll(0.05)

    def updates(self, items: Iterable[TwinEntityUpdated]) -> None:
        n = 0
        for upd in items:
            self._produce(TWIN_UPDATES.name, upd.entity_id.encode(), encode_event(self.codec, upd))
            n += 1
        self.counts["updates"] += n
        self.producer.poll(0)

    def aggregates(self, items: Iterable[AggregateUpdated]) -> None:
        for a in items:
            key = f"{a.metric}|{a.entity_id}|{a.window_start or 'current'}|{a.shard}"
            self._produce(AGGREGATES.name, key.encode(), encode_event(self.codec, a))
        self.producer.poll(0)

    def scenario(self, item: Event) -> None:
        self._produce(SCENARIO_RESULTS.name, item.entity_id.encode(), encode_event(self.codec, item))
        self.producer.flush(10)

    def alerts(self, items: Iterable[Event]) -> None:
        for a in items:
            log.info("%s %s: %s", type(a).__name__, a.alert_id, a.message)  # type: ignore[attr-defined]
            self._produce(ALERTS.name, a.alert_id.encode(), encode_event(self.codec, a))  # type: ignore[attr-defined]
            self.counts["alerts"] += 1
        self.producer.poll(0)

    def dead(self, items: Iterable[DeadLettered]) -> None:
        for d in items:
            log.warning("dead letter from %s[%d]@%d: %s", d.original_topic, d.original_partition, d.original_offset, d.reason)
            try:
                value = encode_event(self.codec, d)
            except CodecError as exc:  # never drop: keep the raw bytes with the reason in headers
                value = d.original_value
                log.error("dead letter could not be encoded (%s); raw bytes kept", exc)
            self._produce(DEAD_LETTERS.name, d.original_topic.encode(), value,
                          [("reason", d.reason.encode()[:1000]), ("error-type", d.error_type.encode())])
            self.counts["dead"] += 1
        self.producer.poll(0)

    def flush(self, timeout: float = 10.0) -> int:
        return int(self.producer.flush(timeout))


def entity_update(entity_id: str, entity_type: str, revision: int, state: dict[str, Any], at: datetime, cause: str,
                  region: str, source: str) -> TwinEntityUpdated:
    """The event that tells the read side an entity's state changed."""
    return TwinEntityUpdated(entity_id=entity_id, region=region, occurred_at=at, source=source, entity_type=entity_type,
                             revision=revision, state_json=json.dumps(state, separators=(",", ":")), cause_event_id=cause)


def sensor_update(state: SensorState, region: str, source: str) -> TwinEntityUpdated:
    return entity_update(state.entity_id, "sensor", state.revision, state.to_json(), state.observed_at, state.last_event_id,
                         region, source)


def tune_faust_fetch_wait(ms: int) -> None:
    """Faust 0.15 hard-codes aiokafka's fetch_max_wait_ms=1500; on a quiet partition a fetch then waits that long, which
    adds up to 1.5 s to every hop. Wrap the consumer class Faust's driver builds so the wait comes from our settings."""
    from faust.transport.drivers import aiokafka as driver

    original = getattr(driver.aiokafka.AIOKafkaConsumer, "__plietsch_original__", driver.aiokafka.AIOKafkaConsumer)

    class TunedConsumer(original):  # type: ignore[misc, valid-type]
        __plietsch_original__ = original

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    driver.aiokafka.AIOKafkaConsumer = TunedConsumer


def coast_update(state: CoastState, region: str) -> TwinEntityUpdated:
    return entity_update(state.segment_id, "coast", state.revision, state.to_json(), state.observed_at, state.gauge,
                         region, COAST_AGENT)


def fold_readings(states: dict[str, SensorState | None], readings: Iterable[Reading]) -> dict[str, SensorState]:
    """Fold readings into the given states (mutated); returns the states that changed."""
    changed: dict[str, SensorState] = {}
    for r in readings:
        sid = r.entity_id
        before = states.get(sid)
        after = apply(before, r)
        if after is not before:
            states[sid] = after
            changed[sid] = after
    return changed


class TwinApp:
    """Builds the Faust app for a region pack and settings."""

    def __init__(self, settings: StreamSettings | None = None, pack: RegionPack | None = None) -> None:
        self.settings = settings or StreamSettings()
        if not self.settings.bootstrap_servers:
            raise ValueError("KAFKA_BOOTSTRAP_SERVERS is not set; start the embedded broker with 'plietsch broker' "
                             "or run everything with 'make run'")
        self.pack = pack or load_pack(self.settings.region_pack)
        self.codec = make_codec(self.settings.schema_registry_url)
        sensors = self.pack.sensors
        self.decoder = RecordDecoder(
            self.codec, SENSOR_AGENT,
            expected={spec.name: spec.value_schemas for spec in SENSOR_TOPICS.values()},
            known_entities=set(sensors), entity_kinds={sid: s.sensor_kind for sid, s in sensors.items()},
        )
        self._emitter: Emitter | None = None
        self.stats: dict[str, float] = {"records": 0, "datums": 0, "dead": 0, "changed": 0, "first_at": 0.0, "last_at": 0.0}
        self.last_offsets: dict[tuple[str, int], int] = {}
        tune_faust_fetch_wait(self.settings.fetch_max_wait_ms)
        self.municipal_decoder = RecordDecoder(self.codec, MUNICIPAL_AGENT,
                                               expected={t.name: t.value_schemas for t in MUNICIPAL_TOPICS.values()})
        self.app = self._build()

    @property
    def emitter(self) -> Emitter:
        if self._emitter is None:
            self._emitter = Emitter(self.codec, Producer(producer_config(self.settings.bootstrap_servers)))
        return self._emitter

    def _build(self) -> faust.App:
        s = self.settings
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{b.strip()}" for b in s.bootstrap_servers.split(",")],
            store="memory://",
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.replication_factor,
            table_standby_replicas=0,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=s.heartbeat_interval_s,
            broker_rebalance_timeout=s.rebalance_timeout_s,
            consumer_auto_offset_reset="earliest",
            web_port=s.web_port,
            web_host="127.0.0.1",
            web_bind="127.0.0.1",
            stream_wait_empty=False,
            consumer_max_fetch_size=8 * 1024 * 1024,
        )
        topic = app.topic(*[t.name for t in SENSOR_TOPICS.values()], key_serializer="raw", value_serializer="raw",
                          partitions=s.topic_partitions)
        table = app.Table(SENSOR_TABLE, default=None, partitions=s.topic_partitions, key_type=bytes,
                          help="latest state per sensor")
        self.table = table
        agg_table = app.Table(AGGREGATE_TABLE, default=None, partitions=s.topic_partitions, key_type=bytes,
                              help="partials of windowed aggregates, keyed metric|group|window|shard")
        self.agg_table = agg_table
        region = self.pack.id

        @app.agent(topic, name=SENSOR_AGENT)
        async def sensor_state(stream: Any) -> None:
            async for event in stream.events():
                self._guarded(SENSOR_AGENT, event.message, lambda m: self.process(m, table, agg_table, region))

        self.agent = sensor_state
        self._add_processors(app)
        municipal_topic = app.topic(*[t.name for t in MUNICIPAL_TOPICS.values()], key_serializer="raw", value_serializer="raw")
        municipal_parts = {t.partitions for t in MUNICIPAL_TOPICS.values()}
        if len(municipal_parts) != 1:
            raise ValueError(f"municipal topics must share one partition count for the table, got {sorted(municipal_parts)}")
        municipal_table = app.Table(MUNICIPAL_TABLE, default=None, key_type=bytes, partitions=municipal_parts.pop(),
                                    help="road works per road segment, defect reports and public events")

        @app.agent(municipal_topic, name=MUNICIPAL_AGENT)
        async def municipal_state(stream: Any) -> None:
            async for event in stream.events():
                self._guarded(MUNICIPAL_AGENT, event.message, lambda m: self.process_municipal(m, municipal_table, region))

        coast_topic = app.topic(SENSOR_TOPICS["water_level"].name, key_serializer="raw", value_serializer="raw",
                                partitions=s.topic_partitions)
        coast_table = app.Table(COAST_TABLE, default=None, partitions=s.topic_partitions, key_type=bytes,
                                help="water level, freeboard and surge class per coast segment")
        self.coast_table = coast_table

        @app.agent(coast_topic, name=COAST_AGENT)
        async def coast_state(stream: Any) -> None:
            async for event in stream.events():
                self._guarded(COAST_AGENT, event.message, lambda m: self.process_coast(m, coast_table, region))

        from streams.scenarios import ScenarioRunner

        runner = ScenarioRunner(self.pack, s.data_dir, lambda e: self.emitter.scenario(e))
        self.scenarios = runner
        scenario_decoder = RecordDecoder(self.codec, "twin-scenarios",
                                         expected={SCENARIO_REQUESTS.name: SCENARIO_REQUESTS.value_schemas})
        requests = app.topic(SCENARIO_REQUESTS.name, key_serializer="raw", value_serializer="raw", partitions=1)

        @app.agent(requests, name="twin-scenarios", concurrency=1)
        async def scenarios(stream: Any) -> None:
            """Runs each requested scenario in a thread, one after another; bad requests become dead letters."""
            import asyncio

            async for event in stream.events():
                msg = event.message
                decoded = scenario_decoder.decode(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.headers)
                if decoded.dead:
                    self.emitter.dead(decoded.dead)
                for e in decoded.events:
                    if isinstance(e, ScenarioRequested):
                        await asyncio.get_running_loop().run_in_executor(None, runner.execute, e)

        cancels = app.topic(SCENARIO_REQUESTS.name, key_serializer="raw", value_serializer="raw", partitions=1)

        @app.agent(cancels, name="twin-scenario-cancel")
        async def scenario_cancel(stream: Any) -> None:
            """Sees cancellations while a scenario runs (the other agent is busy with it)."""
            async for event in stream.events():
                msg = event.message
                for e in scenario_decoder.decode(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.headers).events:
                    if isinstance(e, ScenarioCancelRequested):
                        runner.cancel(e.entity_id)

        @app.timer(interval=1.0, name="twin-flush-outputs")
        async def flush_outputs() -> None:
            if self._emitter is not None:
                self._emitter.producer.poll(0)

        @app.timer(interval=10.0, name="twin-progress")
        async def progress() -> None:
            log.info("processed %(records)d records, %(datums)d readings, %(changed)d state changes, %(dead)d dead letters",
                     self.stats)
            log.debug("last offsets %s", self.last_offsets)

        @app.page("/twin/stats")
        async def stats_page(web: Any, request: Any) -> Any:
            return web.json(self.stats)

        @app.page("/twin/sensors/{sensor_id}")
        async def sensor_page(web: Any, request: Any, sensor_id: str) -> Any:
            value = table.get(sensor_id.encode())
            if value is None:
                return web.json({"error": f"no state for {sensor_id}"}, status=404)
            return web.json(value)

        return app

    def _add_processors(self, app: faust.App) -> None:
        """One agent per processor named in PLIETSCH_PROCESSORS (see streams.processors)."""
        from streams.catalogue import BY_NAME
        from streams.processors import load_processors

        sensor_topics = {t.name for t in SENSOR_TOPICS.values()}
        for proc in load_processors(self.settings.processors):
            decoder = RecordDecoder(self.codec, proc.name, expected={t: BY_NAME[t].value_schemas for t in proc.topics},
                                    known_entities=set(self.pack.entities()))
            topic = app.topic(*proc.topics, key_serializer="raw", value_serializer="raw")

            def step(msg: Any, proc: Any = proc, decoder: RecordDecoder = decoder) -> None:
                decoded = decoder.decode(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.headers)
                if decoded.dead and msg.topic not in sensor_topics:  # sensor topics' bad records are the core agent's
                    self.emitter.dead(decoded.dead)
                outputs = proc.handle(decoded.events) if decoded.events else []
                for e in outputs:
                    self.emitter._produce(proc.output, e.entity_id.encode(), encode_event(self.codec, e))
                self.emitter.producer.poll(0)

            async def run(stream: Any, name: str = proc.name, step: Any = step) -> None:
                async for event in stream.events():
                    self._guarded(name, event.message, step)

            app.agent(topic, name=proc.name)(run)

    def _guarded(self, processor: str, msg: Any, step: Any) -> None:
        try:
            step(msg)
        except Exception as exc:  # a bug or a poison record must not stop the worker: keep it, with the reason
            log.exception("%s: processing %s[%d]@%d failed", processor, msg.topic, msg.partition, msg.offset)
            self.emitter.dead([DeadLettered(
                original_topic=msg.topic, original_partition=msg.partition, original_offset=msg.offset,
                original_key=msg.key, original_value=msg.value or b"", error_type="processing",
                reason=f"{type(exc).__name__}: {exc}", processor=processor)])

    def process_municipal(self, msg: Any, table: Any, region: str) -> None:
        """Road works (on known road segments), defect reports and public events into entity state and updates."""
        decoded = self.municipal_decoder.decode(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.headers)
        good = []
        for e in decoded.events:
            if isinstance(e, RoadWorksAnnounced) and e.entity_id not in self.pack.roads:
                decoded.dead.append(self.municipal_decoder.dead_letter(
                    msg.topic, msg.partition, msg.offset, msg.key, encode_event(self.codec, e), -1, "unknown_entity",
                    f"road works on {e.entity_id}, which is not a road segment of the pack; list them with GET /entities?type=road"))
            else:
                good.append(e)
        if decoded.dead:
            self.emitter.dead(decoded.dead)
        updates = []
        for e in good:
            key = e.entity_id.encode()
            new = municipal.apply(table.get(key), e)
            if new is None:
                continue
            table[key] = new
            updates.append(entity_update(e.entity_id, e.entity_id.kind.value, new["revision"],
                                         {k: v for k, v in new.items() if k != "event_ids"}, e.occurred_at, e.event_id,
                                         region, MUNICIPAL_AGENT))
        self.emitter.updates(updates)

    def process_coast(self, msg: Any, table: Any, region: str) -> None:
        """Water-level readings into coast-segment state and alerts. Bad records are the sensor agent's to report."""
        decoded = self.decoder.decode(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.headers)
        states: dict[str, CoastState | None] = {}
        changed: dict[str, CoastState] = {}
        alerts: list[Event] = []
        for r in decoded.events:
            if not isinstance(r, WaterLevelMeasured):
                continue
            for seg in self.pack.coast_by_gauge.get(r.entity_id, ()):
                if seg.id not in states:
                    raw = table.get(seg.id.encode())
                    states[seg.id] = None if raw is None else CoastState.from_json(raw)
                new, raised = assess(seg, states[seg.id], r)
                if new is not states[seg.id]:
                    states[seg.id] = changed[seg.id] = new
                    alerts.extend(raised)
        for sid, st in changed.items():
            table[sid.encode()] = st.to_json()
        self.emitter.updates(coast_update(st, region) for st in changed.values())
        if alerts:
            self.emitter.alerts(alerts)

    def process(self, msg: Any, table: Any, agg_table: Any, region: str) -> None:
        decoded = self.decoder.decode(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.headers)
        now = time.time()
        if not self.stats["first_at"]:
            self.stats["first_at"] = now
        self.stats["last_at"] = now
        self.stats["records"] += 1
        self.stats["datums"] += len(decoded.events) + len(decoded.dead)
        self.stats["dead"] += len(decoded.dead)
        self.last_offsets[(msg.topic, msg.partition)] = msg.offset
        if decoded.dead:
            self.emitter.dead(decoded.dead)
        if not decoded.events:
            return
        states: dict[str, SensorState | None] = {}
        for r in decoded.events:
            if r.entity_id not in states:
                raw = table.get(r.entity_id.encode())
                states[r.entity_id] = None if raw is None else SensorState.from_json(raw)
        changed = fold_readings(states, decoded.events)  # type: ignore[arg-type]
        self.stats["changed"] += len(changed)
        for sid, st in changed.items():
            table[sid.encode()] = st.to_json()
        self.emitter.updates(sensor_update(st, region, SENSOR_AGENT) for st in changed.values())
        self.fold_aggregates(decoded.events, msg.partition, agg_table, region)  # type: ignore[arg-type]

    def fold_aggregates(self, readings: list[Reading], shard: int, table: Any, region: str) -> None:
        def load(key: str) -> aggregates.Partial | None:
            raw = table.get(key.encode())
            return None if raw is None else aggregates.Partial.from_json(raw)

        changed = aggregates.fold({}, readings, self.pack.sensors, shard, load)
        if not changed:
            return
        latest = max(r.occurred_at for r in readings)
        out = []
        for key, p in changed.items():
            doc = p.to_json()
            table[key.encode()] = doc
            out.append(AggregateUpdated(
                entity_id=p.group, region=region, occurred_at=latest, source=SENSOR_AGENT,
                metric=p.metric, window_start=p.window.isoformat() if p.window else "", window_s=p.window_s, shard=shard,
                partial_json=json.dumps(doc, separators=(",", ":"))))
        self.emitter.aggregates(out)


def create_app(settings: StreamSettings | None = None) -> faust.App:
    return TwinApp(settings).app
