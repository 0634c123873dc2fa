"""The agents' per-record logic without a broker: a batch record in, table writes and output events out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, SingleObjectCodec, frame_batch
from streams.app import TwinApp
from streams.serde import encode_event
from streams.settings import StreamSettings
from twin.events import TrafficCounted, WaterLevelMeasured
from twin.region import BUNDLED_DIR


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE)])


class FakeEmitter:
    def __init__(self) -> None:
        self.out: dict[str, list[Any]] = {"updates": [], "aggregates": [], "alerts": [], "dead": []}

    def updates(self, it: Any) -> None:
        self.out["updates"].extend(it)

    def aggregates(self, it: Any) -> None:
        self.out["aggregates"].extend(it)

    def alerts(self, it: Any) -> None:
        self.out["alerts"].extend(it)

    def dead(self, it: Any) -> None:
        self.out["dead"].extend(it)


def test_batch_record_folds_once_per_sensor_and_feeds_coast_and_aggregates() -> None:
    twin = TwinApp(StreamSettings(KAFKA_BOOTSTRAP_SERVERS="unused:9092", region_pack=BUNDLED_DIR / "kiel"))
    emitter = FakeEmitter()
    twin._emitter = emitter  # type: ignore[assignment]
    codec = SingleObjectCodec()
    t0 = datetime(2026, 6, 1, 8, tzinfo=UTC)
    sid = "kiel:gaarden:sensor:traffic-count-001"
    traffic = [TrafficCounted(entity_id=sid, region="kiel", occurred_at=t0 + timedelta(minutes=i), source="t", vehicles=10 + i,
                              interval_s=60) for i in range(5)]
    value = frame_batch([encode_event(codec, e) for e in traffic] + [b"\xc3\x01broken"])
    table: dict[bytes, Any] = {}
    aggs: dict[bytes, Any] = {}
    twin.process(Msg("sensor.traffic-count", 0, 7, value), table, aggs, "kiel")
    assert table[sid.encode()]["values"]["vehicles"] == 14 and table[sid.encode()]["revision"] == 4
    assert [u.revision for u in emitter.out["updates"]] == [4]  # one update for five readings of one sensor
    assert [d.batch_index for d in emitter.out["dead"]] == [5] and emitter.out["dead"][0].original_offset == 7
    [agg] = emitter.out["aggregates"]
    assert agg.metric == "traffic_vehicles" and agg.shard == 0 and '"total":60.0' in agg.partial_json
    staff = "kiel:gaarden:sensor:water-level-001"
    wl = WaterLevelMeasured(entity_id=staff, region="kiel", occurred_at=t0, source="t", level_m=1.4)
    coast: dict[bytes, Any] = {}
    twin.process_coast(Msg("sensor.water-level", 1, 0, frame_batch([encode_event(codec, wl)])), coast, "kiel")
    segments = twin.pack.coast_by_gauge[staff]
    assert {k.decode() for k in coast} == {s.id for s in segments}
    assert {a.category for a in emitter.out["alerts"]} >= {"storm_surge"}
