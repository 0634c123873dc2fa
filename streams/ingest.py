"""Decoding and validation of incoming records, shared by every agent: bytes in, valid events and dead letters out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from schemas.codec import CodecError, is_batch, iter_batch
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
                 known_entities: set[str] | None = None, entity_kinds: dict[str, str] | None = None) -> None:
        self.codec = codec
        self.processor = processor
        self.expected = {topic: frozenset(names) for topic, names in expected.items()}
        self.known_entities = known_entities
        self.entity_kinds = entity_kinds or {}

    def decode(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
               headers: Iterable[tuple[str, bytes | None]] | None) -> Decoded:
        out = Decoded()
        if value is None:
            out.dead.append(self.dead_letter(topic, partition, offset, key, b"", -1, "decode", "record has no value (tombstone)"))
            return out
        if is_batch(headers):
            try:
                datums = list(iter_batch(value))
            except CodecError as exc:
                out.dead.append(self.dead_letter(topic, partition, offset, key, value, -1, exc.kind, f"batch frame broken: {exc}"))
                return out
            for i, datum in enumerate(datums):
                self._one(out, topic, partition, offset, key, datum, i)
        else:
            self._one(out, topic, partition, offset, key, value, -1)
        return out

    def _one(self, out: Decoded, topic: str, partition: int, offset: int, key: bytes | None, datum: bytes, index: int) -> None:
        try:
            name, record = self.codec.decode(datum)
        except CodecError as exc:
            out.dead.append(self.dead_letter(topic, partition, offset, key, datum, index, exc.kind, str(exc)))
            return
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
        out.events.append(event)

    def dead_letter(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes, index: int,
              kind: str, reason: str) -> DeadLettered:
        return DeadLettered(original_topic=topic, original_partition=partition, original_offset=offset,
                            original_key=key, original_value=value, batch_index=index, error_type=kind,
                            reason=reason, processor=self.processor)

