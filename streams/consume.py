"""Reading a topic from the beginning up to its current end (high watermarks): for tests, tools and benchmarks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from infra.kafka_security import kafka_security


def consumer_config(bootstrap_servers: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": f"plietsch-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 16 * 1024 * 1024,
        "isolation.level": "read_committed",  # contract 6: never see what an aborted transaction wrote
        **kafka_security().librdkafka(),  # SASL/TLS from the environment (infra/kafka_security.py)
    }
    cfg.update(extra)
    return cfg


def take_ready(consumer: Consumer, n: int, timeout: float) -> list[Any]:
    """Up to *n* messages: waits at most *timeout* seconds for the first, then takes what is fetched already, without
    waiting. ``Consumer.consume(n, timeout)`` waits the whole *timeout* unless *n* messages come (librdkafka's batch
    consume; measured: a message produced 50 ms into ``consume(1000, 1.0)`` came back after 1,001 ms), so at a low rate
    every message waited up to the timeout; a reader on the live path uses this instead."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(n - 1, 0)] if n > 1 else [first]


def drain(bootstrap_servers: str, topic: str, timeout: float = 30.0, batch: int = 1000,
          missing_ok: bool = False, idle_s: float = 1.0) -> Iterator[Any]:
    """Yield every message of *topic* from the start up to its end (assigned, no group join).

    The end is the high watermark, and then no new message for *idle_s*: Tansu 0.6 reports the high watermark as the
    base offset of the last record batch plus one, so records inside the last batch lie beyond it. With *idle_s* 0 it
    ends at the watermarks (for a topic that never falls quiet, such as a running scenario's progress)."""
    consumer = Consumer(consumer_config(bootstrap_servers, **{"enable.partition.eof": True}))
    try:
        md = consumer.list_topics(topic, timeout=10)
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None:
            if missing_ok:
                return
            raise KafkaException(f"topic {topic!r} not found")
        ends: dict[int, int] = {}
        for p in tmd.partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                ends[p] = hi
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        idle_since = time.monotonic()
        while time.monotonic() < deadline:
            msgs = consumer.consume(batch, 0.2)
            now = time.monotonic()
            if not msgs:
                if not ends and now - idle_since >= idle_s:
                    return
                continue
            idle_since = now
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    # a transactional topic ends with a control record that is never delivered: the end-of-partition
                    # event says that the reader is past it
                    part = msg.partition()
                    if err.code() == KafkaError._PARTITION_EOF and part is not None and part in ends \
                            and int(msg.offset() or 0) >= ends[part]:
                        del ends[part]
                    continue
                yield msg
                p = msg.partition()
                if p in ends and int(msg.offset() or 0) + 1 >= ends[p]:
                    del ends[p]
            if not ends and idle_s <= 0:  # a topic written all the time: up to the watermarks of the start is enough
                return
        raise TimeoutError(f"{topic}: not read to its end within {timeout:.0f} s (partitions behind: {sorted(ends)})")
    finally:
        consumer.close()
