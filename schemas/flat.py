"""A compiled Avro writer for flat records: every field a string, bytes, long, int, double, float or boolean, or a union
of null and one of these. All of the project's event schemas are flat.

fastavro's ``schemaless_writer`` walks the parsed schema on every call (about 5 us for a record of ten strings on this
machine); the worker writes one ``TwinEntityUpdated`` per changed entity and one ``AggregateUpdated`` per changed
partial, thousands per batch. The writer here is generated once per schema (like ``dataclasses`` generates
``__init__``) and writes the same bytes (property test ``tests/schemas/test_flat_writer.py`` against fastavro). Anything
it cannot write (a missing field, a value of the wrong type, a long beyond 64 bits) raises, and the codec then asks
fastavro, which either writes it (fastavro is more lenient in places) or says what is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

_PRIMITIVES = {"string", "bytes", "long", "int", "double", "float", "boolean"}
_SMALL = [bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7]) for n in range(1 << 14)]  # varints < 16384
_LIMIT = 1 << 63


def varint(n: int) -> bytes:
    """An unsigned LEB128 varint (Avro's encoding of an already zigzagged long)."""
    if n < 16384:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def long_(v: int) -> bytes:
    if type(v) is not int and type(v) is not bool:
        raise TypeError(f"not an int: {v!r}")
    if not -_LIMIT <= v < _LIMIT:
        raise OverflowError(f"{v} does not fit a 64-bit long")
    return varint((v << 1) ^ (v >> 63))


def utf8(v: str) -> bytes:
    b = v.encode()  # not a str: AttributeError; a lone surrogate: UnicodeEncodeError
    n = len(b) << 1
    return (_SMALL[n] if n < 16384 else varint(n)) + b


def raw(v: bytes) -> bytes:
    if not isinstance(v, (bytes, bytearray, memoryview)):
        raise TypeError(f"not bytes: {type(v).__name__}")
    b = bytes(v)
    return varint(len(b) << 1) + b


_DOUBLE = struct.Struct("<d").pack
_FLOAT = struct.Struct("<f").pack


def double(v: float) -> bytes:
    if type(v) is not float and type(v) is not int:
        raise TypeError(f"not a number: {v!r}")
    return _DOUBLE(v)


def float_(v: float) -> bytes:
    if type(v) is not float and type(v) is not int:
        raise TypeError(f"not a number: {v!r}")
    return _FLOAT(v)


def boolean(v: bool) -> bytes:
    if type(v) is not bool:
        raise TypeError(f"not a boolean: {v!r}")
    return b"\x01" if v else b"\x00"


_WRITERS: dict[str, Callable[[Any], bytes]] = {"string": utf8, "bytes": raw, "long": long_, "int": long_,
                                               "double": double, "float": float_, "boolean": boolean}


def _kind(t: Any) -> tuple[str, int | None] | None:
    """(primitive, position of null in a two-branch union or None); None when the type is not flat."""
    if isinstance(t, dict) and set(t) <= {"type", "logicalType"} and "logicalType" not in t:
        t = t.get("type")
    if isinstance(t, str):
        return (t, None) if t in _PRIMITIVES else None
    if isinstance(t, list) and len(t) == 2 and "null" in t:
        other = t[1 - t.index("null")]
        if isinstance(other, str) and other in _PRIMITIVES:
            return other, t.index("null")
    return None


def compile_writer(raw_schema: dict[str, Any], header: bytes = b"") -> Callable[[dict[str, Any]], bytes] | None:
    """A function writing *header* + the Avro binary encoding of a record of *raw_schema*, or None when the schema is
    not flat (fastavro writes those)."""
    if raw_schema.get("type") != "record":
        return None
    kinds = [(f["name"], _kind(f["type"])) for f in raw_schema.get("fields", [])]
    if any(k is None for _, k in kinds):
        return None
    lines = ["def write(r):", "    return b''.join(("]
    names: dict[str, Any] = {"HEADER": header}
    lines.append("        HEADER,")
    for i, (name, kind) in enumerate(kinds):
        assert kind is not None  # noqa: S101 - checked above
        prim, null_at = kind
        w = f"w{i}"
        names[w] = _WRITERS[prim]
        if null_at is None:
            lines.append(f"        {w}(r[{name!r}]),")
        else:  # the union's branch index as a zigzagged long: 0 -> b"\x00", 1 -> b"\x02"
            null_b, val_b = (b"\x00", b"\x02") if null_at == 0 else (b"\x02", b"\x00")
            lines.append(f"        ({null_b!r} if r.get({name!r}) is None else {val_b!r} + {w}(r[{name!r}])),")
    lines.append("    ))")
    exec("\n".join(lines), names)  # noqa: S102 - generated from the schema's field names only (repr-quoted)
    return names["write"]  # type: ignore[no-any-return]
