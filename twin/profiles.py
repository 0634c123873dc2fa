"""Plausible, synthetic sensor signals for the simulator (pure functions of time and a seeded generator)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np


def hour_of_day(t: datetime) -> float:
    return t.hour + t.minute / 60 + t.second / 3600


def traffic_profile(t: datetime) -> float:
    """Relative traffic, 0..1: morning and afternoon peaks, quiet night, lower at weekends."""
    h = hour_of_day(t)
    base = 0.08 + 0.9 * math.exp(-((h - 7.75) ** 2) / 1.2) + 0.85 * math.exp(-((h - 16.75) ** 2) / 2.0)
    base += 0.45 * math.exp(-((h - 12.5) ** 2) / 8.0)
    return min(1.0, base * (0.65 if t.weekday() >= 5 else 1.0))


def parking_fill(t: datetime) -> float:
    """Relative car-park occupancy, 0..1: fills in the morning, empties in the evening."""
    h = hour_of_day(t)
    day = 1 / (1 + math.exp(-(h - 8.5) * 1.6)) - 1 / (1 + math.exp(-(h - 18.5) * 1.2))
    return min(0.98, max(0.05, 0.12 + 0.8 * day))


@dataclass(frozen=True)
class Surge:
    """A storm-surge episode: a smooth rise to *peak_m* above mean at *peak_at*, *duration_h* wide at half height."""

    peak_at: datetime
    peak_m: float = 1.95  # Kiel, 20 October 2023
    duration_h: float = 14.0

    def level(self, t: datetime) -> float:
        dh = (t - self.peak_at).total_seconds() / 3600
        sigma = self.duration_h / 2.355
        return self.peak_m * math.exp(-(dh**2) / (2 * sigma**2))


@dataclass
class WaterLevelModel:
    """Water level above mean at Kiel: negligible tide (M2 about 4 cm), Baltic seiche, local fjord oscillation."""

    seed: int = 0
    surge: Surge | None = None
    _phase: tuple[float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._phase = tuple(float(x) for x in rng.uniform(0, 2 * math.pi, 3))  # type: ignore[assignment]

    def level(self, t: datetime) -> float:
        s = t.timestamp() / 3600
        m2 = 0.04 * math.sin(2 * math.pi * s / 12.42 + self._phase[0])
        seiche = 0.18 * math.sin(2 * math.pi * s / 27.0 + self._phase[1])  # Baltic eigen-oscillation, about 27 h
        fjord = 0.03 * math.sin(2 * math.pi * s / 0.6 + self._phase[2])
        return m2 + seiche + fjord + (self.surge.level(t) if self.surge else 0.0)


def diurnal_temperature(t: datetime, mean_c: float = 10.0, amplitude_c: float = 4.0) -> float:
    return mean_c + amplitude_c * math.sin(2 * math.pi * (hour_of_day(t) - 9) / 24)


def step(t: datetime, seconds: float) -> datetime:
    return t + timedelta(seconds=seconds)
