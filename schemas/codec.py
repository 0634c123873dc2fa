"""The Avro codec on fastavro: single-object encoding (0xC3 0x01 + CRC-64-AVRO fingerprint) resolved against the
schemas in ``schemas/avro`` and every published version in ``schemas/published``, plus the batch framing.

Batch framing: one Kafka record may carry many datums, each length-prefixed (zig-zag varint, as Avro writes longs),
marked by the header ``content-type: application/vnd.plietsch.batch``. A broken datum in a batch is isolated: its
neighbours still decode. Producers batch per partition so that stream processors pay their per-record cost rarely.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.flat import compile_writer

SCHEMA_DIR = Path(__file__).resolve().parent / "avro"
PUBLISHED_DIR = Path(__file__).resolve().parent / "published"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
BATCH_CONTENT_TYPE = b"application/vnd.plietsch.batch"
CONTENT_TYPE_HEADER = "content-type"
_BUFFER_REPR = re.compile(r" ?(?:from )?<_io\.BytesIO object at 0x[0-9a-f]+>")


class CodecError(ValueError):
    """A datum could not be decoded; ``kind`` is 'decode' or 'schema'."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    version: str
    raw: dict[str, Any]
    parsed: Any
    fingerprint: bytes


def _fingerprint(raw: dict[str, Any]) -> bytes:
    canonical = to_parsing_canonical_form(raw)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def load_schema_file(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CodecError("schema", f"{path}: not valid JSON ({exc})") from exc
    if raw.get("type") != "record" or "name" not in raw:
        raise CodecError("schema", f"{path}: expected an Avro record schema with a name")
    return dict(raw)


class SchemaStore:
    """Current schemas by record name, and every known writer schema by fingerprint."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR, published_dir: Path = PUBLISHED_DIR) -> None:
        self.current: dict[str, SchemaVersion] = {}
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            raw = load_schema_file(path)
            sv = SchemaVersion(raw["name"], "current", raw, parse_schema(raw), _fingerprint(raw))
            self.current[sv.name] = sv
            self.by_fingerprint[sv.fingerprint] = sv
        if published_dir.is_dir():
            for path in sorted(published_dir.glob("*/v*.avsc")):
                raw = load_schema_file(path)
                fp = _fingerprint(raw)
                if fp not in self.by_fingerprint:
                    self.by_fingerprint[fp] = SchemaVersion(raw["name"], path.stem, raw, parse_schema(raw), fp)
        if not self.current:
            raise CodecError("schema", f"no .avsc files found in {schema_dir}")

    def schema(self, name: str) -> SchemaVersion:
        try:
            return self.current[name]
        except KeyError:
            raise CodecError("schema", f"unknown schema {name!r}; known: {', '.join(sorted(self.current))}") from None


class SingleObjectCodec:
    """Encode and decode Avro single-object datums. Writer schemas are parsed once."""

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.store = store or SchemaStore()
        self._headers = {n: SINGLE_OBJECT_MAGIC + sv.fingerprint for n, sv in self.store.current.items()}
        self._flat = {n: compile_writer(sv.raw, self._headers[n]) for n, sv in self.store.current.items()}
        self._reader_for: dict[bytes, tuple[str, Any, Any]] = {}
        for fp, sv in self.store.by_fingerprint.items():
            reader = self.store.current.get(sv.name)
            reader_parsed = None if reader is None or reader.fingerprint == fp else reader.parsed
            self._reader_for[fp] = (sv.name, sv.parsed, reader_parsed)

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        flat = self._flat.get(name)
        if flat is not None:
            try:
                return flat(record)
            except (TypeError, AttributeError, KeyError, ValueError, OverflowError, struct.error):
                pass  # fastavro writes it (it is more lenient in places) or says what is wrong
        sv = self.store.schema(name)
        buf = io.BytesIO()
        buf.write(self._headers[name])
        try:
            schemaless_writer(buf, sv.parsed, record)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:  # a long beyond 64 bits: OverflowError
            raise CodecError("schema", f"record does not fit schema {name}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if len(data) < 10:
            raise CodecError("decode", f"datum of {len(data)} bytes is too short for an Avro single-object header (10 bytes)")
        if data[:2] != SINGLE_OBJECT_MAGIC:
            raise CodecError("decode", f"not Avro single-object encoding: starts with {data[:2].hex()} instead of c301")
        fp = data[2:10]
        entry = self._reader_for.get(fp)
        if entry is None:
            raise CodecError(
                "schema", f"unknown writer schema fingerprint {fp.hex()}: not a schema in schemas/avro or schemas/published"
            )
        name, writer, reader = entry
        stream = io.BytesIO(data)
        stream.seek(10)
        try:
            record = schemaless_reader(stream, writer, reader)
        except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
            detail = _BUFFER_REPR.sub("", str(exc))  # fastavro names its buffer object: an address, no help to anyone
            raise CodecError("decode", f"{name}: datum of {len(data)} bytes does not decode ({type(exc).__name__}: "
                                       f"{detail}); the producer wrote something else than this schema") from exc
        if stream.tell() != len(data):
            raise CodecError("decode", f"{name}: {len(data) - stream.tell()} trailing bytes after the datum")
        return name, record  # type: ignore[return-value]


def _write_varint(out: bytearray, n: int) -> None:
    z = (n << 1) ^ (n >> 63)
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def frame_batch(datums: Iterable[bytes]) -> bytes:
    """Concatenate datums, each prefixed by its length."""
    out = bytearray()
    for d in datums:
        _write_varint(out, len(d))
        out += d
    return bytes(out)


def iter_batch(data: bytes) -> Iterator[bytes]:
    """Split a framed batch back into datums. Raises CodecError on a broken frame."""
    yield from split_batch(data)


def split_batch(data: bytes) -> list[bytes]:
    """The datums of a framed batch, as a list. Raises CodecError on a broken frame. Length prefixes of one or two
    bytes (datums under 8 KiB, all of the project's) take a short path; longer ones the general varint loop."""
    out: list[bytes] = []
    append = out.append
    pos, end = 0, len(data)
    while pos < end:
        b = data[pos]
        if b < 0x80:
            z = b
            pos += 1
        elif pos + 1 < end and data[pos + 1] < 0x80:
            z = (b & 0x7F) | (data[pos + 1] << 7)
            pos += 2
        else:
            shift = z = 0
            while True:
                if pos >= end:
                    raise CodecError("decode", f"batch frame truncated inside a length prefix at byte {pos}")
                b = data[pos]
                pos += 1
                z |= (b & 0x7F) << shift
                if not b & 0x80:
                    break
                shift += 7
                if shift > 63:
                    raise CodecError("decode", "batch frame has an overlong length prefix")
        n = (z >> 1) ^ -(z & 1)
        if n < 0 or pos + n > end:
            raise CodecError("decode", f"batch frame declares {n} bytes at byte {pos}, only {end - pos} remain")
        append(data[pos : pos + n])
        pos += n
    return out


def is_batch(headers: Any) -> bool:
    """True when Kafka record headers (a list of pairs or a dict) mark a batch record."""
    if not headers:
        return False
    pairs = headers.items() if isinstance(headers, dict) else headers
    return any(k == CONTENT_TYPE_HEADER and v == BATCH_CONTENT_TYPE for k, v in pairs)


