"""Archive files on disk, time travel from them, and the sink reading a real broker."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastavro import reader

from schemas.codec import SingleObjectCodec
from streams.archive import REPLAY_HEADERS, ArchiveWriter, archive_files, read_events, rebuild, run_sink
from streams.catalogue import SENSOR_TOPICS
from streams.publisher import EventPublisher
from streams.serde import to_record
from tests.helpers import wait_for
from twin.events import TrafficCounted, WaterLevelMeasured
from twin.region import bundled_pack

T = datetime(2026, 3, 1, 23, 50, tzinfo=UTC)
SID = "kiel:gaarden:sensor:traffic-count-001"
STAFF = "kiel:gaarden:sensor:water-level-001"


def _events() -> list:
    out = [TrafficCounted(entity_id=SID, region="kiel", occurred_at=T + timedelta(minutes=5 * i), source="t", vehicles=i,
                          interval_s=300) for i in range(6)]  # crosses midnight: two day folders
    out.append(WaterLevelMeasured(entity_id=STAFF, region="kiel", occurred_at=T + timedelta(minutes=1), source="t", level_m=1.3))
    return out


def test_files_by_topic_and_day_and_time_travel(tmp_path: Path) -> None:
    w = ArchiveWriter(tmp_path)
    for i, e in enumerate(_events()):
        topic = SENSOR_TOPICS[type(e).sensor_kind].name
        w.add(topic, 0, i, type(e).__name__, to_record(e))
    w.flush()
    files = archive_files(tmp_path)
    assert {(f.parent.parent.name, f.parent.name) for f in files} == {
        ("sensor.traffic-count", "2026-03-01"), ("sensor.traffic-count", "2026-03-02"), ("sensor.water-level", "2026-03-01")}
    with files[0].open("rb") as fh:
        assert reader(fh).writer_schema["name"].endswith(files[0].name.split("-p")[0])
    assert [e.occurred_at for _, e in read_events(tmp_path)] == sorted(e.occurred_at for e in _events())
    pack = bundled_pack()
    before_midnight = rebuild(tmp_path, pack, at=T + timedelta(minutes=7))
    assert before_midnight.sensors[SID].values["vehicles"] == 1
    assert any(a.category == "storm_surge" for a in before_midnight.alerts.values())
    assert rebuild(tmp_path, pack).sensors[SID].values["vehicles"] == 5
    assert rebuild(tmp_path, pack, at=T - timedelta(minutes=1)).sensors == {}


@pytest.mark.broker
def test_sink_archives_what_the_broker_carries_but_not_replays(topics: str, tmp_path: Path) -> None:
    codec = SingleObjectCodec()
    pub = EventPublisher(topics, codec)
    marker = "archive-test"
    events = [e.model_copy(update={"source": marker}) for e in _events()]
    for e in events:
        pub.add(SENSOR_TOPICS[type(e).sensor_kind].name, e.entity_id, e)
    pub.flush()
    replayed = EventPublisher(topics, codec, extra_headers=REPLAY_HEADERS)
    replayed.add(SENSOR_TOPICS["traffic_count"].name, SID, events[0].model_copy(update={"event_id": "replayed-1"}))
    replayed.flush()
    stop = threading.Event()
    done: list[int] = []
    th = threading.Thread(target=lambda: done.append(run_sink(topics, codec, tmp_path, group=f"arch-{marker}",
                                                              flush_every_s=0.5, should_stop=stop.is_set)))
    th.start()
    try:
        wait_for(lambda: sum(1 for _, e in read_events(tmp_path) if e.source == marker) >= len(events), 60, "archived events")
    finally:
        stop.set()
        th.join(30)
    archived = [e for _, e in read_events(tmp_path) if e.source == marker]
    assert sorted(e.event_id for e in archived) == sorted(e.event_id for e in events)  # once each, no replayed record
