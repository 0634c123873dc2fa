"""The hot path's validation accepts and refuses exactly what the pydantic models do (property tests)."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.codec import CodecError, SingleObjectCodec
from streams.fastpath import compile_check
from streams.ingest import FastDecoder, RecordDecoder
from twin.events import READING_TYPES, Reading

CODEC = SingleObjectCodec()
KNOWN = {"kiel:gaarden:sensor:s-1", "kiel:_:sensor:gauge-2", "kiel:gaarden:road:r1"}
KINDS = {"kiel:gaarden:sensor:s-1": "traffic_count", "kiel:_:sensor:gauge-2": "water_level"}

floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1.0, 6.0, 6.0000001, -4.0,
                   249.99, 250.0, 359.99, 360.0, 2000.0, 2000.5, -50.0, 60.0, 75.0, 500.0, 1e300]))
ints = st.one_of(st.integers(-5, 200_000), st.sampled_from([0, 1, 86_400, 86_401, 100_000, 100_001, 10_000, 10_001]))
texts = st.one_of(st.text(max_size=3), st.text(min_size=60, max_size=70), st.sampled_from(["x", "sim", "kiel", "Kiel"]))
entity_ids = st.one_of(st.sampled_from([*sorted(KNOWN), "kiel:gaarden:sensor:unknown-9", "hamburg:x:sensor:s-1",
                                        "kiel:gaarden:sensor", "kiel:Gaarden:sensor:s-1", "kiel:gaarden:widget:w"]), st.text(max_size=12))
times = st.one_of(st.sampled_from(["2026-11-21T12:00:00+00:00", "2026-11-21T12:00:00Z", "2026-11-21T12:00:00.123456+01:00",
                                   "2026-11-21T12:00:00", "2026-11-21 12:00:00+00:00", "2026-11-21T12:00:00.5-03:30",
                                   "20261121T120000Z", "2026-02-30T12:00:00+00:00", "2026-11-21T25:00:00+00:00",
                                   "1700000000", "", "2026-11-21T12:00:00+0000", "2026-11-21T12:00:00.1234567+00:00",
                                   # the plausible range [2000, 2100) in UTC, at its edges and across an offset
                                   "1999-12-31T23:59:59.999999+00:00", "2000-01-01T00:00:00+00:00",
                                   "2000-01-01T00:30:00+01:00", "2099-12-31T23:59:59.999999+00:00",
                                   "2100-01-01T00:00:00+00:00", "2099-12-31T23:30:00-01:00", "9999-12-31T23:59:59+00:00",
                                   "0001-01-01T00:00:00+00:00"]),
                  st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()))


def value_for(annotation: Any) -> st.SearchStrategy[Any]:
    text = str(annotation)
    if "float" in text:
        return st.one_of(floats, st.none()) if "None" in text else floats
    if "int" in text:
        return ints
    return texts


@st.composite
def records(draw: st.DrawFn) -> tuple[type[Reading], dict[str, Any]]:
    model = draw(st.sampled_from(READING_TYPES))
    rec: dict[str, Any] = {"event_id": draw(texts), "entity_id": draw(entity_ids),
                           "region": draw(st.sampled_from(["kiel", "kiel", "hamburg", ""])),
                           "occurred_at": draw(times), "source": draw(texts)}
    for name, info in model.model_fields.items():
        if name not in rec:
            rec[name] = draw(value_for(info.annotation))
    if draw(st.booleans()) and model.__name__ == "ParkingOccupancyReported":
        rec["capacity"] = draw(st.integers(1, 100))
        rec["occupied"] = draw(st.integers(0, 120))
    return model, rec


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b and type(a) is type(b))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_the_fast_check_only_accepts_what_pydantic_accepts_with_the_same_values(case: tuple[type[Reading], dict[str, Any]]) -> None:
    model, rec = case
    check = compile_check(model)
    assert check is not None, f"{model.__name__} has no fast check: the hot path would validate it with pydantic"
    t = check(rec)
    if t is None:
        return  # not sure: the decoder asks model_validate (next test)
    event = model.model_validate(rec)  # raises when the fast check accepted something pydantic refuses
    assert event.occurred_at == t and event.occurred_at.utcoffset() == t.utcoffset()
    for name in model.model_fields:
        if name not in ("occurred_at", "entity_id"):
            assert same(getattr(event, name), rec[name]), name
    assert str(event.entity_id) == rec["entity_id"]


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_the_hot_decoder_decides_like_the_pydantic_decoder(case: tuple[type[Reading], dict[str, Any]]) -> None:
    model, rec = case
    try:
        datum = CODEC.encode(model.__name__, rec)
    except CodecError:
        return  # not representable in Avro: cannot arrive on a topic
    topic = {"WaterLevelMeasured": "sensor.water-level"}.get(model.__name__, "sensor.traffic-count")
    expected = {"sensor.water-level": ["WaterLevelMeasured"], "sensor.traffic-count": ["TrafficCounted"]}
    slow = RecordDecoder(CODEC, "p", expected=expected, known_entities=KNOWN, entity_kinds=KINDS)
    fast = FastDecoder(CODEC, "p", expected=expected, known_entities=KNOWN, entity_kinds=KINDS)
    a = slow.decode(topic, 0, 1, None, datum, None)
    b = fast.rows(topic, 0, 1, None, datum, None)
    assert [(d.error_type, d.reason) for d in a.dead] == [(d.error_type, d.reason) for d in b.dead]
    assert len(a.events) == len(b.rows)
    for event, (name, row, t) in zip(a.events, b.rows, strict=True):
        assert name == type(event).__name__ and t == event.occurred_at
        for f in type(event).model_fields:
            if f != "occurred_at":
                assert same(str(getattr(event, f)) if f == "entity_id" else getattr(event, f), row[f]), f


def test_known_rejections_keep_their_reasons() -> None:
    expected = {"sensor.water-level": ["WaterLevelMeasured"]}
    fast = FastDecoder(CODEC, "p", expected=expected, known_entities=KNOWN, entity_kinds=KINDS)
    base = {"event_id": "e", "entity_id": "kiel:_:sensor:gauge-2", "region": "kiel", "occurred_at": "2026-11-21T12:00:00+00:00",
            "source": "s", "level_m": 0.4}
    cases = {"level_m": (math.nan, "level_m"), "occurred_at": ("2026-11-21T12:00:00", "timezone")}
    for field, (bad, word) in cases.items():
        [dead] = fast.rows("sensor.water-level", 0, 0, None, CODEC.encode("WaterLevelMeasured", {**base, field: bad}), None).dead
        assert dead.error_type == "validation" and word in dead.reason
    [dead] = fast.rows("sensor.water-level", 0, 0, None, CODEC.encode("WaterLevelMeasured", {**base, "level_m": 42.0}), None).dead
    assert "less than or equal to 6" in dead.reason
    try:
        from twin.events import WaterLevelMeasured

        WaterLevelMeasured.model_validate({**base, "level_m": 42.0})
    except ValidationError as exc:
        assert "less than or equal to 6" in str(exc)


def test_valid_readings_take_the_fast_path() -> None:
    """The hot path's speed depends on it: every kind of valid reading passes the fast check, no pydantic."""
    from datetime import UTC, datetime

    from streams.serde import to_record
    from streams.simulator import ReadingFactory
    from twin.region import BUNDLED_DIR, load_pack

    pack = load_pack(BUNDLED_DIR / "kiel")
    factory = ReadingFactory(pack, seed=5)
    kinds_seen = set()
    for sensor in pack.sensors.values():
        reading = factory.reading(sensor, datetime(2026, 11, 21, 12, tzinfo=UTC))
        _, rec = CODEC.decode(CODEC.encode(type(reading).__name__, to_record(reading)))
        check = compile_check(type(reading))
        assert check is not None and check(rec) == reading.occurred_at, rec
        kinds_seen.add(sensor.sensor_kind)
    assert len(kinds_seen) == len(READING_TYPES)
