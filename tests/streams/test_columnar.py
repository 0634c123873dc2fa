"""The columnar hot path decides, and folds, exactly like the per-reading path (property tests)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, CodecError, frame_batch
from streams.columnar import ColumnarDecoder
from streams.ingest import FastDecoder
from streams.publisher import homes
from tests.streams.test_fastpath import CODEC, KINDS, KNOWN, records, same
from twin import aggregates, columnar
from twin.region import BUNDLED_DIR, load_pack
from twin.sensors import SensorState
from twin.sensors import fold_rows as fold_sensor_rows

BATCH = [(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE)]
EXPECTED = {"sensor.water-level": ["WaterLevelMeasured"], "sensor.traffic-count": ["TrafficCounted"],
            "sensor.mixed": ["TrafficCounted", "WaterLevelMeasured", "AirQualityMeasured", "ParkingOccupancyReported",
                             "BikeStationStatusReported", "WeatherObserved"]}


class Msg:
    def __init__(self, topic: str, offset: int, value: bytes | None, headers: Any = BATCH, partition: int = 0) -> None:
        self.topic, self.partition, self.offset, self.key, self.value, self.headers = (topic, partition, offset, b"k", value,
                                                                                       headers)


HOMES = homes(KNOWN, dict.fromkeys(EXPECTED, 2))  # two partitions: about half the known entities' datums are at home


def damage(datum: bytes, how: str) -> bytes:
    if how == "trailing":
        return datum + b"\x00"
    if how == "short":
        return datum[:-1]
    if how == "utf8":  # a byte that is never UTF-8, inside the first string (the event id)
        return datum[:12] + b"\xff" + datum[13:] if len(datum) > 13 and datum[10] > 2 else datum
    if how == "fingerprint":
        return datum[:2] + b"\x00" * 8 + datum[10:]
    if how == "overlong":  # the event id's length as a two-byte varint: same value, one byte more
        return datum[:10] + bytes([datum[10] | 0x80, 0x00]) + datum[11:] if datum[10] < 0x80 else datum
    return datum


@st.composite
def kafka_records(draw: st.DrawFn) -> list[Msg]:
    msgs = []
    for offset in range(draw(st.integers(1, 3))):
        one_model = draw(st.booleans())
        datums = []
        model = None
        for _ in range(draw(st.integers(1, 25))):
            m, rec = draw(records())
            if one_model:
                if model is None:
                    model = m
                elif m is not model:
                    continue
            try:
                datum = CODEC.encode(m.__name__, rec)
            except CodecError:
                continue
            how = draw(st.sampled_from(["none"] * 12 + ["trailing", "short", "utf8", "fingerprint", "overlong"]))
            datums.append(damage(datum, how))
        if not datums:
            continue
        topic = draw(st.sampled_from(sorted(EXPECTED)))
        single = len(datums) == 1 and draw(st.booleans())
        msgs.append(Msg(topic, offset, datums[0] if single else frame_batch(datums), None if single else BATCH,
                        draw(st.integers(0, 1))))
    return msgs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(kafka_records(), st.booleans(), st.sampled_from([0, 0, 8, 10**6]))
def test_the_columnar_decoder_gives_the_rows_and_dead_letters_of_the_per_datum_decoder(msgs: list[Msg], home: bool,
                                                                                       min_columnar: int) -> None:
    """*home*: both decoders also refuse an entity's datum on another partition than its own. *min_columnar*: every
    group through the columns (0), the small ones through the per-datum path (8) or all of them (10**6), one frame."""
    fast = FastDecoder(CODEC, "p", expected=EXPECTED, known_entities=KNOWN, entity_kinds=KINDS, home=HOMES if home else None)
    cols = ColumnarDecoder(CODEC, "p", expected=EXPECTED, known_entities=KNOWN, entity_kinds=KINDS,
                           home=HOMES if home else None, min_columnar=min_columnar)
    batch = cols.batch(msgs)
    per_record = columnar.rows_by_record(batch.frames)
    for k, msg in enumerate(msgs):
        want = fast.rows(msg.topic, msg.partition, msg.offset, msg.key, msg.value, msg.headers)
        got = per_record.get(k, [])
        assert [(d.dead_letter_id, d.error_type, d.reason) for d in batch.dead.get(k, [])] == \
               [(d.dead_letter_id, d.error_type, d.reason) for d in want.dead]
        assert batch.datums[k] == want.datums
        assert len(got) == len(want.rows)
        for (n1, r1, t1), (n2, r2, t2) in zip(got, want.rows, strict=True):
            assert n1 == n2 and t1 == t2 and t1.utcoffset() == t2.utcoffset()
            t2text = r2["occurred_at"] if isinstance(r2["occurred_at"], str) else r2["occurred_at"].isoformat()
            assert r1["occurred_at"] == t2text
            assert r1.keys() == r2.keys()
            for f in r2:
                if f != "occurred_at":
                    assert same(r1[f], r2[f]) or (isinstance(r2[f], int) and float(r2[f]) == r1[f]), (f, r1[f], r2[f])


def test_valid_batches_take_the_columnar_path() -> None:
    """The speed depends on it: a batch of valid readings is decided by the columns, no datum by fastavro."""
    from streams.catalogue import SENSOR_TOPICS
    from streams.columnar import MIN_COLUMNAR
    from streams.serde import encode_event
    from streams.simulator import ReadingFactory

    pack = load_pack(BUNDLED_DIR / "kiel")
    factory = ReadingFactory(pack, seed=3)
    dec = ColumnarDecoder(CODEC, "p", expected={t.name: t.value_schemas for t in SENSOR_TOPICS.values()},
                          known_entities=set(pack.sensors), entity_kinds={s: v.sensor_kind for s, v in pack.sensors.items()})
    msgs = []
    for kind, topic in SENSOR_TOPICS.items():
        sensors = [s for s in pack.sensors.values() if s.sensor_kind == kind]
        rounds = max(20, -(-MIN_COLUMNAR // len(sensors)))  # a record of at least MIN_COLUMNAR datums
        datums = [encode_event(CODEC, factory.reading(s, datetime(2026, 11, 21, 12, tzinfo=UTC) + timedelta(minutes=i)))
                  for i in range(rounds) for s in sensors]
        msgs.append(Msg(topic.name, 0, frame_batch(datums)))
    batch = dec.batch(msgs)
    assert not batch.dead
    assert dec.slow_rows == 0 and dec.columnar_rows == sum(batch.datums.values()) > 0


def test_a_small_take_goes_through_the_per_datum_path_and_a_large_one_through_the_columns() -> None:
    """The columns' fixed cost per group (a few ms) is more than the per-datum path's for a few datums: the hot path
    at a low rate (a handful of readings per take) must not pay it, a large take must take the columns."""
    from streams.catalogue import SENSOR_TOPICS
    from streams.columnar import MIN_COLUMNAR
    from streams.serde import encode_event
    from streams.simulator import ReadingFactory

    pack = load_pack(BUNDLED_DIR / "kiel")
    factory = ReadingFactory(pack, seed=4)
    sensors = [s for s in pack.sensors.values() if s.sensor_kind == "traffic_count"][:3]
    topic = SENSOR_TOPICS["traffic_count"].name
    t0 = datetime(2026, 11, 21, 12, tzinfo=UTC)

    def take(n: int) -> list[Msg]:  # records of 4 datums, as the publisher lingers them at a low rate
        datums = [encode_event(CODEC, factory.reading(sensors[i % 3], t0 + timedelta(seconds=i))) for i in range(n)]
        return [Msg(topic, k, frame_batch(datums[i:i + 4])) for k, i in enumerate(range(0, n, 4))]

    dec = ColumnarDecoder(CODEC, "p", expected={t.name: t.value_schemas for t in SENSOR_TOPICS.values()},
                          known_entities=set(pack.sensors), entity_kinds={s: v.sensor_kind for s, v in pack.sensors.items()})
    small, large = take(MIN_COLUMNAR - 4), take(MIN_COLUMNAR)
    got = dec.batch(small)
    assert (dec.slow_rows, dec.columnar_rows) == (MIN_COLUMNAR - 4, 0)
    assert got.frames["TrafficCounted"]["_m"].to_list() == [k for k in range(len(small)) for _ in range(4)]
    assert got.frames["TrafficCounted"]["_i"].to_list() == [i for _ in small for i in range(4)]
    dec.batch(large)
    assert (dec.slow_rows, dec.columnar_rows) == (MIN_COLUMNAR - 4, MIN_COLUMNAR)


# ---- the folds -------------------------------------------------------------------------------------------------------

PACK = load_pack(BUNDLED_DIR / "kiel")
BY_KIND: dict[str, list[str]] = {}
for _sid, _s in sorted(PACK.sensors.items()):
    BY_KIND.setdefault(_s.sensor_kind, []).append(_sid)
NAMES = {"traffic_count": "TrafficCounted", "air_quality": "AirQualityMeasured", "parking": "ParkingOccupancyReported",
         "water_level": "WaterLevelMeasured"}
T0 = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # around a midnight, with +01:00 and +02:00 offsets below
OFFSETS = [timedelta(0), timedelta(hours=1), timedelta(hours=2), timedelta(hours=-3, minutes=-30)]


def reading_rec(kind: str, sid: str, i: int, minute: int, offset: timedelta, value: float) -> dict[str, Any]:
    from datetime import timezone

    t = (T0 + timedelta(minutes=minute, microseconds=i % 7)).astimezone(timezone(offset))
    rec: dict[str, Any] = {"event_id": f"e{i}", "entity_id": sid, "region": "kiel", "occurred_at": t.isoformat(), "source": "s"}
    if kind == "traffic_count":
        rec |= {"vehicles": int(value * 10), "interval_s": 60, "mean_speed_kmh": None if i % 3 else value}
    elif kind == "air_quality":
        rec |= {"no2_ugm3": value * 1.37, "pm10_ugm3": value / 3.0, "pm25_ugm3": value * 0.1 + 0.3}
    elif kind == "parking":
        rec |= {"occupied": int(value), "capacity": 100}
    else:
        rec |= {"level_m": value / 50.0 - 1.0}
    return rec


@st.composite
def reading_rows(draw: st.DrawFn) -> list[tuple[str, dict[str, Any], datetime]]:
    rows = []
    for i in range(draw(st.integers(1, 80))):
        kind = draw(st.sampled_from(sorted(NAMES)))
        sid = draw(st.sampled_from(BY_KIND[kind][:3]))
        rec = reading_rec(kind, sid, i, draw(st.integers(0, 240)), draw(st.sampled_from(OFFSETS)),
                          draw(st.floats(0, 100, allow_nan=False)))
        rows.append((NAMES[kind], rec, datetime.fromisoformat(rec["occurred_at"])))
        if draw(st.integers(0, 9)) == 0:  # a duplicate, now or later
            rows.append(rows[draw(st.integers(0, len(rows) - 1))])
    return rows


def frames_of(rows: list[tuple[str, dict[str, Any], datetime]]) -> dict[str, pl.DataFrame]:
    dec = ColumnarDecoder(CODEC, "p", expected={})
    return columnar_frames(dec, rows)


def columnar_frames(dec: ColumnarDecoder, rows: list[tuple[str, dict[str, Any], datetime]]) -> dict[str, pl.DataFrame]:
    from streams.columnar import rows_to_frames

    return rows_to_frames(dec, rows, range(len(rows)))


def kind_of(name: str) -> str:
    return {v: k for k, v in NAMES.items()}[name]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reading_rows(), st.integers(0, 40))
def test_the_columnar_folds_equal_the_per_reading_folds(rows: list[tuple[str, dict[str, Any], datetime]], cut: int) -> None:
    before, batch = rows[:cut], rows[cut:]
    # sensor states: an earlier batch folded per reading, then this batch both ways
    s1: dict[str, SensorState | None] = {}
    fold_sensor_rows(s1, before, kind_of)
    s2 = dict(s1)
    for _, rec, _ in batch:
        s1.setdefault(rec["entity_id"], None)
        s2.setdefault(rec["entity_id"], None)
    want = fold_sensor_rows(s1, batch, kind_of)
    got = columnar.fold_sensors(s2, frames_of(batch), kind_of)
    assert got == want and s1 == s2
    # aggregate partials, the same way
    p1: dict[str, aggregates.Partial] = {}
    aggregates.fold_rows(p1, before, PACK.sensors, 2)
    p2 = dict(p1)
    want_p = aggregates.fold_rows(p1, batch, PACK.sensors, 2)
    got_p = columnar.fold_aggregates(p2, frames_of(batch), columnar.Groups(PACK.sensors), 2)
    assert got_p.keys() == want_p.keys()
    for key, part in want_p.items():
        other = got_p[key]
        assert other == part, key
        assert math.copysign(1.0, other.total) == math.copysign(1.0, part.total)  # bit for bit, sign of zero too
    if batch:
        newest = max(t for _, _, t in batch)
        assert columnar.newest(frames_of(batch)) == newest


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reading_rows(), st.integers(0, 40), st.sampled_from([1, 2, 48]))
def test_the_horizon_rule_on_columns_equals_the_rule_on_rows(rows: list[tuple[str, dict[str, Any], datetime]], cut: int,
                                                             hours: int) -> None:
    horizon = timedelta(hours=hours)
    _, marks = aggregates.within_horizon(rows[:cut], {}, horizon)
    batch = rows[cut:]
    want_rows, want_marks = aggregates.within_horizon(batch, marks, horizon)
    got_frames, got_marks = columnar.within_horizon(frames_of(batch), marks, horizon)
    assert got_marks == want_marks and (got_marks is marks) == (want_marks is marks)
    got = sorted((r[1]["event_id"], r[0]) for name, df in got_frames.items() for r in columnar.to_rows(name, df))
    assert got == sorted((r[1]["event_id"], r[0]) for r in want_rows)
