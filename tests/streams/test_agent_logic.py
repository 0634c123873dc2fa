"""The agents' work per batch without a broker: records in, table changes, outputs and markers out (one commit)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, SingleObjectCodec, frame_batch
from streams.agents import AGGREGATE_TABLE, COAST_TABLE, SENSOR_TABLE, ProcessorUnit, SensorUnit
from streams.catalogue import AGGREGATES, ALERTS, DEAD_LETTERS, TWIN_UPDATES
from streams.ingest import MAX_DEAD_PER_RECORD
from streams.serde import encode_event
from streams.tables import Encoded, marker_key
from twin.events import AlertRaised, Event, ParkingOccupancyReported, TrafficCounted, TwinEntityUpdated, WaterLevelMeasured
from twin.region import BUNDLED_DIR, load_pack

BATCH = [(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE)]
T0 = datetime(2026, 6, 1, 8, tzinfo=UTC)
PACK = load_pack(BUNDLED_DIR / "kiel")
CODEC = SingleObjectCodec()


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: list(BATCH))


class MemoryTx:
    """TxTables' contract in memory: commit applies changes and markers together and records the outputs."""

    def __init__(self, tables: tuple[str, ...]) -> None:
        self.names = tables
        self.parts: dict[int, dict[str, dict[bytes, Any]]] = {}
        self.outputs: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.commits = 0

    def part(self, p: int) -> dict[str, dict[bytes, Any]]:
        return self.parts.setdefault(p, {n: {} for n in self.names})

    def applied(self, p: int, epoch: str, topic: str, partition: int, table: str | None = None) -> int:
        return int(self.part(p)[table or self.names[0]].get(marker_key(epoch, topic, partition), -1))

    def stored(self, v: Any) -> Any:
        """A value as the table gives it back after a round trip through the changelog (JSON)."""
        return json.loads(v.data) if isinstance(v, Encoded) else json.loads(json.dumps(v))

    def keep(self, outputs: list[Any]) -> None:
        self.outputs.extend(outputs)

    def commit(self, p: int, changes: dict[str, dict[bytes, Any]], outputs: list[Any], markers: dict[str, Any]) -> None:
        tables = self.part(p)
        for n, kv in changes.items():
            for k, v in kv.items():
                if v is None:
                    tables[n].pop(k, None)
                else:
                    tables[n][k] = self.stored(v)
        for n, ms in markers.items():
            for (e, t, part), off in ms.items():
                tables[n][marker_key(e, t, part)] = off
        self.keep(outputs)
        self.commits += 1

    def decoded(self, topic: str) -> list[dict[str, Any]]:
        return [CODEC.decode(v)[1] for t, _, v, _ in self.outputs if t == topic and v is not None]


def traffic(sid: str, i: int, **kw: Any) -> TrafficCounted:
    return TrafficCounted(entity_id=sid, region="kiel", occurred_at=T0 + timedelta(minutes=i), source="t", vehicles=10 + i,
                          interval_s=60, **kw)


def test_batch_folds_once_per_sensor_feeds_aggregates_and_keeps_a_bad_datum() -> None:
    unit, tx = SensorUnit(CODEC, PACK, "e1", 48.0), MemoryTx(SensorUnit.tables)
    sid = "kiel:gaarden:sensor:traffic-count-001"
    value = frame_batch([encode_event(CODEC, traffic(sid, i)) for i in range(5)] + [b"\xc3\x01broken"])
    unit.process(tx, 0, [Msg("sensor.traffic-count", 0, 7, value)])
    state = tx.part(0)[SENSOR_TABLE][sid.encode()]
    assert state["values"]["vehicles"] == 14 and state["revision"] == 4
    assert [u["revision"] for u in tx.decoded(TWIN_UPDATES.name)] == [4]  # one update for five readings of one sensor
    [dead] = tx.decoded(DEAD_LETTERS.name)
    assert dead["batch_index"] == 5 and dead["original_offset"] == 7 and dead["error_type"] == "decode"
    [agg] = tx.decoded(AGGREGATES.name)
    assert agg["metric"] == "traffic_vehicles" and agg["shard"] == 0 and '"total":60.0' in agg["partial_json"]
    assert json.loads(agg["partial_json"])["rev"] == 1
    assert tx.applied(0, "e1", "sensor.traffic-count", 0) == 7 and tx.commits == 1


def test_redelivery_and_replay_change_nothing_and_emit_nothing() -> None:
    unit, tx = SensorUnit(CODEC, PACK, "e1", 48.0), MemoryTx(SensorUnit.tables)
    sid = "kiel:gaarden:sensor:traffic-count-001"
    msg = Msg("sensor.traffic-count", 1, 3, frame_batch([encode_event(CODEC, traffic(sid, i)) for i in range(3)]))
    unit.process(tx, 1, [msg])
    def snapshot() -> str:
        return repr(sorted((n, sorted(t.items())) for n, t in tx.part(1).items()))

    before = snapshot()
    n_out = len(tx.outputs)
    unit.process(tx, 1, [msg])  # redelivered after a crash before Faust committed the offset
    replayed = Msg(msg.topic, 1, 99, msg.value, headers=[*BATCH, ("plietsch-replay", b"1"),
                                                            ("plietsch-origin", b"e1|sensor.traffic-count|1|3")])
    unit.process(tx, 1, [replayed])  # the same record replayed from the archive into a new broker
    assert snapshot() == before and len(tx.outputs) == n_out
    partial = next(v for k, v in tx.part(1)[AGGREGATE_TABLE].items() if not k.startswith(b"__"))
    assert partial["count"] == 3  # counted once


def test_output_ids_are_stable_when_a_batch_is_processed_again() -> None:
    sid = "kiel:gaarden:sensor:traffic-count-001"
    msg = Msg("sensor.traffic-count", 0, 0, frame_batch([encode_event(CODEC, traffic(sid, i)) for i in range(3)]))
    ids = []
    for _ in range(2):  # a crash before the commit: a fresh worker processes the same record again
        tx = MemoryTx(SensorUnit.tables)
        SensorUnit(CODEC, PACK, "e1", 48.0).process(tx, 0, [msg])
        ids.append(sorted(r["event_id"] for t in (TWIN_UPDATES.name, AGGREGATES.name) for r in tx.decoded(t)))
    assert ids[0] == ids[1]


def test_coast_state_and_alerts_in_the_same_unit() -> None:
    unit, tx = SensorUnit(CODEC, PACK, "e1", 48.0), MemoryTx(SensorUnit.tables)
    staff = "kiel:gaarden:sensor:water-level-001"
    levels = [0.2, 1.4, 0.1]
    value = frame_batch([encode_event(CODEC, WaterLevelMeasured(entity_id=staff, region="kiel", source="t", level_m=lv,
                                                                occurred_at=T0 + timedelta(hours=i)))
                         for i, lv in enumerate(levels)])
    unit.process(tx, 1, [Msg("sensor.water-level", 1, 0, value)])
    segments = PACK.coast_by_gauge[staff]
    assert {k.decode() for k in tx.part(1)[COAST_TABLE] if not k.startswith(b"__")} == {s.id for s in segments}
    alerts = [(CODEC.decode(v)[0], CODEC.decode(v)[1]["category"]) for t, _, v, _ in tx.outputs if t == ALERTS.name and v]
    assert ("AlertRaised", "storm_surge") in alerts and ("AlertCleared", "storm_surge") in alerts


def test_a_batch_of_zero_bytes_is_one_dead_letter_and_many_bad_datums_are_capped() -> None:
    unit, tx = SensorUnit(CODEC, PACK, "e1", 48.0), MemoryTx(SensorUnit.tables)
    unit.process(tx, 0, [Msg("sensor.traffic-count", 0, 0, b"\x00" * 5000)])
    [dead] = tx.decoded(DEAD_LETTERS.name)
    assert dead["original_value"] == b"\x00" * 5000 and "empty datum" in dead["reason"]
    sid = "kiel:gaarden:sensor:traffic-count-001"
    good = [encode_event(CODEC, traffic(sid, i)) for i in range(3)]
    junk = [b"\xc3\x01" + bytes([i]) * 20 for i in range(MAX_DEAD_PER_RECORD + 5)]
    unit.process(tx, 0, [Msg("sensor.traffic-count", 0, 1, frame_batch(good[:1] + junk + good[1:]))])
    dead_letters = tx.decoded(DEAD_LETTERS.name)[1:]
    assert len(dead_letters) == 1 and dead_letters[0]["batch_index"] == -1
    assert f"{len(junk)} of {len(junk) + 3} datums" in dead_letters[0]["reason"]
    assert tx.part(0)[SENSOR_TABLE][sid.encode()]["revision"] == 2  # the good neighbours went through


def test_parking_takes_the_newest_reading_per_member() -> None:
    unit, tx = SensorUnit(CODEC, PACK, "e1", 48.0), MemoryTx(SensorUnit.tables)
    car_park = next(s for s in PACK.sensors.values() if s.sensor_kind == "parking" and s.neighbourhood)
    def rep(occ: int, minute: int) -> bytes:
        return encode_event(CODEC, ParkingOccupancyReported(entity_id=car_park.id, region="kiel", source="t", occupied=occ,
                                                            capacity=100, occurred_at=T0 + timedelta(minutes=minute)))
    unit.process(tx, 2, [Msg("sensor.parking", 2, 0, frame_batch([rep(50, 10), rep(20, 5)]))])  # the late one loses
    unit.process(tx, 2, [Msg("sensor.parking", 2, 1, frame_batch([rep(30, 7)]))])  # late again, next batch
    [partial] = [v for k, v in tx.part(2)[AGGREGATE_TABLE].items() if k.startswith(b"parking_occupancy")]
    assert partial["members"][car_park.id] == [50.0, 100.0]


def test_partials_behind_the_horizon_leave_the_hot_state() -> None:
    unit, tx = SensorUnit(CODEC, PACK, "e1", 2.0), MemoryTx(SensorUnit.tables)
    sid = "kiel:gaarden:sensor:traffic-count-001"
    for day in range(3):  # three days of readings, a two-hour horizon
        value = frame_batch([encode_event(CODEC, traffic(sid, day * 1440 + m)) for m in range(0, 1440, 30)])
        unit.process(tx, 0, [Msg("sensor.traffic-count", 0, day, value)])
    keys = [k for k in tx.part(0)[AGGREGATE_TABLE] if not k.startswith(b"__")]
    assert 0 < len(keys) <= 10  # windows of the last ~2 hours, not three days' worth
    tombstones = [k for t, k, v, _ in tx.outputs if t == AGGREGATES.name and v is None]
    assert len(tombstones) >= 3 * 48 - 10


class Greedy:
    name = "greedy"
    topics = ("sensor.parking",)
    output = "twin.alerts"

    def handle(self, events: list[Event], state: Any) -> list[Event]:
        state["seen"] = int(state.get("seen", 0)) + len(events)
        e = events[0]
        return [TwinEntityUpdated(entity_id=e.entity_id, region="kiel", occurred_at=e.occurred_at, source="x",
                                  entity_type="sensor", revision=0, state_json="{}", cause_event_id="x")]


def test_a_processor_writes_only_to_its_declared_topic() -> None:
    unit = ProcessorUnit(Greedy(), CODEC, PACK, "e1", set())
    tx = MemoryTx(unit.tables)
    car_park = next(s for s in PACK.sensors.values() if s.sensor_kind == "parking")
    value = frame_batch([encode_event(CODEC, ParkingOccupancyReported(entity_id=car_park.id, region="kiel", source="t",
                                                                      occupied=1, capacity=2, occurred_at=T0))])
    unit.process(tx, 0, [Msg("sensor.parking", 0, 0, value)])
    assert [t for t, *_ in tx.outputs] == [DEAD_LETTERS.name]  # nothing on twin.updates (nor on twin.alerts)
    [dead] = tx.decoded(DEAD_LETTERS.name)
    assert "declared output topic 'twin.alerts'" in dead["reason"] and dead["error_type"] == "processing"
    assert b"seen" not in tx.part(0)[unit.table]  # its state change went with the refused output


def test_processor_state_is_the_table() -> None:
    from streams.examples.parking_full import ParkingFull

    unit = ProcessorUnit(ParkingFull(), CODEC, PACK, "e1", set())
    tx = MemoryTx(unit.tables)
    car_park = next(s for s in PACK.sensors.values() if s.sensor_kind == "parking")

    def rec(occ: int, i: int) -> bytes:
        return frame_batch([encode_event(CODEC, ParkingOccupancyReported(
            entity_id=car_park.id, region="kiel", source="t", occupied=occ, capacity=100, occurred_at=T0 + timedelta(minutes=i)))])
    unit.process(tx, 0, [Msg("sensor.parking", 0, 0, rec(97, 0))])
    assert tx.part(0)[unit.table][car_park.id.encode()] is True
    restarted = ProcessorUnit(ParkingFull(), CODEC, PACK, "e1", set())  # a new process: nothing on self
    restarted.process(tx, 0, [Msg("sensor.parking", 0, 1, rec(50, 1))])
    names = [CODEC.decode(v)[0] for t, _, v, _ in tx.outputs if t == ALERTS.name and v]
    assert names == ["AlertRaised", "AlertCleared"]
    assert isinstance(AlertRaised, type)


@pytest.mark.parametrize("topic", ["sensor.traffic-count"])
def test_tombstone_record_is_a_dead_letter(topic: str) -> None:
    unit, tx = SensorUnit(CODEC, PACK, "e1", 48.0), MemoryTx(SensorUnit.tables)
    unit.process(tx, 0, [Msg(topic, 0, 0, None, headers=[])])
    [dead] = tx.decoded(DEAD_LETTERS.name)
    assert "tombstone" in dead["reason"]


def test_after_a_cut_short_batch_each_table_applies_only_what_it_lacks() -> None:
    """On a broker that shows aborted records, a crash may leave the sensor table with a batch and the aggregates
    without it: the batch again gives the aggregates their share once, and the sensor state stays as it is."""
    unit, tx = SensorUnit(CODEC, PACK, "e1", 48.0), MemoryTx(SensorUnit.tables)
    sid = "kiel:gaarden:sensor:traffic-count-001"
    msg = Msg("sensor.traffic-count", 0, 4, frame_batch([encode_event(CODEC, traffic(sid, i)) for i in range(3)]))
    unit.process(tx, 0, [msg])
    aggs = tx.part(0)[AGGREGATE_TABLE]
    for k in list(aggs):  # as if the aggregates' part of the transaction never arrived
        del aggs[k]
    sensor_before = dict(tx.part(0)[SENSOR_TABLE])
    unit.process(tx, 0, [msg])
    assert tx.part(0)[SENSOR_TABLE] == sensor_before
    [partial] = [v for k, v in aggs.items() if not k.startswith(b"__")]
    assert partial["count"] == 3


class PerEvent:
    """ParkingFull through the per-event API only (the worker prefers handle_frame when a processor has it)."""

    def __init__(self) -> None:
        from streams.examples.parking_full import ParkingFull

        self.inner = ParkingFull()
        self.name, self.topics, self.output = self.inner.name, self.inner.topics, self.inner.output

    def handle(self, events: list[Event], state: Any) -> list[Event]:
        return self.inner.handle(events, state)


CAR_PARKS = sorted(s.id for s in PACK.sensors.values() if s.sensor_kind == "parking")[:3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(CAR_PARKS), st.integers(0, 100)), min_size=1, max_size=12),
                min_size=1, max_size=5),
       st.dictionaries(st.sampled_from(CAR_PARKS), st.booleans()), st.integers(1, 3))
def test_a_processors_frame_api_gives_what_its_event_api_gives(records: list[list[tuple[str, int]]],
                                                              raised: dict[str, bool], take: int) -> None:
    """ParkingFull.handle_frame (a take of records as one frame) against ParkingFull.handle (record by record): the
    same alerts in the same order, the same state, whatever the readings, the takes and the state before."""
    from streams.examples.parking_full import ParkingFull

    msgs: list[Any] = [Msg("sensor.parking", 0, o, frame_batch([encode_event(CODEC, ParkingOccupancyReported(
        entity_id=cp, region="kiel", source="t", occupied=occ, capacity=100,
        occurred_at=T0 + timedelta(minutes=10 * o + i))) for i, (cp, occ) in enumerate(rec)])) for o, rec in enumerate(records)]
    results = []
    for proc in (ParkingFull(), PerEvent()):
        unit = ProcessorUnit(proc, CODEC, PACK, "e1", set())
        tx = MemoryTx(unit.tables)
        tx.part(0)[unit.table].update({k.encode(): v for k, v in raised.items()})
        for i in range(0, len(msgs), take):
            unit.process(tx, 0, msgs[i:i + take])
        alerts = [{k: v for k, v in a.items() if k != "event_id"} for a in tx.decoded(ALERTS.name)]
        results.append((alerts, {k: v for k, v in tx.part(0)[unit.table].items() if not k.startswith(b"__")}))
    assert results[0] == results[1]


class Flaky:
    """A frame processor that fails on one car park's readings: only the record holding them is a dead letter."""

    name, topics, output = "flaky", ("sensor.parking",), "twin.alerts"

    def handle_frame(self, frames: Any, state: Any) -> list[Event]:
        df = frames["ParkingOccupancyReported"]
        if (df["occupied"] == 13).any():
            raise ValueError("13 is unlucky")
        state["n"] = int(state.get("n", 0)) + len(df)
        return []


def test_a_failing_frame_processor_loses_only_the_record_that_fails() -> None:
    unit = ProcessorUnit(Flaky(), CODEC, PACK, "e1", set())
    tx = MemoryTx(unit.tables)

    def rec(*occupied: int) -> bytes:
        return frame_batch([encode_event(CODEC, ParkingOccupancyReported(
            entity_id=CAR_PARKS[0], region="kiel", source="t", occupied=o, capacity=100, occurred_at=T0 + timedelta(minutes=i)))
            for i, o in enumerate(occupied)])
    unit.process(tx, 0, [Msg("sensor.parking", 0, 0, rec(1, 2)), Msg("sensor.parking", 0, 1, rec(3, 13, 4)),
                         Msg("sensor.parking", 0, 2, rec(5))])
    [dead] = tx.decoded(DEAD_LETTERS.name)
    assert dead["original_offset"] == 1 and "ValueError: 13 is unlucky" in dead["reason"]
    assert tx.part(0)[unit.table][b"n"] == 3  # the two good records' readings, once
    assert tx.commits == 1


def test_a_reading_from_a_wrong_clock_is_a_dead_letter_and_does_not_freeze_the_sensor() -> None:
    """A time far ahead would become the sensor's newest reading and shut out every true one after it."""
    sid = "kiel:gaarden:sensor:traffic-count-001"
    unit, tx = SensorUnit(CODEC, PACK, "e1", 48.0), MemoryTx(SensorUnit.tables)
    good = traffic(sid, 0).model_dump(mode="json")
    wrong = [CODEC.encode("TrafficCounted", {**good, "event_id": f"w{i}", "occurred_at": at})
             for i, at in enumerate(["9999-12-31T23:59:59+00:00", "2100-01-01T00:00:00+00:00", "1999-12-31T23:59:59+00:00"])]
    unit.process(tx, 0, [Msg("sensor.traffic-count", 0, 0, frame_batch([*wrong, encode_event(CODEC, traffic(sid, 1))]))])
    dead = tx.decoded(DEAD_LETTERS.name)
    assert len(dead) == 3 and all("the sender's clock is wrong" in d["reason"] for d in dead), [d["reason"] for d in dead]
    state = tx.part(0)[SENSOR_TABLE][sid.encode()]
    assert state["observed_at"].startswith("2026-06-01T08:01")  # the true reading, not the one from 9999


def test_a_reading_on_another_partition_than_its_sensors_is_a_dead_letter_everywhere() -> None:
    """A sender that does not partition by murmur2 of the sensor id would split a sensor over partitions, each with its
    own state (found by the fuzz drill). The worker's sensor unit, a processor and the archive refuse such a datum
    with the reason, and take the sensor's readings on its own partition."""
    from streams.archive import Validator
    from streams.examples.parking_full import ParkingFull
    from streams.publisher import partition_for

    sid = "kiel:gaarden:sensor:traffic-count-001"
    home = partition_for(sid.encode(), 4)
    away = (home + 1) % 4
    readings = [encode_event(CODEC, traffic(sid, i)) for i in range(3)]
    unit, tx = SensorUnit(CODEC, PACK, "e1", 48.0, partitions=4), MemoryTx(SensorUnit.tables)
    unit.process(tx, away, [Msg("sensor.traffic-count", away, 5, frame_batch(readings))])
    assert tx.part(away)[SENSOR_TABLE] == {k: v for k, v in tx.part(away)[SENSOR_TABLE].items() if k.startswith(b"__")}
    dead = tx.decoded(DEAD_LETTERS.name)
    assert [d["error_type"] for d in dead] == ["wrong_partition"] * 3
    assert f"belongs on partition {home} of sensor.traffic-count" in dead[0]["reason"]
    assert "murmur2_random" in dead[0]["reason"]
    assert not tx.decoded(TWIN_UPDATES.name) and not tx.decoded(AGGREGATES.name)
    unit.process(tx, home, [Msg("sensor.traffic-count", home, 6, frame_batch(readings))])
    assert tx.part(home)[SENSOR_TABLE][sid.encode()]["revision"] == 2
    # the same verdict one datum at a time (not a batch record), and in the archive
    single = Msg("sensor.traffic-count", away, 7, readings[0], headers=[])
    unit.process(tx, away, [single])
    assert tx.decoded(DEAD_LETTERS.name)[-1]["error_type"] == "wrong_partition"
    validator = Validator(CODEC, PACK, 4)
    assert validator.event("sensor.traffic-count", away, 8, None, readings[0]) is None
    assert validator.reasons == {"wrong_partition": 1}
    assert validator.event("sensor.traffic-count", home, 8, None, readings[0]) is not None
    # a processor reading the parking topic refuses a car park's reading off its partition too
    park = next(s for s in PACK.sensors.values() if s.sensor_kind == "parking")
    reading = ParkingOccupancyReported(entity_id=park.id, region="kiel", occurred_at=T0, source="t", occupied=10,
                                       capacity=100)
    p_home = partition_for(park.id.encode(), 4)
    proc = ProcessorUnit(ParkingFull(), CODEC, PACK, "e1", set(), partitions=4)
    ptx = MemoryTx(proc.tables)
    proc.process(ptx, (p_home + 1) % 4, [Msg("sensor.parking", (p_home + 1) % 4, 1, frame_batch([encode_event(CODEC, reading)]))])
    assert [d["error_type"] for d in ptx.decoded(DEAD_LETTERS.name)] == ["wrong_partition"]


SAMPLE = {kind: sorted(s.id for s in PACK.sensors.values() if s.sensor_kind == kind)[:3]
          for kind in sorted({s.sensor_kind for s in PACK.sensors.values()})}


@st.composite
def takes(draw: st.DrawFn) -> list[list[Any]]:  # Msg stands for a Message
    """Takes of batch records of all sensor kinds: times over five days (some beyond the 48 h horizon once others
    arrived), repeated readings, late ones."""
    from streams.catalogue import SENSOR_TOPICS
    from streams.simulator import ReadingFactory

    factory = ReadingFactory(PACK, seed=draw(st.integers(0, 3)))
    sent: list[bytes] = []
    out, offset = [], 0
    for _ in range(draw(st.integers(1, 3))):
        take = []
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(sorted(SAMPLE)))
            datums = []
            for _ in range(draw(st.integers(1, 6))):
                if sent and draw(st.integers(0, 5)) == 0:
                    datums.append(draw(st.sampled_from(sent)))  # a reading again (same event id; or on a wrong topic)
                    continue
                sid = draw(st.sampled_from(SAMPLE[kind]))
                reading = factory.reading(PACK.sensors[sid], T0 + timedelta(minutes=draw(st.integers(0, 5 * 24 * 60))))
                datums.append(encode_event(CODEC, reading))
                sent.append(datums[-1])
            take.append(Msg(SENSOR_TOPICS[kind].name, 0, offset, frame_batch(datums)))
            offset += 1
        out.append(take)
    return out


@settings(max_examples=80, deadline=None)
@given(takes())
def test_a_small_take_folds_on_rows_to_what_the_columns_give(batches: list[list[Any]]) -> None:
    """Below ``min_columnar`` readings the unit decides and folds reading by reading (polars' fixed cost per call is
    more than a few readings cost): tables, outputs and markers are the columns' exactly."""
    results = []
    for min_columnar in (0, 10**6):
        unit, tx = SensorUnit(CODEC, PACK, "e1", 48.0, min_columnar=min_columnar), MemoryTx(SensorUnit.tables)
        for batch in batches:
            unit.process(tx, 0, batch)
        assert (unit.decoder.columnar_rows == 0) == (min_columnar > 0)
        outputs = [(t, k, v if v is None else CODEC.decode(v)) for t, k, v, _ in tx.outputs]
        for _, _, out in outputs:
            if out is not None and out[0] == "DeadLettered":
                out[1].pop("failed_at")  # the wall clock
            for doc in ("state_json", "partial_json"):  # the same document (a partial's members in another order)
                if out is not None and doc in out[1]:
                    out[1][doc] = json.loads(out[1][doc])
        # per key in the same order (the order across keys in one transaction is the columns' group order)
        results.append((tx.parts, sorted(outputs, key=lambda o: (o[0], o[1] or b""))))
    assert results[0] == results[1]
