"""Start-up of the embedded stack: put the twin back into a fresh memory-only broker, and measure a worker's lag.

With a checkpoint: restore it (``streams.checkpoint``), then replay only the archive's tail after its applied-offset
markers. Without one: replay the whole archive (a first start). Replayed records carry ``plietsch-replay: 1`` and
``plietsch-origin: <epoch>|<topic>|<partition>|<offset>`` (contract 2), go to their original topic and partition in
original offset order (an idempotent producer keeps the order), and are not archived again.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from infra.kafka_security import kafka_security
from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, frame_batch
from streams.publisher import producer_config

REPLAY_HEADER = "plietsch-replay"
ORIGIN_HEADER = "plietsch-origin"
PROGRESS_EVERY_S = 2.0


class ReplayError(RuntimeError):
    pass


def origin_header(origin: tuple[str, str, int, int]) -> bytes:
    epoch, topic, partition, offset = origin
    return f"{epoch}|{topic}|{partition}|{offset}".encode()


def replay_tail(bootstrap: str, archive_root: Path, covered: Mapping[tuple[str, str, int], int],
                report: Callable[[str], None], should_stop: Callable[[], bool] = lambda: False) -> tuple[int, int]:
    """Produce every archived record that *covered* does not hold (``streams.archive.tail``) into its topic and
    partition; returns (records, datums). Progress is reported every few seconds."""
    from streams.archive import tail
    from streams.catalogue import FEEDBACK, MUNICIPAL_TOPICS, SENSOR_TOPICS

    # the public's feedback too: the topic is the API's store of it (api/feedback_store.py); no agent keeps markers for
    # it, so all of it is replayed each time (it is written by people: small), and the store counts each feedback once
    agent_inputs = {t.name for t in (*SENSOR_TOPICS.values(), *MUNICIPAL_TOPICS.values(), FEEDBACK)}

    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    producer = Producer(producer_config(bootstrap, **{"enable.idempotence": True, "linger.ms": 20}))
    t0 = last = time.monotonic()
    records = datums = 0
    # the agents' inputs and feedback: the audit topic is archived too, but nothing folds it (GET /audit reads the archive)
    for rec in tail(archive_root, covered, agent_inputs):
        if should_stop():
            break
        headers: list[tuple[str, str | bytes | None]] = [(REPLAY_HEADER, b"1"), (ORIGIN_HEADER, origin_header(rec.origin))]
        if len(rec.datums) == 1:
            value = rec.datums[0]
        else:
            value = frame_batch(rec.datums)
            headers += [(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE), ("plietsch-count", str(len(rec.datums)).encode())]
        while True:
            try:
                producer.produce(rec.topic, key=rec.key, value=value, partition=rec.partition, headers=headers,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        records += 1
        datums += len(rec.datums)
        if records % 1000 == 0:
            producer.poll(0)
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S:
                report(f"  replayed {datums:,} events in {records:,} records ({datums / (now - t0):,.0f} ev/s)")
                last = now
    left = producer.flush(60)
    if left or errors:
        raise ReplayError(f"replay: {left} record(s) not delivered within 60 s, {len(errors)} failed "
                          f"({'; '.join(errors[:3])}); is the broker reachable?")
    return records, datums


def group_consumers(bootstrap: str, groups: list[str]) -> dict[str, Consumer]:
    """A consumer per group id, never subscribed (it joins nothing): it reads what the group committed. Not an
    AdminClient: librdkafka 2.x aborts the process now and then (``rd_kafka_enq_once_del_source_return: Assertion
    `eonce->refcnt > 0'``, in its admin coordinator requests) when such a request times out while the broker does not
    answer, which took a test's whole API process down during a broker outage; the consumer's OffsetFetch has no such
    path."""
    return {g: Consumer({**kafka_security().librdkafka(), "bootstrap.servers": bootstrap, "group.id": g,
                         "enable.auto.commit": False}) for g in groups}


def group_lag(consumers: Mapping[str, Consumer], topics: list[str], timeout: float = 2.0) -> int | None:
    """Records in *topics* beyond what each consumer group committed, summed over the groups of *consumers*
    (:func:`group_consumers`; None: unknown). A partition a group never committed counts in full."""
    if not consumers:
        return 0
    try:
        any_consumer = next(iter(consumers.values()))
        md = any_consumer.list_topics(timeout=timeout)
        tps = [TopicPartition(t, p) for t in topics if t in md.topics for p in md.topics[t].partitions]
        ends = {(tp.topic, tp.partition): any_consumer.get_watermark_offsets(tp, timeout=timeout) for tp in tps}
        lag = 0
        for consumer in consumers.values():
            committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=timeout)}
            for key, (lo, hi) in ends.items():
                done = committed.get(key, -1)
                lag += max(0, hi - (done if done >= 0 else lo))
        return lag
    except (KafkaException, TimeoutError, concurrent.futures.TimeoutError):
        return None


def wait_for_lag_zero(bootstrap: str, groups: list[str], topics: list[str], deadline: float,
                      hurry: Callable[[], bool] = lambda: False) -> int | None:
    """Wait (until the monotonic *deadline*, or *hurry*) for every group in *groups* to have committed up to the end
    of *topics*; returns the last lag seen."""
    lag: int | None = None
    consumers = group_consumers(bootstrap, groups)
    try:
        while time.monotonic() < deadline and not hurry():
            lag = group_lag(consumers, topics, timeout=max(0.3, min(1.0, deadline - time.monotonic())))
            if lag == 0:
                return 0
            time.sleep(0.1)
        return lag
    finally:
        for consumer in consumers.values():
            consumer.close()
