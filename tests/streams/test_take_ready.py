"""``streams.consume.take_ready``: the live path's reads do not wait out their timeout when a message is there
(``Consumer.consume(n, timeout)`` does: librdkafka's batch consume returns only with *n* messages or at the timeout)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

from streams.consume import consumer_config, take_ready


def _topic_with(kafka: str, values: list[bytes]) -> str:
    topic = f"take-ready-{uuid.uuid4().hex[:8]}"
    p = Producer({"bootstrap.servers": kafka})
    for v in values:
        p.produce(topic, v, partition=0)
    assert p.flush(30) == 0
    return topic


def test_take_ready_gives_what_is_there_without_waiting_for_a_full_batch(kafka: str) -> None:
    topic = _topic_with(kafka, [f"m{i}".encode() for i in range(5)])
    c = Consumer(consumer_config(kafka))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got: list[bytes] = []
        started = time.monotonic()
        while len(got) < 5:
            got += [m.value() for m in take_ready(c, 1000, 20.0) if m.error() is None]
            assert time.monotonic() - started < 15, "take_ready waited out its 20 s timeout with messages there"
        assert got == [f"m{i}".encode() for i in range(5)]  # in order, none twice
        started = time.monotonic()
        assert take_ready(c, 1000, 0.3) == []  # nothing more: empty after the timeout
        assert time.monotonic() - started >= 0.25
    finally:
        c.close()


def test_take_ready_takes_at_most_n(kafka: str) -> None:
    topic = _topic_with(kafka, [b"a", b"b", b"c"])
    c = Consumer(consumer_config(kafka))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        seen: list[bytes] = []
        for _ in range(100):
            batch = [m for m in take_ready(c, 2, 5.0) if m.error() is None]
            assert len(batch) <= 2
            seen += [m.value() for m in batch]
            if len(seen) == 3:
                break
        assert seen == [b"a", b"b", b"c"]
        assert take_ready(c, 1, 0.2) == []
    finally:
        c.close()
