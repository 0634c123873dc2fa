"""The compiled flat writer (``schemas.flat``) writes exactly fastavro's bytes for every current schema, and a record
that does not fit still gets fastavro's verdict (a ``CodecError`` naming the schema)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import SINGLE_OBJECT_MAGIC, CodecError, SingleObjectCodec
from schemas.flat import _kind, compile_writer

CODEC = SingleObjectCodec()
NAMES = sorted(CODEC.store.current)

_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=300) | st.text(alphabet="äöüßø€🌊", max_size=9000),  # long ones need 3-byte varints
    "bytes": st.binary(max_size=300),
    "long": st.integers(-(2**63), 2**63 - 1) | st.integers(-200, 200),
    "int": st.integers(-(2**31), 2**31 - 1),
    "double": st.floats(allow_nan=False) | st.integers(-(2**53), 2**53),
    "float": st.floats(width=32, allow_nan=False),
    "boolean": st.booleans(),
}


def records(name: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = {}
    for f in CODEC.store.current[name].raw["fields"]:
        kind = _kind(f["type"])
        assert kind is not None, f"{name}.{f['name']} is not flat"
        prim, null_at = kind
        fields[f["name"]] = _VALUES[prim] if null_at is None else st.none() | _VALUES[prim]
    return st.fixed_dictionaries(fields)


def test_every_current_schema_is_flat() -> None:
    """The worker's outputs never fall back to fastavro because a schema grew a nested type unnoticed."""
    assert [n for n in NAMES if compile_writer(CODEC.store.current[n].raw) is None] == []


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_flat_writer_writes_fastavros_bytes(name: str, data: st.DataObject) -> None:
    rec = data.draw(records(name))
    sv = CODEC.store.current[name]
    buf = io.BytesIO()
    schemaless_writer(buf, sv.parsed, rec)
    expected = SINGLE_OBJECT_MAGIC + sv.fingerprint + buf.getvalue()
    flat = compile_writer(sv.raw, SINGLE_OBJECT_MAGIC + sv.fingerprint)
    assert flat is not None
    assert flat(rec) == expected
    assert CODEC.encode(name, rec) == expected
    assert CODEC.decode(expected)[1] == rec


def test_a_record_that_does_not_fit_gets_fastavros_verdict() -> None:
    good = {"event_id": "e", "entity_id": "kiel:_:road:x", "region": "kiel", "occurred_at": "2026-11-01T00:00:00+00:00",
            "source": "s", "entity_type": "road", "revision": 3, "state_json": "{}", "cause_event_id": "c"}
    assert CODEC.decode(CODEC.encode("TwinEntityUpdated", good))[1] == good
    for bad in ({**good, "revision": "three"}, {**good, "region": None}, {k: v for k, v in good.items() if k != "region"},
                {**good, "revision": 2**64}):
        with pytest.raises(CodecError, match="TwinEntityUpdated"):
            CODEC.encode("TwinEntityUpdated", bad)
    # fastavro is more lenient than the flat writer here (a float that is a whole number for a long): same bytes
    assert CODEC.encode("TwinEntityUpdated", {**good, "revision": 3.0}) == CODEC.encode("TwinEntityUpdated", good)
