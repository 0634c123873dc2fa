"""Processors written outside the core: plain Python, tested alone, then run by the worker as agents."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.codec import SingleObjectCodec
from streams.catalogue import ALERTS, SENSOR_TOPICS
from streams.consume import drain
from streams.examples.parking_full import ParkingFull
from streams.processors import ProcessorLoadError, load_processors
from streams.publisher import EventPublisher
from tests.helpers import PROCESSOR_SENSOR, RESTART_CAR_PARK, Worker, wait_for
from twin.events import AlertCleared, AlertRaised, ParkingOccupancyReported

T = datetime(2032, 3, 3, 9, tzinfo=UTC)


def reading(occupied: int, minutes: int) -> ParkingOccupancyReported:
    return ParkingOccupancyReported(entity_id=PROCESSOR_SENSOR, region="kiel", occurred_at=T + timedelta(minutes=minutes),
                                    source="processor-test", occupied=occupied, capacity=100)


def test_parking_full_alone() -> None:
    p = ParkingFull()
    state: dict = {}
    out = p.handle([reading(80, 0), reading(96, 1), reading(97, 2), reading(92, 3), reading(85, 4)], state)
    assert [(type(e), e.alert_id) for e in out] == [(AlertRaised, f"{PROCESSOR_SENSOR}:parking_full"),
                                                    (AlertCleared, f"{PROCESSOR_SENSOR}:parking_full")]
    assert isinstance(out[0], AlertRaised) and out[0].value == 0.96 and out[0].public
    assert state == {PROCESSOR_SENSOR: False} and not vars(p)  # all state in the mapping, none on the object


def test_loading_errors_are_clear() -> None:
    with pytest.raises(ProcessorLoadError, match="must be 'module:attribute'"):
        load_processors("streams.examples.parking_full")
    with pytest.raises(ProcessorLoadError, match="cannot load processor 'nowhere:X'"):
        load_processors("nowhere:X")
    assert [p.name for p in load_processors("streams.examples.parking_full:ParkingFull")] == ["parking-full"]


@pytest.mark.broker
def test_the_worker_runs_a_processor_as_an_agent(worker: Worker) -> None:
    pub = EventPublisher(worker.bootstrap, SingleObjectCodec())
    for i, occ in enumerate((50, 97)):
        pub.add(SENSOR_TOPICS["parking"].name, PROCESSOR_SENSOR, reading(occ, i))
    pub.flush()
    codec = SingleObjectCodec()

    def raised() -> list:
        return [r for m in drain(worker.bootstrap, ALERTS.name, missing_ok=True)
                for name, r in [codec.decode(m.value())] if r["alert_id"] == f"{PROCESSOR_SENSOR}:parking_full"]

    got = wait_for(raised, 60, "the processor's alert")
    assert got[0]["category"] == "parking_full" and got[0]["source"] == "parking-full" and got[0]["value"] == 0.97


@pytest.mark.broker
def test_the_parking_alert_clears_after_a_worker_restart(topics: str, big_pack_dir: Path) -> None:
    """The processor's state lives in its table: a new worker process knows the alert is raised and clears it."""
    app_id = f"plietsch-proc-{uuid.uuid4().hex[:6]}"
    pub = EventPublisher(topics, SingleObjectCodec())
    codec = SingleObjectCodec()
    t = datetime(2033, 1, 1, 9, tzinfo=UTC)

    def rep(occ: int, minute: int) -> ParkingOccupancyReported:
        return ParkingOccupancyReported(entity_id=RESTART_CAR_PARK, region="kiel", occurred_at=t + timedelta(minutes=minute),
                                        source="restart-test", occupied=occ, capacity=100)

    def alerts() -> list[str]:
        return [name for m in drain(topics, ALERTS.name, missing_ok=True) for name, r in [codec.decode(m.value())]
                if r["alert_id"] == f"{RESTART_CAR_PARK}:parking_full" and r["occurred_at"].startswith("2033")]

    first = Worker(topics, big_pack_dir, app_id)
    first.start()
    try:
        pub.add(SENSOR_TOPICS["parking"].name, RESTART_CAR_PARK, rep(97, 0))
        pub.flush()
        wait_for(lambda: alerts() == ["AlertRaised"], 120, "the raised alert")
    finally:
        first.stop()
    second = Worker(topics, big_pack_dir, app_id)  # same app id: a restart
    second.start()
    try:
        pub.add(SENSOR_TOPICS["parking"].name, RESTART_CAR_PARK, rep(40, 1))
        pub.flush()
        wait_for(lambda: alerts() == ["AlertRaised", "AlertCleared"], 120, "the alert to clear after the restart")
        assert second.alive(), second.output()
    finally:
        second.stop()
