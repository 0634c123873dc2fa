"""Event (de)serialisation for Kafka records.

Without a Schema Registry: Avro single-object encoding resolved against ``schemas/`` (see ``schemas.codec``).
With ``SCHEMA_REGISTRY_URL``: Confluent wire format (magic 0, 4-byte schema id) through
``confluent_kafka.schema_registry``, subjects named after the record (RecordNameStrategy), since some topics carry
several event types. Both decode into the same (record name, dict).
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any, Protocol

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import BaseModel

from schemas.codec import CodecError, SchemaStore, SingleObjectCodec
from twin.avro import NAMESPACE


class Codec(Protocol):
    def encode(self, name: str, record: dict[str, Any]) -> bytes: ...

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]: ...


class RegistryCodec:
    """Confluent wire format; schemas registered once per record name and cached by id."""

    def __init__(self, url: str, store: SchemaStore | None = None) -> None:
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url})
        self._schema_cls = Schema
        self.store = store or SchemaStore()
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, tuple[str, Any, Any]] = {}

    def _register(self, name: str) -> int:
        if name not in self._ids:
            sv = self.store.schema(name)
            self._ids[name] = self._client.register_schema(f"{NAMESPACE}.{name}", self._schema_cls(json.dumps(sv.raw), "AVRO"))
        return self._ids[name]

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        sid = self._register(name)
        buf = io.BytesIO()
        buf.write(struct.pack(">bI", 0, sid))
        try:
            schemaless_writer(buf, self.store.schema(name).parsed, record)
        except (ValueError, TypeError, KeyError) as exc:
            raise CodecError("schema", f"record does not fit schema {name}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if len(data) < 5 or data[0] != 0:
            raise CodecError("decode", "not Confluent wire format (magic byte 0 and a 4-byte schema id expected)")
        (sid,) = struct.unpack(">I", data[1:5])
        entry = self._by_id.get(sid)
        if entry is None:
            try:
                schema = self._client.get_schema(sid)
            except Exception as exc:
                raise CodecError("schema", f"schema id {sid} not found in the registry: {exc}") from exc
            raw = json.loads(schema.schema_str or "{}")
            name = raw["name"]
            current = self.store.current.get(name)
            entry = (name, parse_schema(raw), current.parsed if current else None)
            self._by_id[sid] = entry
        name, writer, reader = entry
        stream = io.BytesIO(data)
        stream.seek(5)
        try:
            record = schemaless_reader(stream, writer, reader)
        except Exception as exc:
            raise CodecError("decode", f"{name}: datum does not decode ({type(exc).__name__}: {exc})") from exc
        return name, record  # type: ignore[return-value]


def make_codec(schema_registry_url: str = "") -> Codec:
    return RegistryCodec(schema_registry_url) if schema_registry_url else SingleObjectCodec()


def to_record(event: BaseModel) -> dict[str, Any]:
    """The Avro-ready dict of an event: times as RFC 3339 strings (the models' serializers), bytes kept as bytes."""
    return event.model_dump(mode="python")


def encode_event(codec: Codec, event: BaseModel) -> bytes:
    return codec.encode(type(event).__name__, to_record(event))
