"""Assigned against counted volumes: the fit per count station (GEH) and overall (R^2), and the demand adjusted to the
counts.

A count station counts both directions of its road: its assigned volume is the two-way volume of the road (the sum
over the road's links divided by its pieces). The demand is adjusted in two steps:

1. :func:`scale_to_counts`: a single factor on the whole demand that minimises the squared error between counted and
   assigned volumes, found by re-assigning (volumes are not linear in demand under congestion). It corrects the level
   of the SYNTHETIC demand, not its pattern.
2. :func:`estimate_od`: an OD matrix estimation that changes the pattern, the multiplicative gradient method of Spiess
   (1990, "A gradient approach for the O-D matrix adjustment problem"): with the link-use proportions of the current
   equilibrium (select-link analysis, :class:`twin.traffic.assign.SelectLink`: which share of each zone pair's trips
   passes each count station) held fixed, each cell moves by ``g <- g * (1 - lambda * dZ/dg)``, Z the squared error
   over the stations and lambda its minimising step; between a few such runs the matrix is re-assigned to equilibrium
   (the proportions change with congestion). Cells stay between ``1 / MAX_CHANGE`` and ``MAX_CHANGE`` times their
   prior, so the gravity structure is kept; zero cells stay zero; the same input gives the same matrix. The round
   whose equilibrium fits the counts best is kept (never worse than the prior). A station whose road no route of the
   demand uses cannot be matched by any matrix: it is reported, not fitted. Conflicting counts (two stations on the
   same flows) end at their least-squares compromise.

AequilibraE 1.7.2 has no OD matrix estimation (its select-link analysis works inside its own assignment only), so the
method is written here with numpy on the project's assignment."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from twin.traffic.assign import Assignment
from twin.traffic.network import Network, NetworkError

ROUNDS = 4
ODME_ROUNDS = 5  # equilibrium assignments after the first: each fixes the link-use proportions for the next steps
ODME_STEPS = 50  # gradient steps per round (the proportions held fixed)
MAX_CHANGE = 4.0  # a cell ends between a quarter and four times its prior value


class Count(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    station: str = Field(max_length=200, description="the counting sensor's id")
    road: str = Field(max_length=200, description="the road it counts (both directions)")
    vehicles_per_hour: float = Field(ge=0, le=100_000, allow_inf_nan=False)


def geh(model: float, count: float) -> float:
    """The GEH statistic of hourly flows: under 5 is a good match, over 10 a poor one."""
    return 0.0 if model + count == 0 else math.sqrt(2 * (model - count) ** 2 / (model + count))


def road_links(net: Network, roads: list[str]) -> dict[str, tuple[np.ndarray, int]]:
    """Per road: its link indices (empty if the network has none) and its pieces (a piece has a link each way)."""
    by_road: dict[str, list[int]] = {}
    for i, r in enumerate(net.road):
        by_road.setdefault(r, []).append(i)
    out = {}
    for r in roads:
        idx = np.array(by_road.get(r, []), dtype=np.int64)
        out[r] = (idx, max(1, len(idx) // 2))
    return out


def road_volumes(net: Network, volume: np.ndarray, roads: list[str]) -> dict[str, float]:
    return {r: float(volume[idx].sum()) / pieces if len(idx) else float("nan")
            for r, (idx, pieces) in road_links(net, roads).items()}


def counts_from(net: Network, volume: np.ndarray, roads: list[str], prefix: str = "synthetic") -> list[Count]:
    """SYNTHETIC counts (station ids start with *prefix*): the two-way volumes of *roads* in an assignment; tests and
    benchmarks make them from a known OD matrix to see whether the estimation finds its way back."""
    vols = road_volumes(net, volume, roads)
    return [Count(station=f"{prefix}:{r}", road=r, vehicles_per_hour=round(vols[r], 1)) for r in roads]


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


@dataclass
class Estimate:
    """An OD matrix estimated from counts, with its equilibrium and the fit at the prior and at the estimate."""

    demand: np.ndarray
    assignment: Assignment  # the estimate's equilibrium
    start: dict[str, Any]  # fit() at the prior
    after: dict[str, Any]  # fit() at the estimate
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per equilibrium: squared error, R^2, share GEH < 5
    unmatched: list[dict[str, Any]] = field(default_factory=list)  # stations no route of the demand passes

    def matrix_change(self, net: Network, prior: np.ndarray) -> dict[str, Any]:
        """How far the matrix moved: trips before and after, and the cell with the largest relative change."""
        cells = prior > 0
        rel = np.zeros_like(prior)
        rel[cells] = self.demand[cells] / prior[cells] - 1.0
        o, d = (int(x) for x in np.unravel_index(int(np.argmax(np.abs(rel))), rel.shape))
        return {"trips_before": round(float(prior.sum()), 1), "trips_after": round(float(self.demand.sum()), 1),
                "largest_cell_change": {"from": net.zones[o], "to": net.zones[d], "before": round(float(prior[o, d]), 3),
                                        "after": round(float(self.demand[o, d]), 3), "relative": round(float(rel[o, d]), 4)},
                "cells_changed_over_10_percent": int((np.abs(rel) > 0.1).sum()), "cells": int(cells.sum()),
                "max_change": MAX_CHANGE}


def _station_matrix(net: Network, counts: list[Count]) -> tuple[np.ndarray, list[tuple[np.ndarray, int]]]:
    """The selected links (every link of a counted road) and, per station, its rows among them and its pieces."""
    roads = road_links(net, sorted({c.road for c in counts}))
    missing = [c for c in counts if not len(roads[c.road][0])]
    if missing:
        c = missing[0]
        raise NetworkError(f"count station {c.station!r}: road {c.road!r} is not a road of the network "
                           f"({len(missing)} station(s) so); count on a road listed by GET /traffic/network")
    links = np.array(sorted({int(i) for idx, _ in roads.values() for i in idx}), dtype=np.int64)
    pos = {int(x): k for k, x in enumerate(links)}
    return links, [(np.array([pos[int(i)] for i in roads[c.road][0]]), roads[c.road][1]) for c in counts]


def _through(a: Assignment, rows: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Per station, the trips of each zone pair it counts (stations x zones x zones)."""
    if a.through is None:
        raise ValueError("estimate_od: assign_with(demand, links) must return assign(..., select=links)'s result")
    return np.stack([a.through[idx].sum(axis=0) / pieces for idx, pieces in rows])


def _gradient_steps(g: np.ndarray, p: np.ndarray, counted: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Spiess's multiplicative gradient steps on the cells *g* (their station proportions *p* held fixed)."""
    sse_prev = math.inf
    for _ in range(ODME_STEPS):
        r = p @ g - counted
        sse = float(r @ r)
        if sse >= sse_prev * (1 - 1e-9):
            break
        sse_prev = sse
        grad = p.T @ r
        if not len(grad):
            break
        d = -g * grad
        dv = p @ d
        den = float(dv @ dv)
        if den <= 0:
            break
        step = -float(r @ dv) / den
        if grad.max() > 0:
            step = min(step, 1.0 / float(grad.max()))  # no cell below zero (Spiess's bound)
        g = np.clip(g + step * d, lo, hi)
    return g


def estimate_od(net: Network, prior: np.ndarray, counts: list[Count],
                assign_with: Callable[[np.ndarray, np.ndarray], Assignment], rounds: int = ODME_ROUNDS,
                max_change: float = MAX_CHANGE) -> Estimate:
    """The OD matrix near *prior* whose equilibrium best matches *counts* (see the module's text).
    *assign_with(demand, links)* assigns to equilibrium with select-link analysis of *links*."""
    if not counts:
        raise NetworkError("estimate_od needs at least one count station")
    if max_change < 1:
        raise NetworkError(f"max_change {max_change:g} must be 1 or more (a cell's largest factor on its prior)")
    links, rows = _station_matrix(net, counts)
    counted = np.array([c.vehicles_per_hour for c in counts])
    cells = np.flatnonzero(prior.ravel() > 0)
    g0 = prior.ravel()[cells]
    lo, hi = g0 / max_change, g0 * max_change
    g = g0.copy()

    def equilibrium(cell_values: np.ndarray) -> tuple[np.ndarray, Assignment, np.ndarray, float]:
        flat = np.zeros(prior.size)
        flat[cells] = cell_values
        od = flat.reshape(prior.shape)
        a = assign_with(od, links)
        through = _through(a, rows).reshape(len(counts), -1)[:, cells]
        r = through.sum(axis=1) - counted
        return od, a, through, float(r @ r)

    od, a, through, sse = equilibrium(g)
    start = fit(net, a.volume, counts)
    best = (sse, od, a, through)
    history = [{"round": 0, "squared_error": round(sse, 3), "r2": start["r2"], "geh_under_5": start["geh_under_5"]}]
    for k in range(1, rounds + 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(g > 0, through / g, 0.0)  # station share of each cell's trips
        g_next = _gradient_steps(g, p, counted, lo, hi)
        if np.allclose(g_next, g, rtol=1e-9, atol=0):
            break
        g = g_next
        od, a, through, sse = equilibrium(g)
        f = fit(net, a.volume, counts)
        history.append({"round": k, "squared_error": round(sse, 3), "r2": f["r2"], "geh_under_5": f["geh_under_5"]})
        if sse < best[0]:
            best = (sse, od, a, through)
    _, od, a, through = best
    unmatched = [{"station": c.station, "road": c.road, "counted": c.vehicles_per_hour,
                  "reason": f"no route of the demand uses road {c.road}; no OD matrix near the prior can match its count"}
                 for c, t in zip(counts, through, strict=True) if t.sum() == 0 and c.vehicles_per_hour > 0]
    return Estimate(demand=od, assignment=a, start=start, after=fit(net, a.volume, counts), rounds=history,
                    unmatched=unmatched)
