import contextlib
import copy
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import SCHEMA_DIR, CodecError, SingleObjectCodec, frame_batch, iter_batch, split_batch
from schemas.compat import incompatibilities
from streams.schematools import check_backward, dump, expected_schemas, publish


def test_avsc_files_are_in_step_with_the_event_models() -> None:
    expected = expected_schemas()
    on_disk = {p.stem: p.read_text() for p in SCHEMA_DIR.glob("*.avsc")}
    assert set(on_disk) == set(expected), "run 'plietsch schemas generate'"
    for name, schema in expected.items():
        assert on_disk[name] == dump(schema), f"{name}.avsc is out of step; run 'plietsch schemas generate'"


def test_current_schemas_are_backward_compatible_with_published() -> None:
    assert check_backward() == {}


def test_breaking_change_is_detected(tmp_path: Path) -> None:
    src = json.loads((SCHEMA_DIR / "WaterLevelMeasured.avsc").read_text())
    (tmp_path / "avro").mkdir()
    published = tmp_path / "published"
    (tmp_path / "avro" / "WaterLevelMeasured.avsc").write_text(json.dumps(src))
    assert [p.name for p in publish(tmp_path / "avro", published)] == ["v1.avsc"]
    added_optional = copy.deepcopy(src)
    added_optional["fields"].append({"name": "quality", "type": ["null", "string"], "default": None})
    (tmp_path / "avro" / "WaterLevelMeasured.avsc").write_text(json.dumps(added_optional))
    assert check_backward(tmp_path / "avro", published) == {}
    breaking = copy.deepcopy(src)
    breaking["fields"].append({"name": "station_no", "type": "string"})  # new field without default
    breaking["fields"][5]["type"] = "int"  # double -> int narrows
    (tmp_path / "avro" / "WaterLevelMeasured.avsc").write_text(json.dumps(breaking))
    problems = check_backward(tmp_path / "avro", published)["WaterLevelMeasured"]
    assert any("station_no" in p and "default" in p for p in problems)
    assert any("level_m" in p and "double cannot be read as int" in p for p in problems)
    with pytest.raises(ValueError, match="not BACKWARD compatible"):
        publish(tmp_path / "avro", published)


def test_compat_rules() -> None:
    assert incompatibilities("long", "int") == []
    assert incompatibilities(["null", "string"], "string") == []
    assert incompatibilities("string", ["null", "string"])  # null cannot be read as string


def test_single_object_round_trip_and_errors() -> None:
    codec = SingleObjectCodec()
    rec = {"event_id": "e1", "entity_id": "kiel:_:sensor:g", "region": "kiel", "occurred_at": "2026-01-01T00:00:00+00:00",
           "source": "t", "level_m": 0.5}
    data = codec.encode("WaterLevelMeasured", rec)
    assert data[:2] == b"\xc3\x01"
    assert codec.decode(data) == ("WaterLevelMeasured", rec)
    with pytest.raises(CodecError, match="too short"):
        codec.decode(data[:5])
    with pytest.raises(CodecError, match="cannot read|does not decode"):
        codec.decode(data[:-3])
    with pytest.raises(CodecError, match="unknown writer schema fingerprint"):
        codec.decode(data[:2] + b"\x00" * 8 + data[10:])
    with pytest.raises(CodecError, match="not Avro single-object"):
        codec.decode(b"{" + data[1:])
    with pytest.raises(CodecError, match="trailing"):
        codec.decode(data + b"\x00")


def test_batch_frames_isolate_datums() -> None:
    datums = [b"a" * n for n in (0, 1, 63, 64, 300)]
    assert list(iter_batch(frame_batch(datums))) == datums
    with pytest.raises(CodecError, match="declares"):
        list(iter_batch(frame_batch([b"abc"])[:-1]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64) | st.binary(min_size=8000, max_size=20_000), max_size=12), st.binary(max_size=40))
def test_batch_frames_round_trip_and_junk_gives_only_codec_errors(datums: list[bytes], junk: bytes) -> None:
    """One-, two- and three-byte length prefixes (the short paths and the general loop) split as framed; any bytes
    either split or give a CodecError, never another exception."""
    assert split_batch(frame_batch(datums)) == datums
    for data in (junk, frame_batch(datums)[:-1] if datums else junk, junk + frame_batch(datums)):
        with contextlib.suppress(CodecError):
            split_batch(data)
