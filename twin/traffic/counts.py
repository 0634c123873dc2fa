"""Assigned against counted volumes: the fit per count station (GEH) and overall (R^2), and a demand adjustment.

A count station counts both directions of its road: its assigned volume is the two-way volume of the road (the sum
over the road's links divided by its pieces). The adjustment is the simplest defensible one, a single factor on the
whole demand that minimises the squared error between counted and assigned volumes, found by re-assigning (volumes are
not linear in demand under congestion); it corrects the level of the SYNTHETIC demand, not its pattern. A full OD
matrix estimation is future work."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from twin.traffic.network import Network

ROUNDS = 4


class Count(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    station: str = Field(max_length=200, description="the counting sensor's id")
    road: str = Field(max_length=200, description="the road it counts (both directions)")
    vehicles_per_hour: float = Field(ge=0, le=100_000, allow_inf_nan=False)


def geh(model: float, count: float) -> float:
    """The GEH statistic of hourly flows: under 5 is a good match, over 10 a poor one."""
    return 0.0 if model + count == 0 else math.sqrt(2 * (model - count) ** 2 / (model + count))


def road_volumes(net: Network, volume: np.ndarray, roads: list[str]) -> dict[str, float]:
    out = {}
    for r in roads:
        idx = [i for i, x in enumerate(net.road) if x == r]
        out[r] = float(volume[idx].sum()) / max(1, len(idx) // 2) if idx else float("nan")
    return out


def fit(net: Network, volume: np.ndarray, counts: list[Count]) -> dict[str, Any]:
    """Counted against assigned per station (GEH) and overall (R^2 of the assigned on the counted)."""
    vols = road_volumes(net, volume, sorted({c.road for c in counts}))
    rows: list[dict[str, Any]] = [{"station": c.station, "road": c.road, "counted": c.vehicles_per_hour, "assigned": round(vols[c.road], 1),
             "geh": round(geh(vols[c.road], c.vehicles_per_hour), 2)} for c in counts if math.isfinite(vols[c.road])]
    if not rows:
        return {"stations": [], "r2": None, "geh_under_5": None}
    cnt = np.array([r["counted"] for r in rows])
    asg = np.array([r["assigned"] for r in rows])
    ss_tot = float(((cnt - cnt.mean()) ** 2).sum())
    r2 = None if ss_tot == 0 else round(1 - float(((cnt - asg) ** 2).sum()) / ss_tot, 4)
    return {"stations": rows, "r2": r2, "geh_under_5": round(sum(r["geh"] < 5 for r in rows) / len(rows), 3)}


def scale_to_counts(net: Network, counts: list[Count], assign_at: Callable[[float], np.ndarray]) -> float:
    """The factor on the demand whose assignment best matches the counts (least squares), by fixed-point rounds:
    f <- f * sum(c.v) / sum(v.v) with v the station volumes at f. *assign_at(f)* returns the link volumes."""
    roads = sorted({c.road for c in counts})
    counted = np.array([c.vehicles_per_hour for c in counts])
    factor = 1.0
    for _ in range(ROUNDS):
        vols = road_volumes(net, assign_at(factor), roads)
        v = np.array([vols[c.road] for c in counts])
        ok = np.isfinite(v)
        den = float((v[ok] ** 2).sum())
        if den == 0:
            break
        factor = min(100.0, max(0.01, factor * float((counted[ok] * v[ok]).sum()) / den))
    return round(factor, 6)
