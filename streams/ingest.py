"""Decoding and validation of incoming records, shared by every agent: bytes in, valid events and dead letters out."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from schemas.codec import CodecError, is_batch, split_batch
from streams.fastpath import FastCheck, compile_check
from streams.serde import Codec
from twin.events import BY_NAME, DeadLettered, Event, Reading


@dataclass
class Decoded:
    events: list[Event] = field(default_factory=list)
    dead: list[DeadLettered] = field(default_factory=list)


def _validation_reason(name: str, exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(map(str, e["loc"])) or "record"
        parts.append(f"{loc}: {e['msg']} (got {e.get('input')!r})"[:300])
    return f"{name} failed validation: " + "; ".join(parts)


class RecordDecoder:
    """Turns a Kafka record (single datum or batch) into events; anything bad becomes a dead letter with a reason."""

    def __init__(self, codec: Codec, processor: str, expected: dict[str, Sequence[str]],
                 known_entities: set[str] | None = None, entity_kinds: dict[str, str] | None = None,
                 home: Mapping[str, tuple[int, Mapping[str, int]]] | None = None) -> None:
        """*home*: per topic, its partition count and the partition each entity's records belong on
        (``streams.publisher.homes``); a datum of such an entity on another partition is a dead letter, since each
        partition keeps its own state and a sensor split over two would have two."""
        self.codec = codec
        self.processor = processor
        self.expected = {topic: frozenset(names) for topic, names in expected.items()}
        self.known_entities = known_entities
        self.entity_kinds = entity_kinds or {}
        self.home = home or None

    def decode(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
               headers: Iterable[tuple[str, bytes | None]] | None) -> Decoded:
        out = Decoded()
        datums = self._split(topic, partition, offset, key, value, headers)
        if isinstance(datums, DeadLettered):
            out.dead.append(datums)
            return out
        if is_batch(headers):
            for i, datum in enumerate(datums):
                self._one(out, topic, partition, offset, key, datum, i)
        else:
            self._one(out, topic, partition, offset, key, datums[0], -1)
        return out

    def _split(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
               headers: Iterable[tuple[str, bytes | None]] | None) -> list[bytes] | DeadLettered:
        """The datums of a record (one, or a batch's), or the dead letter for a tombstone or a broken batch frame."""
        if value is None:
            return self.dead_letter(topic, partition, offset, key, b"", -1, "decode", "record has no value (tombstone)")
        if not is_batch(headers):
            return [value]
        try:
            return split_batch(value)
        except CodecError as exc:
            return self.dead_letter(topic, partition, offset, key, value, -1, exc.kind, f"batch frame broken: {exc}")

    def _one(self, out: Decoded, topic: str, partition: int, offset: int, key: bytes | None, datum: bytes, index: int) -> None:
        try:
            name, record = self.codec.decode(datum)
        except CodecError as exc:
            out.dead.append(self.dead_letter(topic, partition, offset, key, datum, index, exc.kind, str(exc)))
            return
        self._validate(out, topic, partition, offset, key, datum, index, name, record)

    def _validate(self, out: Decoded, topic: str, partition: int, offset: int, key: bytes | None, datum: bytes, index: int,
                  name: str, record: dict[str, Any]) -> None:
        allowed = self.expected.get(topic)
        if allowed is not None and name not in allowed:
            out.dead.append(self.dead_letter(topic, partition, offset, key, datum, index, "schema",
                                       f"topic {topic} carries {', '.join(sorted(allowed))}, not {name}"))
            return
        model = BY_NAME.get(name)
        if model is None:
            out.dead.append(self.dead_letter(topic, partition, offset, key, datum, index, "schema", f"no event type {name}"))
            return
        try:
            event = model.model_validate(record)
        except ValidationError as exc:
            out.dead.append(self.dead_letter(topic, partition, offset, key, datum, index, "validation", _validation_reason(name, exc)))
            return
        except ValueError as exc:
            out.dead.append(self.dead_letter(topic, partition, offset, key, datum, index, "validation", f"{name}: {exc}"))
            return
        if not isinstance(event, Event):
            out.dead.append(self.dead_letter(topic, partition, offset, key, datum, index, "schema", f"{name} is not an entity event"))
            return
        if self.known_entities is not None and event.entity_id not in self.known_entities:
            out.dead.append(self.dead_letter(topic, partition, offset, key, datum, index, "unknown_entity",
                                       f"{event.entity_id} is not in the loaded region pack; add it to the pack's sensors"))
            return
        if isinstance(event, Reading):
            kind = self.entity_kinds.get(event.entity_id)
            if kind is not None and kind != event.sensor_kind:
                out.dead.append(self.dead_letter(topic, partition, offset, key, datum, index, "unknown_entity",
                                           f"{event.entity_id} is a {kind} sensor, not {event.sensor_kind}"))
                return
        if self.homeless(topic, partition, event.entity_id):
            n, home = self.home[topic]  # type: ignore[index]
            out.dead.append(self.dead_letter(
                topic, partition, offset, key, datum, index, "wrong_partition",
                f"{event.entity_id} belongs on partition {home[event.entity_id]} of {topic} (murmur2 of its id over {n} "
                f"partitions), not on partition {partition}: each partition keeps its own state, so an entity on two "
                "partitions would have two. Produce with the entity id as key and the murmur2 partitioner "
                "(confluent-kafka: 'partitioner': 'murmur2_random'; the Kafka Java client's default)"))
            return
        out.events.append(event)

    def homeless(self, topic: str, partition: int, entity_id: str) -> bool:
        """True when *entity_id* belongs on another partition of *topic* than *partition*."""
        if self.home is None:
            return False
        entry = self.home.get(topic)
        return entry is not None and entry[1].get(entity_id, partition) != partition

    def dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes, index: int,
              kind: str, reason: str) -> DeadLettered:
        # a stable id: the same bad datum gives the same dead letter id when its record is processed again
        did = str(uuid.uuid5(uuid.NAMESPACE_URL, f"plietsch-dead|{self.processor}|{topic}|{partition}|{offset}|{index}"))
        return DeadLettered(dead_letter_id=did, original_topic=topic, original_partition=partition, original_offset=offset,
                            original_key=key, original_value=value, batch_index=index, error_type=kind,
                            reason=reason, processor=self.processor)



# At most this many dead letters per Kafka record; beyond it the whole record is kept as one dead letter.
MAX_DEAD_PER_RECORD = 20


@dataclass
class Rows:
    """A record decoded for the hot path: light rows ``(record name, Avro dict, occurred_at)`` and dead letters."""

    rows: list[tuple[str, dict[str, Any], datetime]] = field(default_factory=list)
    dead: list[DeadLettered] = field(default_factory=list)
    datums: int = 0


class FastDecoder(RecordDecoder):
    """The hot path's decoder: no pydantic object per datum. Each datum is decoded by fastavro and checked by the
    check compiled from its pydantic model (``streams.fastpath``); only what that check cannot vouch for goes through
    ``model_validate``, which then decides, with its reason. Accepts and refuses exactly what ``decode`` does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._checks: dict[str, FastCheck | None] = {}

    def check_for(self, name: str) -> FastCheck | None:
        if name not in self._checks:
            model = BY_NAME.get(name)
            self._checks[name] = compile_check(model) if model is not None else None
        return self._checks[name]

    def rows(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
             headers: Iterable[tuple[str, bytes | None]] | None) -> Rows:
        out = Rows()
        datums = self.datums(out, topic, partition, offset, key, value, headers)
        if datums is None:
            return out
        single = len(datums) == 1 and not is_batch(headers)
        for i, datum in enumerate(datums):
            self.datum(out, topic, partition, offset, key, datum, -1 if single else i)
        self.cap(out, topic, partition, offset, key, value, len(datums))
        return out

    def datums(self, out: Rows, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
               headers: Iterable[tuple[str, bytes | None]] | None) -> list[bytes] | None:
        """The record's datums (counted in *out*), or None when the whole record is a dead letter (added to *out*)."""
        datums = self._split(topic, partition, offset, key, value, headers)
        if isinstance(datums, DeadLettered):
            out.dead.append(datums)
            return None
        if is_batch(headers) and any(not d for d in datums):
            out.dead.append(self.dead_letter(
                topic, partition, offset, key, value or b"", -1, "decode",
                f"batch frame broken: it declares an empty datum ({sum(1 for d in datums if not d)} of {len(datums)}); "
                "the whole record is kept here"))
            return None
        out.datums = len(datums)
        return datums

    def datum(self, out: Rows, topic: str, partition: int, offset: int, key: bytes | None, datum: bytes, index: int) -> None:
        """One datum: decoded and checked by the compiled check, or by pydantic when the check cannot vouch for it."""
        try:
            name, rec = self.codec.decode(datum)
        except CodecError as exc:
            out.dead.append(self.dead_letter(topic, partition, offset, key, datum, index, exc.kind, str(exc)))
            return
        check = self._checks.get(name) if name in self._checks else self.check_for(name)
        allowed = self.expected.get(topic)
        t = None
        if check is not None and (allowed is None or name in allowed):
            t = check(rec)
            if t is not None and self.known_entities is not None:
                eid = rec["entity_id"]
                kind = self.entity_kinds.get(eid)
                if eid not in self.known_entities or (kind is not None and kind != getattr(check.model, "sensor_kind", kind)):
                    t = None
            if t is not None and self.homeless(topic, partition, rec["entity_id"]):
                t = None  # the slow path says why
        if t is not None:
            out.rows.append((name, rec, t))
            return
        # the slow path decides, and says why
        one = Decoded()
        self._validate(one, topic, partition, offset, key, datum, index, name, rec)
        if one.dead:
            out.dead.extend(one.dead)
        else:
            event = one.events[0]
            rec = {k: getattr(event, k) for k in type(event).model_fields}
            rec["entity_id"] = str(event.entity_id)
            out.rows.append((name, rec, event.occurred_at))

    def cap(self, out: Rows, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, n: int) -> None:
        """More than MAX_DEAD_PER_RECORD bad datums: the whole record becomes one dead letter."""
        if len(out.dead) > MAX_DEAD_PER_RECORD:
            reasons = sorted({d.reason for d in out.dead})[:3]
            out.dead = [self.dead_letter(
                topic, partition, offset, key, value or b"", -1, out.dead[0].error_type,
                f"{len(out.dead)} of {n} datums of this record are bad (more than {MAX_DEAD_PER_RECORD}), so the "
                f"whole record is kept here; first reasons: {'; '.join(reasons)}")]
