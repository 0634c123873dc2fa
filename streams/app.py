"""The Faust app factory and the twin's agents.

Faust runs the consumer group (co-partitioned assignment, rebalances, offset commits) and the agents; the work per
batch of records lives in ``streams.agents`` and its state in ``streams.tables``. Per input partition, each batch's
state changes, outputs and applied-offset markers commit in one Kafka transaction; the offsets Faust commits afterwards
are a hint only, the markers decide what is skipped after a crash or a rebalance. See README "Hot path".
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import faust
from confluent_kafka import KafkaException

from infra.kafka_security import kafka_security
from streams import metrics
from streams.agents import MunicipalUnit, ProcessorUnit, SensorUnit
from streams.catalogue import BY_NAME, MUNICIPAL_TOPICS, SENSOR_TOPICS
from streams.serde import make_codec
from streams.settings import StreamSettings
from streams.tables import TxTables, open_parts
from twin.events import DeadLettered, Reading
from twin.region import RegionPack, load_pack
from twin.sensors import SensorState, apply

log = logging.getLogger("plietsch.streams")

SENSOR_AGENT = SensorUnit.agent
MUNICIPAL_AGENT = MunicipalUnit.agent
BATCH_RECORDS = 1024  # Kafka records taken together (each may carry thousands of datums); 256 gave half the rate
# when records are small (bench/pipeline.py, BENCHMARKS.md session 8): per take and partition one transaction
BATCH_WITHIN_S = 0.02
GC_THRESHOLD = 50_000  # allocations between young-generation collections (CPython's default: 700)
OVERLAP_COMMITS = True  # a take's transactions commit in one commit thread while the next partition is processed


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


def tune_faust_consumer(fetch_wait_ms: int) -> None:
    """Faust 0.15 hard-codes aiokafka's fetch_max_wait_ms=1500 (up to 1.5 s added to every hop on a quiet partition)
    and reads uncommitted records. Wrap the consumer class Faust's driver builds: the wait from our settings, and
    ``read_committed``, so that the worker never sees records of an aborted transaction (replays, other workers)."""
    from faust.transport.drivers import aiokafka as driver

    original = getattr(driver.aiokafka.AIOKafkaConsumer, "__plietsch_original__", driver.aiokafka.AIOKafkaConsumer)

    class TunedConsumer(original):  # type: ignore[misc, valid-type]
        __plietsch_original__ = original

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = fetch_wait_ms
            kwargs["isolation_level"] = "read_committed"
            super().__init__(*args, **kwargs)

    driver.aiokafka.AIOKafkaConsumer = TunedConsumer


tune_faust_fetch_wait = tune_faust_consumer  # the former name


class TwinApp:
    """Builds the Faust app for a region pack and settings."""

    def __init__(self, settings: StreamSettings | None = None, pack: RegionPack | None = None) -> None:
        self.settings = settings or StreamSettings()
        if not self.settings.bootstrap_servers:
            raise ValueError("KAFKA_BOOTSTRAP_SERVERS is not set; start the embedded broker with 'plietsch broker' "
                             "or run everything with 'make run'")
        s = self.settings
        self.pack = pack or load_pack(s.region_pack)
        self.codec = make_codec(s.schema_registry_url)
        self.sensor_unit = SensorUnit(self.codec, self.pack, s.broker_epoch, s.aggregate_horizon_h, s.topic_partitions)
        self.stats = self.sensor_unit.stats
        self.stats.update(first_at=0.0, last_at=0.0)
        parts = {t.partitions for t in MUNICIPAL_TOPICS.values()}
        if len(parts) != 1:
            raise ValueError(f"municipal topics must share one partition count, got {sorted(parts)}")
        municipal_parts = parts.pop()
        self.municipal_unit = MunicipalUnit(self.codec, self.pack, s.broker_epoch, municipal_parts)
        self.units: list[tuple[Any, TxTables]] = []
        # one commit thread for every table of the worker: its transactions stay one at a time (streams.tables)
        self.committer = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="plietsch-commit")
                          if OVERLAP_COMMITS else None)
        self.sensor_tx = self._tx(self.sensor_unit, s.topic_partitions)
        self.municipal_tx = self._tx(self.municipal_unit, municipal_parts)
        self.last_offsets: dict[tuple[str, int], int] = {}
        self.lags: dict[tuple[str, int], int] = {}
        self.loop_lag = metrics.LoopLag()
        self.lag_watch = metrics.LagWatch(self.settings.lag_warning_records, every_s=self.settings.lag_warning_every_s)
        # All state work runs in this one thread, one batch at a time (TxTables is not shared between threads)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plietsch-agents")
        self._settling: Future[None] | None = None
        tune_faust_consumer(s.fetch_max_wait_ms)
        self.app = self._build()

    def _tx(self, unit: Any, partitions: int) -> TxTables:
        tx = TxTables(self.settings.bootstrap_servers, self.settings.app_id, unit.agent, unit.tables, partitions)
        tx.committer = self.committer
        self.units.append((unit, tx))
        return tx

    def _build(self) -> faust.App:
        s = self.settings
        faust_dir = s.data_dir / "faust"
        faust_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last part of its datadir
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{b.strip()}" for b in s.bootstrap_servers.split(",")],
            store="memory://",
            # Faust makes a folder for on-disk tables at start (none here: the store is memory); under the data folder,
            # not "<app id>-data" in whatever directory the worker was started from
            datadir=str(faust_dir / "{conf.name}"),
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.replication_factor,
            # >0 makes Faust use its own assignor, which gives partition p of every co-partitioned input topic to the
            # same worker (our transactional ids are per partition number); there are no Faust tables to stand by for
            table_standby_replicas=1,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=s.heartbeat_interval_s,
            broker_rebalance_timeout=s.rebalance_timeout_s,
            consumer_auto_offset_reset="earliest",
            web_port=s.web_port,
            web_host="127.0.0.1",
            web_bind="127.0.0.1",
            stream_wait_empty=False,
            consumer_max_fetch_size=8 * 1024 * 1024,
            broker_check_crcs=False,  # TCP and the broker check; aiokafka's CRC pass costs per record batch
            broker_credentials=kafka_security().faust_credentials(),  # SASL/TLS from the environment, None for plain
        )
        topic = app.topic(*[t.name for t in SENSOR_TOPICS.values()], key_serializer="raw", value_serializer="raw",
                          partitions=s.topic_partitions)
        self.sensor_unit.topics = {t.name for t in SENSOR_TOPICS.values()}
        app.agent(topic, name=SENSOR_AGENT)(self._runner(self.sensor_unit, self.sensor_tx))
        municipal_topic = app.topic(*[t.name for t in MUNICIPAL_TOPICS.values()], key_serializer="raw", value_serializer="raw")
        self.municipal_unit.topics = {t.name for t in MUNICIPAL_TOPICS.values()}
        app.agent(municipal_topic, name=MUNICIPAL_AGENT)(self._runner(self.municipal_unit, self.municipal_tx))
        self._add_processors(app)

        async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
            loop = asyncio.get_running_loop()
            for unit, tx in self.units:
                for p in {tp.partition for tp in revoked if tp.topic in unit.topics}:
                    await loop.run_in_executor(self.executor, tx.drop, p)

        app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

        async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
            """Fence the previous owners and load the state of new partitions now, not on their first record."""
            pairs = [(tx, p) for unit, tx in self.units
                     for p in sorted({tp.partition for tp in assigned if tp.topic in unit.topics}) if p not in tx.parts]
            if pairs:  # side by side: each partition's start is mostly waiting on the broker (streams.tables.open_parts)
                await asyncio.get_running_loop().run_in_executor(self.executor, open_parts, pairs)

        app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

        @app.task
        async def settle_gc() -> None:
            """The hot path makes many short-lived objects (rows, outputs) beside a large, long-lived heap (Faust,
            aiokafka, the region pack, the tables): CPython's default thresholds scan that heap again and again. Move
            what start-up made out of the collector's reach and collect young objects less often."""
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_THRESHOLD, 20, 50)

        @app.task
        async def loop_lag() -> None:
            """How long the event loop is ever blocked (plietsch_worker_loop_lag_max_seconds on /metrics): a blocked
            loop polls nothing and misses its heartbeats; the fuzz drill holds it under 1 s whatever is produced."""
            await self.loop_lag.run()

        @app.timer(interval=10.0, name="twin-progress")
        async def progress() -> None:
            self._report()

        @app.timer(interval=1.0, name="twin-settle")
        async def settle_transactions() -> None:
            """Settle writes on idle partitions (streams.tables: finalises what Tansu may leave prepared), queued in
            the processing thread between batches; the timer does not wait for them, one round at a time."""
            if self._settling is None or self._settling.done():
                self._settling = self.executor.submit(self._settle)

        @app.timer(interval=1.0, name="twin-lag")
        async def lag_gauges() -> None:  # /metrics shows a burst of lag (after a pause) that a 10 s report would miss
            self._update_lag()

        @app.page("/twin/stats")
        async def stats_page(web: Any, request: Any) -> Any:
            return web.json(self.stats)

        @app.page("/health")
        async def health_page(web: Any, request: Any) -> Any:
            """The worker in brief: consumer lag (total and per input partition), throughput, dead letters."""
            lag = {f"{t}[{p}]": int(n) for (t, p), n in self.lags.items()}
            return web.json({"status": "ok", "lag": sum(lag.values()), "lag_by_partition": lag,
                             "records": self.stats["records"], "datums": self.stats["datums"],
                             "dead_letters": self.stats["dead"], "skipped_as_applied": self.stats["skipped"]})

        @app.page("/metrics")
        async def metrics_page(web: Any, request: Any) -> Any:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

        @app.page("/twin/sensors/{sensor_id}")
        async def sensor_page(web: Any, request: Any, sensor_id: str) -> Any:
            from streams.agents import SENSOR_TABLE

            for tables in self.sensor_tx.parts.values():
                value = tables[SENSOR_TABLE].get(sensor_id.encode())
                if value is not None:
                    return web.json(value)
            return web.json({"error": f"no state for {sensor_id} on this worker"}, status=404)

        return app

    def _settle(self) -> None:
        for _, tx in self.units:  # no settle write beside a commit of any agent (one transaction at a time)
            tx.wait()
        for _, tx in self.units:
            try:
                tx.settle()
            except Exception:  # noqa: BLE001 - fatal Kafka errors end the process inside TxTables; a bug must not
                log.exception("%s: settle write failed", tx.agent)  # stop the timer for good

    def _runner(self, unit: Any, tx: TxTables) -> Any:
        async def run(stream: Any) -> None:
            async for events in stream.take_events(BATCH_RECORDS, within=BATCH_WITHIN_S):
                work = asyncio.ensure_future(self._take(unit, tx, events))
                try:
                    await asyncio.shield(work)
                except asyncio.CancelledError:
                    # stopping (SIGTERM, Ctrl-C): Faust acks every record of the take as its generator closes and
                    # commits the acked offsets on the way out, whether or not the take was done. So the take ends
                    # first: its transactions commit (or the process ends on a fatal error), then the acks are true.
                    # A second cancellation (a second signal) stops waiting; the markers then keep what committed.
                    log.info("%s: stopping; the take of %d records finishes first", unit.agent, len(events))
                    await asyncio.wait({work})
                    raise

        return run

    async def _take(self, unit: Any, tx: TxTables, events: list[Any]) -> None:
        """One take: per partition a transaction, in the worker's one processing thread (the event loop goes on
        fetching meanwhile, and the transaction of the partition before commits in the commit thread)."""
        loop = asyncio.get_running_loop()
        by_part: dict[int, list[Any]] = defaultdict(list)
        for event in events:
            by_part[event.message.partition].append(event.message)
        for p, msgs in by_part.items():
            # A take can hold records of a partition revoked since they were fetched (Faust clears the agents' queues
            # on a rebalance, not a take's buffer): they are the new owner's now, from the committed offset on;
            # processing them here would fence it. Those still assigned go on (the revocation waits for them).
            assigned = self.app.consumer.assignment()
            mine = [m for m in msgs if m.tp in assigned]
            if len(mine) < len(msgs):
                metrics.SKIPPED_REVOKED.labels(unit.agent).inc(len(msgs) - len(mine))
                log.info("%s: %d records of partition %d left to its new owner (revoked during the take)",
                         unit.agent, len(msgs) - len(mine), p)
            if mine:
                await loop.run_in_executor(self.executor, self._process, unit, tx, p, mine)
        # every transaction of the take has committed before Faust may commit the take's input offsets (the acks at
        # the next iteration); a failed one ends the process (or, with a test's on_crash, this agent)
        for fut in tx.pending_commits():
            await asyncio.wrap_future(fut)
        if unit is self.sensor_unit:
            self.stats["last_at"] = time.time()

    def _process(self, unit: Any, tx: TxTables, p: int, msgs: list[Any]) -> None:
        now = time.time()
        try:
            unit.process(tx, p, msgs)
        except KafkaException:
            raise  # TxTables retries what is transient and ends the process on what is not; never dead letters
        except Exception:
            if len(msgs) > 1:  # find the record that fails; its neighbours go through
                for m in msgs:
                    self._process(unit, tx, p, [m])
                return
            msg = msgs[0]
            log.exception("%s: processing %s[%d]@%d failed", unit.agent, msg.topic, msg.partition, msg.offset)
            self._poison(unit, tx, p, msg)
        if unit is self.sensor_unit:
            self.stats["first_at"] = self.stats["first_at"] or now
        for m in msgs:
            self.last_offsets[(m.topic, m.partition)] = m.offset

    def _poison(self, unit: Any, tx: TxTables, p: int, msg: Any) -> None:
        """A record that fails for a reason other than Kafka (a bug, or input no check foresaw): kept as a dead letter,
        committed with its marker, so the worker goes on and the record is not lost."""
        import sys

        from streams.agents import dead_outputs, fresh

        exc = sys.exc_info()[1]
        markers: dict[tuple[str, str, int], int] = {}
        if not fresh(tx, p, [msg], self.settings.broker_epoch, unit.agent, markers):
            return
        d = DeadLettered(original_topic=msg.topic, original_partition=msg.partition, original_offset=msg.offset,
                         original_key=msg.key, original_value=msg.value or b"", error_type="processing",
                         reason=f"{type(exc).__name__}: {exc}", processor=unit.agent)
        tx.commit(p, {}, dead_outputs(self.codec, unit.agent, [d]), {n: markers for n in unit.tables})

    def _update_lag(self) -> int:
        """Set the lag gauge per input partition (high watermark of the last fetch minus the next offset to process);
        returns the total."""
        total = 0
        try:
            consumer = self.app.consumer
            for tp in consumer.assignment():
                hw = consumer.highwater(tp)
                if hw is None or hw < 0:
                    continue
                last = self.last_offsets.get((tp.topic, tp.partition))
                lag = max(0, hw - (last + 1 if last is not None else 0))
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(lag)
                self.lags[(tp.topic, tp.partition)] = lag
                total += lag
        except Exception:  # metrics must never stop the worker
            log.debug("lag not available", exc_info=True)
        return total

    def _report(self) -> None:
        s = self.stats
        rate = 0.0
        prev = getattr(self, "_prev", None)
        now = time.monotonic()
        if prev is not None:
            rate = (s["datums"] - prev[1]) / max(1e-6, now - prev[0])
        self._prev = (now, s["datums"])
        metrics.RATE.labels(SENSOR_AGENT).set(rate)
        total = self._update_lag()
        warning = self.lag_watch.observe(total, now)
        if warning:
            log.warning("%s", warning)
        log.info("processed %d records, %d readings (%.0f/s), %d state changes, %d dead letters, %d skipped as applied",
                 s["records"], s["datums"], rate, s["changed"], s["dead"], s["skipped"])

    def _add_processors(self, app: faust.App) -> None:
        """One agent per processor named in PLIETSCH_PROCESSORS (see streams.processors)."""
        from streams.processors import load_processors

        sensor_topics = {t.name for t in SENSOR_TOPICS.values()}
        for proc in load_processors(self.settings.processors):
            parts = {BY_NAME[t].partitions for t in proc.topics}
            if len(parts) != 1:
                raise ValueError(f"processor {proc.name!r} reads topics with different partition counts {sorted(parts)}; "
                                 "its state is split by partition, so they must be co-partitioned")
            n = parts.pop()
            unit = ProcessorUnit(proc, self.codec, self.pack, self.settings.broker_epoch, sensor_topics, n)
            unit.topics = set(proc.topics)
            tx = self._tx(unit, n)
            topic = app.topic(*proc.topics, key_serializer="raw", value_serializer="raw")
            app.agent(topic, name=proc.name)(self._runner(unit, tx))


def create_app(settings: StreamSettings | None = None) -> faust.App:
    return TwinApp(settings).app
