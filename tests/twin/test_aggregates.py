from datetime import UTC, datetime, timedelta

import pytest

from twin.aggregates import Partial, combine, fold, window_start
from twin.entities import Sensor
from twin.events import AirQualityMeasured, ParkingOccupancyReported, TrafficCounted

ROAD = "kiel:gaarden:road:r0001"
HOOD = "kiel:gaarden:neighbourhood:gaarden"
SENSORS = {
    "kiel:gaarden:sensor:t-1": Sensor(id="kiel:gaarden:sensor:t-1", synthetic=True, sensor_kind="traffic_count", lon=0, lat=0,
                                      neighbourhood=HOOD, road=ROAD),
    "kiel:gaarden:sensor:t-2": Sensor(id="kiel:gaarden:sensor:t-2", synthetic=True, sensor_kind="traffic_count", lon=0, lat=0,
                                      neighbourhood=HOOD, road=ROAD),
    "kiel:gaarden:sensor:p-1": Sensor(id="kiel:gaarden:sensor:p-1", synthetic=True, sensor_kind="parking", lon=0, lat=0,
                                      neighbourhood=HOOD),
    "kiel:gaarden:sensor:p-2": Sensor(id="kiel:gaarden:sensor:p-2", synthetic=True, sensor_kind="parking", lon=0, lat=0,
                                      neighbourhood=HOOD),
    "kiel:gaarden:sensor:a-1": Sensor(id="kiel:gaarden:sensor:a-1", synthetic=True, sensor_kind="air_quality", lon=0, lat=0,
                                      neighbourhood=HOOD),
}
T = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def env(sid: str, minutes: float) -> dict:
    return {"entity_id": sid, "region": "kiel", "occurred_at": T + timedelta(minutes=minutes), "source": "test"}


def test_window_start() -> None:
    assert window_start(T + timedelta(minutes=14, seconds=59), timedelta(minutes=15)) == T
    assert window_start(T + timedelta(minutes=15), timedelta(minutes=15)) == T + timedelta(minutes=15)


def test_traffic_per_road_per_15_minutes_across_shards() -> None:
    a = [TrafficCounted(**env("kiel:gaarden:sensor:t-1", m), vehicles=v, interval_s=300) for m, v in ((0, 10), (5, 20), (16, 7))]
    b = [TrafficCounted(**env("kiel:gaarden:sensor:t-2", m), vehicles=v, interval_s=300) for m, v in ((3, 5), (14, 1))]
    shard0: dict = {}
    shard1: dict = {}
    fold(shard0, a, SENSORS, shard=0)
    fold(shard1, b, SENSORS, shard=1)
    first = [p for p in [*shard0.values(), *shard1.values()] if p.window == T]
    assert combine(first) | {} == {"metric": "traffic_vehicles", "group": ROAD, "window": T.isoformat(), "window_s": 900,
                                   "sum": 36.0, "count": 4, "mean": 9.0, "min": 1.0, "max": 20.0}
    second = [p for p in shard0.values() if p.window == T + timedelta(minutes=15)]
    assert combine(second)["sum"] == 7.0


def test_parking_occupancy_per_neighbourhood_uses_latest_per_sensor() -> None:
    parts: dict = {}
    fold(parts, [ParkingOccupancyReported(**env("kiel:gaarden:sensor:p-1", 0), occupied=50, capacity=100),
                 ParkingOccupancyReported(**env("kiel:gaarden:sensor:p-1", 5), occupied=80, capacity=100)], SENSORS, 0)
    other: dict = {}
    fold(other, [ParkingOccupancyReported(**env("kiel:gaarden:sensor:p-2", 1), occupied=10, capacity=300)], SENSORS, 2)
    got = combine([p for p in [*parts.values(), *other.values()] if p.metric == "parking_occupancy"])
    assert got == {"metric": "parking_occupancy", "group": HOOD, "occupied": 90.0, "capacity": 400.0, "ratio": 0.225,
                   "sensors": 2}


def test_parking_hours_sum_occupied_and_offered_spaces_over_every_reading() -> None:
    """The day's parking curve: per neighbourhood and hour, occupied and offered spaces summed over the readings (late
    ones to their own hour), so that a reader's sum(occupied) / sum(capacity) is the hour's occupancy."""
    shard0: dict = {}
    shard1: dict = {}
    fold(shard0, [ParkingOccupancyReported(**env("kiel:gaarden:sensor:p-1", m), occupied=o, capacity=100)
                  for m, o in ((0, 50), (30, 70), (65, 90))], SENSORS, 0)
    fold(shard1, [ParkingOccupancyReported(**env("kiel:gaarden:sensor:p-2", 59), occupied=30, capacity=300),
                  ParkingOccupancyReported(**env("kiel:gaarden:sensor:p-2", 10), occupied=100, capacity=300)], SENSORS, 1)
    every = [*shard0.values(), *shard1.values()]

    def hour(metric: str, start: datetime) -> dict:
        return combine([p for p in every if p.metric == metric and p.window == start])

    occupied, offered = hour("parking_occupied_spaces", T), hour("parking_capacity_spaces", T)
    assert (occupied["sum"], occupied["count"], offered["sum"], offered["window_s"]) == (250.0, 4, 800.0, 3600)
    assert occupied["sum"] / offered["sum"] == pytest.approx(0.3125)
    later = T + timedelta(hours=1)
    assert (hour("parking_occupied_spaces", later)["sum"], hour("parking_capacity_spaces", later)["sum"]) == (90.0, 100.0)
    # the current value still holds the newest reading per car park
    current = combine([p for p in every if p.metric == "parking_occupancy"])
    assert (current["occupied"], current["capacity"]) == (120.0, 400.0)


def test_hourly_air_quality_mean_and_round_trip() -> None:
    parts: dict = {}
    readings = [AirQualityMeasured(**env("kiel:gaarden:sensor:a-1", m), no2_ugm3=no2, pm10_ugm3=10, pm25_ugm3=5)
                for m, no2 in ((0, 20.0), (30, 40.0), (59, 30.0), (61, 99.0))]
    changed = fold(parts, readings, SENSORS, 0)
    no2 = [p for p in parts.values() if p.metric == "air_no2_ugm3" and p.window == T]
    assert combine(no2)["mean"] == pytest.approx(30.0)
    assert all(Partial.from_json(p.to_json()) == p for p in changed.values())
    with pytest.raises(ValueError, match="different aggregates"):
        combine(list(parts.values()))
