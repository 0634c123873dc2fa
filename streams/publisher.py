"""Producing events. ``EventPublisher`` batches datums per (topic, partition) into one Kafka record, so that the
stream processors pay their per-record cost once per batch; ``send`` writes a plain single-datum record.

Partitions follow Kafka's default (murmur2 of the key), the same as the Java client and Faust, so a sensor's
readings land on one partition whether they come batched from us or one by one from another producer.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import Producer
from pydantic import BaseModel

from infra.kafka_security import kafka_security
from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, frame_batch
from streams.serde import Codec, encode_event


class PublishError(RuntimeError):
    pass


def partition_for(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


Homes = dict[str, tuple[int, dict[str, int]]]


def homes(entity_ids: Iterable[str], topics: dict[str, int]) -> Homes:
    """Per topic (name -> partition count): its partition count and, per entity id, the partition its records are keyed
    to (murmur2 of the id, as the Kafka Java client and ``EventPublisher`` partition)."""
    ids = [str(e) for e in entity_ids]
    by_count = {n: {e: partition_for(e.encode(), n) for e in ids} for n in set(topics.values())}
    return {topic: (n, by_count[n]) for topic, n in topics.items()}


def sensor_homes(sensor_ids: Iterable[str], partitions: int) -> Homes:
    """``homes`` on every sensor topic, each of *partitions* partitions (the worker's and the archive's setting)."""
    from streams.catalogue import SENSOR_TOPICS

    return homes(sensor_ids, {t.name: partitions for t in SENSOR_TOPICS.values()})


def municipal_homes(entity_ids: Iterable[str]) -> Homes:
    """``homes`` on every municipal topic, with the catalogue's partition counts (the topics are made with them)."""
    from streams.catalogue import MUNICIPAL_TOPICS

    return homes(entity_ids, {t.name: t.partitions for t in MUNICIPAL_TOPICS.values()})


def producer_config(bootstrap_servers: str, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "compression.type": "lz4",
        "enable.idempotence": True,
        "message.max.bytes": 4_000_000,
        "queue.buffering.max.messages": 500_000,
        **kafka_security().librdkafka(),  # SASL/TLS from the environment (infra/kafka_security.py)
    }
    cfg.update(extra)
    return cfg


class EventPublisher:
    def __init__(self, bootstrap_servers: str, codec: Codec, *, linger_ms: int = 20, max_datums: int = 2000,
                 producer: Producer | None = None, extra_headers: list[tuple[str, bytes]] | None = None) -> None:
        self.codec = codec
        self.extra_headers = list(extra_headers or [])
        self.producer = producer or Producer(producer_config(bootstrap_servers))
        self.linger_s = linger_ms / 1000.0
        self.max_datums = max_datums
        self._partitions: dict[str, int] = {}
        self._part_cache: dict[tuple[str, str], int] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        self._oldest: dict[tuple[str, int], float] = {}
        self._errors: list[str] = []
        self.sent_records = 0
        self.sent_datums = 0

    def partitions(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            md = self.producer.list_topics(topic, timeout=10)
            tmd = md.topics.get(topic)
            if tmd is None or tmd.error is not None or not tmd.partitions:
                raise PublishError(f"topic {topic!r} does not exist; run 'plietsch topics create' first")
            n = self._partitions[topic] = len(tmd.partitions)
        return n

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    def _partition(self, topic: str, key: str) -> int:
        pkey = (topic, key)
        part = self._part_cache.get(pkey)
        if part is None:
            part = self._part_cache[pkey] = partition_for(key.encode(), self.partitions(topic))
        return part

    def add(self, topic: str, key: str, event: BaseModel) -> None:
        """Queue an event for a batch record on the key's partition."""
        slot = (topic, self._partition(topic, key))
        batch = self._pending[slot]
        if not batch:
            self._oldest[slot] = time.monotonic()
        batch.append(encode_event(self.codec, event))
        if len(batch) >= self.max_datums:
            self._flush_slot(slot)

    def send(self, topic: str, key: str, event: BaseModel) -> None:
        """Produce one event as its own record, keyed by *key*, after what is queued for its partition (order per key holds)."""
        part = self._partition(topic, key)
        self._flush_slot((topic, part))
        self._produce(topic=topic, partition=part, key=key.encode(), value=encode_event(self.codec, event))
        self.sent_datums += 1

    def send_raw(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        self._produce(topic=topic, key=key, value=value, headers=headers or [])

    def _produce(self, **kwargs: Any) -> None:
        if self.extra_headers:
            kwargs["headers"] = [*(kwargs.get("headers") or []), *self.extra_headers]
        while True:
            try:
                self.producer.produce(on_delivery=self._on_delivery, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)
        self.sent_records += 1

    def _flush_slot(self, slot: tuple[str, int]) -> None:
        datums = self._pending.pop(slot, [])
        self._oldest.pop(slot, None)
        if not datums:
            return
        topic, part = slot
        self._produce(topic=topic, partition=part, value=frame_batch(datums),
                      headers=[(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE), ("plietsch-count", str(len(datums)).encode())])
        self.sent_datums += len(datums)

    def tick(self) -> None:
        """Send batches older than the linger time."""
        now = time.monotonic()
        for slot in [s for s, t in self._oldest.items() if now - t >= self.linger_s]:
            self._flush_slot(slot)
        self.producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        for slot in list(self._pending):
            self._flush_slot(slot)
        remaining = self.producer.flush(timeout)
        if remaining:
            raise PublishError(f"{remaining} record(s) not delivered within {timeout:.0f} s; is the broker reachable?")
        if self._errors:
            errors, self._errors = self._errors, []
            raise PublishError(f"{len(errors)} record(s) failed: " + "; ".join(errors[:5]))


