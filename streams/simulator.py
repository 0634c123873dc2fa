"""The simulator: a data source that produces plausible, synthetic readings for the sensors of a region pack.

It goes through the same topics and encoding as any real source; it never stands in for the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from streams.catalogue import SENSOR_TOPICS
from streams.publisher import EventPublisher
from twin.entities import Sensor
from twin.events import (
    AirQualityMeasured,
    BikeStationStatusReported,
    ParkingOccupancyReported,
    Reading,
    TrafficCounted,
    WaterLevelMeasured,
    WeatherObserved,
)
from twin.profiles import Surge, WaterLevelModel, diurnal_temperature, parking_fill, traffic_profile
from twin.region import RegionPack

SOURCE = "simulator (synthetic)"


@dataclass
class SimulatorConfig:
    rate: float = 50.0  # events per second of wall time
    seed: int = 42
    start: datetime | None = None  # simulated clock start; default now
    time_scale: float = 1.0  # simulated seconds per wall second
    surge: Surge | None = None


class ReadingFactory:
    """Makes one reading for a sensor at a simulated time; deterministic for a seed."""

    def __init__(self, pack: RegionPack, seed: int, surge: Surge | None = None, interval_s: int = 300) -> None:
        self.rng = np.random.default_rng(seed)
        self.interval_s = interval_s  # simulated seconds between two readings of one sensor
        self.region = pack.id
        self.water = WaterLevelModel(seed=seed, surge=surge)
        self.capacity = {sid: int(self.rng.integers(60, 600)) for sid, s in pack.sensors.items() if s.sensor_kind == "parking"}
        self.docks = {sid: int(self.rng.integers(8, 30)) for sid, s in pack.sensors.items() if s.sensor_kind == "bike_share"}
        self.bikes = {sid: int(d // 2) for sid, d in self.docks.items()}
        self.make: dict[str, Callable[[Sensor, datetime], Reading]] = {
            "water_level": self._water, "traffic_count": self._traffic, "parking": self._parking,
            "air_quality": self._air, "weather": self._weather, "bike_share": self._bike,
        }

    def _env(self, s: Sensor, t: datetime) -> dict[str, object]:
        return {"entity_id": s.id, "region": self.region, "occurred_at": t, "source": SOURCE}

    def _water(self, s: Sensor, t: datetime) -> Reading:
        return WaterLevelMeasured(**self._env(s, t), level_m=round(self.water.level(t) + self.rng.normal(0, 0.01), 3))

    def _traffic(self, s: Sensor, t: datetime) -> Reading:
        lam = 110 * traffic_profile(t) * self.interval_s / 300  # up to about 1,300 vehicles an hour on a main street
        return TrafficCounted(**self._env(s, t), vehicles=int(self.rng.poisson(lam)), interval_s=self.interval_s,
                              mean_speed_kmh=round(float(max(5.0, 48 - 20 * traffic_profile(t) + self.rng.normal(0, 3))), 1))

    def _parking(self, s: Sensor, t: datetime) -> Reading:
        cap = self.capacity[s.id]
        occ = int(np.clip(round(cap * parking_fill(t) + self.rng.normal(0, cap * 0.03)), 0, cap))
        return ParkingOccupancyReported(**self._env(s, t), occupied=occ, capacity=cap)

    def _air(self, s: Sensor, t: datetime) -> Reading:
        tr = traffic_profile(t)
        return AirQualityMeasured(**self._env(s, t), no2_ugm3=round(float(max(0, 12 + 35 * tr + self.rng.normal(0, 4))), 1),
                                  pm10_ugm3=round(float(max(0, 14 + 10 * tr + self.rng.normal(0, 3))), 1),
                                  pm25_ugm3=round(float(max(0, 8 + 6 * tr + self.rng.normal(0, 2))), 1))

    def _weather(self, s: Sensor, t: datetime) -> Reading:
        return WeatherObserved(**self._env(s, t), temperature_c=round(diurnal_temperature(t) + self.rng.normal(0, 0.3), 1),
                               wind_speed_ms=round(float(abs(self.rng.normal(6, 2.5))), 1),
                               wind_dir_deg=round(float(self.rng.uniform(180, 300)), 0),
                               precipitation_mm=round(float(max(0.0, self.rng.normal(-0.5, 0.6))), 1))

    def _bike(self, s: Sensor, t: datetime) -> Reading:
        docks = self.docks[s.id]
        self.bikes[s.id] = int(np.clip(self.bikes[s.id] + self.rng.integers(-2, 3), 0, docks))
        return BikeStationStatusReported(**self._env(s, t), bikes_available=self.bikes[s.id],
                                         docks_available=docks - self.bikes[s.id])

    def reading(self, sensor: Sensor, t: datetime) -> Reading:
        return self.make[sensor.sensor_kind](sensor, t)


def readings(pack: RegionPack, count: int, seed: int = 42, start: datetime | None = None,
             spacing_s: float = 1.0, surge: Surge | None = None) -> Iterator[Reading]:
    """*count* readings round-robin over the pack's sensors, *spacing_s* simulated seconds apart."""
    factory = ReadingFactory(pack, seed, surge)
    sensors = sorted(pack.sensors.values(), key=lambda s: s.id)
    t0 = start or datetime.now(UTC)
    for i in range(count):
        yield factory.reading(sensors[i % len(sensors)], t0 + timedelta(seconds=i * spacing_s))


def run(pack: RegionPack, publisher: EventPublisher, cfg: SimulatorConfig, limit: int | None = None,
        on_progress: Callable[[int, float], None] | None = None, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Produce readings at *cfg.rate* per wall second until *limit* or until *should_stop*; returns the count."""
    sensors = sorted(pack.sensors.values(), key=lambda s: s.id)
    if not sensors:
        raise ValueError(f"region pack {pack.id!r} has no sensors to simulate")
    # each sensor reports once per round over all sensors: that is its counting interval in simulated time
    factory = ReadingFactory(pack, cfg.seed, cfg.surge, interval_s=max(1, round(len(sensors) / cfg.rate * cfg.time_scale)))
    sim_start = cfg.start or datetime.now(UTC)
    wall_start = time.monotonic()
    sent = 0
    last_report = wall_start
    while not should_stop() and (limit is None or sent < limit):
        elapsed = time.monotonic() - wall_start
        due = int(elapsed * cfg.rate) + 1
        if limit is not None:
            due = min(due, limit)
        while sent < due:
            sensor = sensors[sent % len(sensors)]
            t = sim_start + timedelta(seconds=(sent / cfg.rate) * cfg.time_scale)
            publisher.add(SENSOR_TOPICS[sensor.sensor_kind].name, sensor.id, factory.reading(sensor, t))
            sent += 1
        publisher.tick()
        now = time.monotonic()
        if on_progress and now - last_report >= 10.0:
            on_progress(sent, sent / max(now - wall_start, 1e-9))
            last_report = now
        time.sleep(max(0.0, min(0.02, (sent + 1) / cfg.rate - (time.monotonic() - wall_start))))
    publisher.flush()
    return sent
