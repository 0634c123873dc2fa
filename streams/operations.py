"""Operator tools on topics: read the newest records of a topic as JSON, sum up the dead letters by reason, and replay a
dead letter whose cause has been fixed (``plietsch topics tail``, ``plietsch dead-letters``, ``plietsch dead-letters
replay``). They speak the Kafka protocol only, so they work against the embedded broker and any Kafka cluster alike.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from schemas.codec import CodecError, SingleObjectCodec, is_batch, iter_batch
from streams.catalogue import DEAD_LETTERS
from streams.consume import consumer_config, drain
from streams.publisher import producer_config

REPLAY_HEADER = "plietsch-dead-letter-id"  # a replayed record names the dead letter it came from


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def describe(codec: SingleObjectCodec, msg: Any) -> dict[str, Any]:
    """One Kafka record as a JSON-able dict: where it is, its key, and each datum decoded (or why it does not)."""
    value = msg.value()
    out: dict[str, Any] = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                           "key": _jsonable(msg.key()) if msg.key() is not None else None}
    if value is None:
        out["value"] = None
        return out
    try:
        datums = list(iter_batch(value)) if is_batch(msg.headers()) else [value]
    except CodecError as exc:
        out["error"] = f"batch frame broken: {exc}"
        return out
    decoded = []
    for d in datums:
        try:
            name, record = codec.decode(d)
            decoded.append({"type": name, **_jsonable(record)})
        except CodecError as exc:
            decoded.append({"error": str(exc), "bytes": len(d)})
    out["datums"] = decoded
    return out


def tail(bootstrap: str, topic: str, n: int = 20, timeout: float = 10.0) -> Iterator[dict[str, Any]]:
    """The newest *n* records of each partition of *topic* (read_committed), decoded, in offset order per partition."""
    codec = SingleObjectCodec()
    consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True}))
    try:
        md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None:
            raise KafkaException(f"topic {topic!r} does not exist; 'plietsch topics list' shows the catalogue")
        starts, ends = [], {}
        for p in md.partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if hi > lo:
                starts.append(TopicPartition(topic, p, max(lo, hi - n)))
                ends[p] = hi
        if not starts:
            return
        consumer.assign(starts)
        while ends:
            msg = consumer.poll(timeout)
            if msg is None:
                return  # Tansu's high watermark can lie inside the last batch: nothing more came
            if msg.error() is not None:  # the partition's end (a transactional topic ends in a control record)
                ends.pop(msg.partition(), None)
                continue
            yield describe(codec, msg)
            if int(msg.offset() or 0) + 1 >= ends.get(int(msg.partition() or 0), 0):
                ends.pop(msg.partition(), None)
    finally:
        consumer.close()


@dataclass(frozen=True)
class DeadLetter:
    dead_letter_id: str
    original_topic: str
    original_partition: int
    original_offset: int
    original_key: bytes | None
    original_value: bytes
    batch_index: int
    error_type: str
    reason: str
    failed_at: str
    processor: str


def dead_letters(bootstrap: str, timeout: float = 60.0, foreign: list[str] | None = None) -> list[DeadLetter]:
    """Every dead letter on the dead-letter topic, oldest first. A record there that is not a dead letter (anyone can
    produce to the topic) is skipped; with *foreign*, a line per such record says where it is and why it is skipped."""
    codec = SingleObjectCodec()
    out = []
    for msg in drain(bootstrap, DEAD_LETTERS.name, timeout=timeout, missing_ok=True):
        if msg.value() is None:
            continue
        letter = parse_dead_letter(codec, msg.value())
        if isinstance(letter, DeadLetter):
            out.append(letter)
        elif foreign is not None:
            foreign.append(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: {letter}")
    return out


def parse_dead_letter(codec: SingleObjectCodec, value: bytes) -> DeadLetter | str:
    """The dead letter in a record's value, or why it holds none: undecodable bytes, another event type (a valid
    reading is no dead letter: replaying it would send None to topic None), or a DeadLettered that breaks its rules."""
    from pydantic import ValidationError

    from twin.events import DeadLettered

    try:
        name, rec = codec.decode(value)
    except CodecError as exc:
        return f"not a dead letter: {exc}"
    if name != DeadLettered.__name__:
        return f"not a dead letter: a {name} record"
    try:
        d = DeadLettered.model_validate(rec)
    except ValidationError as exc:
        return f"a DeadLettered that breaks its rules: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
    return DeadLetter(**{f: getattr(d, f) for f in DeadLetter.__dataclass_fields__})


def summary(letters: list[DeadLetter]) -> list[tuple[str, str, str, int, str]]:
    """(original topic, error type, processor, count, newest reason) per kind of dead letter, most frequent first."""
    counts: Counter[tuple[str, str, str]] = Counter()
    newest: dict[tuple[str, str, str], str] = {}
    for d in letters:
        k = (d.original_topic, d.error_type, d.processor)
        counts[k] += 1
        newest[k] = d.reason
    return [(*k, n, newest[k]) for k, n in counts.most_common()]


class ReplayError(ValueError):
    pass


def replayed_ids(bootstrap: str, topic: str, timeout: float = 60.0) -> set[str]:
    """The dead letters already replayed into *topic* (their id in the ``plietsch-dead-letter-id`` header)."""
    out = set()
    for msg in drain(bootstrap, topic, timeout=timeout, missing_ok=True):
        for k, v in msg.headers() or []:
            if k == REPLAY_HEADER and v:
                out.add(v.decode())
    return out


def replay(bootstrap: str, letters: list[DeadLetter], ids: list[str], timeout: float = 60.0) -> list[DeadLetter]:
    """Produce the original bytes of the dead letters *ids* to their original topic again (a datum of a batch as a
    record of its own), each once: a dead letter already replayed is refused. Returns what was replayed."""
    by_id = {d.dead_letter_id: d for d in letters}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise ReplayError(f"no dead letter with id {', '.join(unknown)}; 'plietsch dead-letters --list' shows the ids")
    chosen = [by_id[i] for i in ids]
    done: set[str] = set()
    for topic in {d.original_topic for d in chosen}:
        done |= replayed_ids(bootstrap, topic, timeout)
    again = [d.dead_letter_id for d in chosen if d.dead_letter_id in done]
    if again:
        raise ReplayError(f"dead letter(s) {', '.join(again)} were replayed already; replaying again would count "
                          "them twice")
    prod = Producer(producer_config(bootstrap, **{"enable.idempotence": True}))
    for d in chosen:
        prod.produce(d.original_topic, key=d.original_key, value=d.original_value,
                     headers=[(REPLAY_HEADER, d.dead_letter_id.encode())])
    left = prod.flush(timeout)
    if left:
        raise ReplayError(f"{left} record(s) not delivered within {timeout:.0f} s; nothing is lost, run the replay again")
    return chosen


def as_json(d: DeadLetter) -> str:
    return json.dumps(_jsonable({f: getattr(d, f) for f in DeadLetter.__dataclass_fields__}), ensure_ascii=False)
