"""Traffic what-if scenarios on a fork of the twin: closures (links or pack roads, or every road a flood scenario
cuts), lanes closed, extra trips to a zone; assigned to equilibrium and compared with the baseline (the same
network and demand without the changes).

Results: per link volume, v/c, travel time and their difference from the baseline; zone-to-zone and
neighbourhood-to-neighbourhood travel times; vehicle-hours and vehicle-kilometres travelled; zone pairs that no
route joins any more; the traffic that used the closed links in the baseline and the links that gained the most
(the difference of the two equilibria, which mixes the closed links' traffic with every other pair that shifted).

Select-link analysis of closures (``select_link`` in the summary): the baseline runs with select-link on the closed
links (:class:`twin.traffic.assign.SelectLink`): per closed link, the zone and neighbourhood pairs whose equilibrium
trips used it. The displaced trips are, per zone pair, its baseline trips over at least one closed link: a path over
two closed links counts once (so ``displaced_trips`` can be less than ``displaced_volume``, the sum of the closed links'
baseline volumes). Where they went: the scenario runs with that sub-matrix as select-OD (``assign(select_od=...)``,
the same mechanism: its all-or-nothing load on each iteration's shortest paths, mixed with the iteration's step), so
its per-link volumes (``displaced_volume`` per link in the GeoJSON, the top links in ``went_to``) are the scenario
equilibrium's paths of exactly those trips; pairs that no route joins any more are reported as unreachable, not lost.
Both analyses need the project's solver (cfw): on networks where ``auto`` would pick AequilibraE's bfw (from
:data:`twin.traffic.assign.LARGE_NETWORK_LINKS` links on), a scenario with closures runs cfw, and says so
(``select_link.solver``, ``solver_fallback``).

With counts (``counts``, or ``live_counts`` resolved by the API), the baseline demand is first adjusted to them
(:mod:`twin.traffic.counts`: a single factor, then by default an OD matrix estimation of the pattern) and the fit is
reported before, after the factor and at the end (``count_fit``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from twin.region import RegionPack
from twin.traffic.assign import LARGE_NETWORK_LINKS, Assignment, Graph, SelectLink, assign, shortest
from twin.traffic.counts import Count, estimate_od, fit, scale_to_counts
from twin.traffic.network import Network, NetworkError
from twin.traffic.pack import PRESET, Zone, gravity, network_of

MAX_ITEMS = 5000
TOP = 20


class LaneClosure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    link: str = Field(max_length=200, description="link id or region-pack road id (then every link of that road)")
    lanes_closed: int = Field(default=1, ge=1, le=10, description="lanes closed; all of them closes the link")


class ExtraDemand(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    zone: str = Field(max_length=200, description="zone id, or a neighbourhood id (then its zones by attraction)")
    trips: float = Field(gt=0, le=1_000_000, allow_inf_nan=False, description="extra trips to it in the hour, "
                                                                              "from every other zone by its production")
    note: str = Field(default="", max_length=200, description="e.g. 'Kieler Woche, Saturday evening'")


class TrafficRequest(BaseModel):
    """A traffic what-if. ``kind`` tells it from a storm-surge request on the same topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["traffic"] = "traffic"
    name: str = Field(default="", max_length=200)
    closures: list[str] = Field(default_factory=list, max_length=MAX_ITEMS, description="link or road ids to close")
    closures_from_flood: str | None = Field(default=None, max_length=200, description=(
        "a completed storm-surge scenario id: every road it cuts (deeper than 0.3 m at its peak) is closed"))
    lane_closures: list[LaneClosure] = Field(default_factory=list, max_length=MAX_ITEMS)
    live_road_works: bool = Field(default=False, description=(
        "also close the lanes of the road works the twin knows to be under way at road_works_at (default: now); "
        "the API resolves them into lane_closures and lists them in road_works_applied"))
    road_works_at: AwareDatetime | None = Field(default=None, description="the time whose road works count")
    road_works_applied: list[str] = Field(default_factory=list, max_length=MAX_ITEMS,
                                          description="set by the API: the roads whose works were added")
    live_counts: bool = Field(default=False, description=(
        "adjust the SYNTHETIC demand to the twin's latest traffic counts and report the fit (R^2, GEH per station); "
        "the API resolves them into counts"))
    counts: list[Count] = Field(default_factory=list, max_length=MAX_ITEMS, description="counted volumes to fit to")
    count_method: Literal["odme", "factor"] = Field(default="odme", description=(
        "how the demand meets the counts: 'factor' scales the whole matrix by one factor (its level only); 'odme' "
        "does that first and then estimates the OD pattern (Spiess's gradient method on the equilibrium's "
        "link-use proportions, each cell within a factor 4 of the scaled gravity preset's)"))
    extra_demand: list[ExtraDemand] = Field(default_factory=list, max_length=100)
    gap: float = Field(default=1e-4, ge=1e-7, le=0.1, description="relative gap to stop at")
    max_iterations: int = Field(default=500, ge=1, le=5000)


def road_works_closures(roads: dict[str, dict[str, Any]], at: datetime) -> list[LaneClosure]:
    """Lane closures for the road works under way at *at*, from the twin's road states (``works`` as folded by
    twin.municipal.apply); works that close no lane (restrictions only) close nothing."""
    out = []
    for road, state in sorted(roads.items()):
        lanes = 0
        for w in state.get("works", []):
            try:
                on = datetime.fromisoformat(w["starts_at"]) <= at <= datetime.fromisoformat(w["ends_at"])
            except (KeyError, TypeError, ValueError):
                continue
            if on:
                lanes = max(lanes, int(w.get("lanes_closed", 0)))
        if lanes > 0:
            out.append(LaneClosure(link=road, lanes_closed=min(lanes, 10)))
    return out


@dataclass
class Context:
    """The pack's network, zones and baseline demand (built once per pack)."""

    net: Network
    zones: list[Zone]
    demand: np.ndarray
    free_flow_skim: np.ndarray

    @classmethod
    def of(cls, pack: RegionPack) -> Context:
        net, zones = network_of(pack)
        skim, _ = shortest(Graph(net, np.ones(net.n_links, dtype=bool)), net.fft, None)
        return cls(net, zones, gravity(net, zones, skim), skim)


def apply_changes(ctx: Context, req: TrafficRequest, flood_roads: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed link indices, capacities after lane closures, and the demand with the extra trips."""
    net = ctx.net
    closed = set(net.links_of(list(req.closures)).tolist())
    if flood_roads:
        known = [r for r in flood_roads if r in set(net.road)]
        closed |= set(net.links_of(known).tolist())
    capacity = net.capacity.copy()
    for lc in req.lane_closures:
        for i in net.links_of([lc.link]).tolist():
            left = net.lanes[i] - lc.lanes_closed
            if left <= 0:
                closed.add(i)
            else:
                capacity[i] = net.capacity[i] * left / net.lanes[i]
    demand = ctx.demand.copy()
    prod = np.array([z.production for z in ctx.zones])
    for ed in req.extra_demand:
        targets = [i for i, z in enumerate(ctx.zones) if z.id == ed.zone or z.neighbourhood == ed.zone]
        if not targets:
            raise NetworkError(f"unknown zone or neighbourhood {ed.zone!r}; zones are listed by GET /traffic/network")
        attr = np.array([ctx.zones[i].attraction for i in targets]) + 1e-9
        for t, share in zip(targets, attr / attr.sum(), strict=True):
            src = prod.copy()
            src[t] = 0.0
            src[~np.isfinite(ctx.free_flow_skim[:, t])] = 0.0  # only zones with a road to it send trips
            if src.sum() <= 0:
                raise NetworkError(f"no zone has a road to {ctx.zones[t].id}; extra trips there cannot arrive")
            demand[:, t] += ed.trips * share * src / src.sum()
    return np.array(sorted(closed), dtype=np.int64), capacity, demand


def _hood_times(net: Network, skim: np.ndarray, od: np.ndarray) -> dict[tuple[str, str], float | None]:
    """Mean zone-to-zone travel time between neighbourhoods, weighted by the trips (None: no route)."""
    groups = np.array(net.zone_group)
    out: dict[tuple[str, str], float | None] = {}
    for g in sorted(set(net.zone_group)):
        for h in sorted(set(net.zone_group)):
            rows, cols = groups == g, groups == h
            block, w = skim[np.ix_(rows, cols)], od[np.ix_(rows, cols)] + 1e-9
            ok = np.isfinite(block)
            if g == h:
                ok &= ~np.eye(block.shape[0], dtype=bool) if block.shape[0] == block.shape[1] else ok
            out[(g, h)] = round(float(np.average(block[ok], weights=w[ok])), 3) if ok.any() else None
    return out


@dataclass
class TrafficRun:
    request: TrafficRequest
    net: Network
    base: Assignment
    run: Assignment
    closed: np.ndarray
    capacity: np.ndarray
    base_demand: np.ndarray
    demand: np.ndarray
    flood_roads: list[str]
    synthetic_inputs: list[str]
    count_fit: dict[str, Any] | None = None

    def displaced(self) -> np.ndarray:
        """Per link: the scenario volume of the trips that used a closed link in the baseline (0 without closures)."""
        v = self.run.od_volume
        return np.zeros(self.net.n_links) if v is None else v

    def links(self) -> list[dict[str, Any]]:
        net, b, r = self.net, self.base, self.run
        closed = set(self.closed.tolist())
        moved = self.displaced()
        out = []
        for i in range(net.n_links):
            if net.road_class[i] == "connector":
                continue
            out.append({"id": net.link_ids[i], "road": net.road[i], "road_class": net.road_class[i],
                        "lanes": int(net.lanes[i]), "capacity": round(float(self.capacity[i]), 1),
                        "closed": i in closed, "volume_before": round(float(b.volume[i]), 2), "volume": round(float(r.volume[i]), 2),
                        "volume_diff": round(float(r.volume[i] - b.volume[i]), 2),
                        "vc_before": round(float(b.volume[i] / net.capacity[i]), 4),
                        "vc": None if i in closed else round(float(r.volume[i] / self.capacity[i]), 4),
                        "time_before_min": round(float(b.cost[i]), 4), "time_min": None if i in closed else round(float(r.cost[i]), 4),
                        "displaced_volume": round(float(moved[i]), 2),
                        "geometry": net.geometry[i] if net.geometry else None})
        return out

    def geojson(self) -> dict[str, Any]:
        feats = [{"type": "Feature", "id": x["id"], "geometry": {"type": "LineString", "coordinates": x.pop("geometry")},
                  "properties": x} for x in self.links()]
        return {"type": "FeatureCollection", "features": feats}

    def zone_times(self) -> dict[str, Any]:
        def mat(s: np.ndarray) -> list[list[float | None]]:
            return [[None if not np.isfinite(v) else round(float(v), 3) for v in row] for row in s]

        return {"zones": self.net.zones, "neighbourhood": self.net.zone_group, "before_min": mat(self.base.skim),
                "after_min": mat(self.run.skim)}

    def summary(self) -> dict[str, Any]:
        net, b, r = self.net, self.base, self.run
        road = np.array([c != "connector" for c in net.road_class])

        def vht(a: Assignment) -> float:
            return round(float(np.sum(a.volume * a.cost)) / 60.0, 2)

        def vkt(a: Assignment) -> float:
            return round(float(np.sum(a.volume[road] * net.length_m[road])) / 1000.0, 2)

        diff = r.volume - b.volume
        open_road = road.copy()
        open_road[self.closed] = False
        gained = [i for i in np.argsort(-diff, kind="stable")[:TOP] if diff[i] > 0.5 and open_road[i]]
        hb, ha = _hood_times(net, b.skim, self.base_demand), _hood_times(net, r.skim, self.demand)
        pairs: list[dict[str, Any]] = []
        for (g, h), before in hb.items():
            after = ha[(g, h)]
            pairs.append({"from": g, "to": h, "before_min": before, "after_min": after,
                          "delay_min": None if before is None or after is None else round(after - before, 3)})
        delayed = sorted((p for p in pairs if p["delay_min"] is not None), key=lambda p: -float(p["delay_min"]))
        lost = [p for p in pairs if p["before_min"] is not None and p["after_min"] is None]
        vc = np.divide(r.volume, self.capacity, out=np.zeros_like(r.volume), where=open_road)
        return {
            "kind": "traffic", "name": self.request.name, "demand_preset": PRESET, "synthetic_inputs": self.synthetic_inputs,
            "links": int(road.sum()), "zones": len(net.zones), "trips_before": round(float(self.base_demand.sum()), 1),
            "trips": round(float(self.demand.sum()), 1),
            "closed_links": [net.link_ids[i] for i in self.closed.tolist()][:200], "closed_link_count": int(len(self.closed)),
            "flood_roads_closed": self.flood_roads,
            "baseline": b.summary(), "scenario": r.summary(),
            "vht": {"before": vht(b), "after": vht(r)}, "vkt": {"before": vkt(b), "after": vkt(r)},
            "max_vc": {"before": round(float((b.volume[road] / net.capacity[road]).max()), 4), "after": round(float(vc.max()), 4)},
            "displaced_volume": round(float(b.volume[self.closed].sum()), 1) if len(self.closed) else 0.0,
            "rerouted_volume": round(float(diff[open_road & (diff > 0)].sum()), 1),
            "displaced_from": [{"link": net.link_ids[i], "volume_before": round(float(b.volume[i]), 1)}
                               for i in sorted(self.closed.tolist(), key=lambda i: -b.volume[i])[:TOP]],
            "gained_most": [{"link": net.link_ids[i], "road": net.road[i], "volume_diff": round(float(diff[i]), 1)} for i in gained],
            "neighbourhood_times": pairs, "most_delayed_pairs": delayed[:5], "pairs_cut_off": lost,
            "unreachable_pairs": [{"from": o, "to": d, "trips": round(t, 2)} for o, d, t in r.unreachable][:200],
            "unreachable_pair_count": len(r.unreachable),
            "unreachable_trips": round(float(sum(t for *_, t in r.unreachable)), 1),
            "count_fit": self.count_fit,
            "select_link": self.select_link(),
        }

    def select_link(self) -> dict[str, Any] | None:
        """The closed links' traffic in the baseline (per link: its zone and neighbourhood pairs) and where it went in
        the scenario (see the module's doc); None without closures."""
        net, b, r = self.net, self.base, self.run
        if not len(self.closed) or b.through_any is None or r.od_volume is None:
            return None
        groups = sorted(set(net.zone_group))
        member = np.zeros((len(net.zones), len(groups)))
        member[np.arange(len(net.zones)), [groups.index(g) for g in net.zone_group]] = 1.0

        def top_pairs(trips: np.ndarray, names: list[str], n: int = 5) -> list[dict[str, Any]]:
            flat = np.argsort(-trips, axis=None, kind="stable")[:n]
            return [{"from": names[int(i) // trips.shape[1]], "to": names[int(i) % trips.shape[1]],
                     "trips": round(float(trips.flat[i]), 2)} for i in flat if trips.flat[i] > 0.005]

        per_link = []
        if b.through is not None:
            for k in sorted(range(len(self.closed)), key=lambda k: -b.volume[self.closed[k]])[:TOP]:
                i = int(self.closed[k])
                per_link.append({"link": net.link_ids[i], "road": net.road[i], "volume_before": round(float(b.volume[i]), 1),
                                 "zone_pairs": top_pairs(b.through[k], net.zones),
                                 "neighbourhood_pairs": top_pairs(member.T @ b.through[k] @ member, groups)})
        total = float(b.through_any.sum())
        lost = float(sum(t for *_, t in r.od_unreachable))
        reached = total - lost
        road = np.array([c != "connector" for c in net.road_class])
        moved = np.where(road, r.od_volume, 0.0)
        went = [{"link": net.link_ids[i], "road": net.road[i], "displaced_volume": round(float(moved[i]), 1),
                 "share": round(float(moved[i]) / reached, 4)}
                for i in np.argsort(-moved, kind="stable")[:TOP] if reached > 0 and moved[i] > 0.05]
        return {
            "solver": r.algorithm, "solver_fallback": net.n_links >= LARGE_NETWORK_LINKS,
            "solver_note": ("Select-Link/Select-OD rechnen mit dem projekteigenen Verfahren (cfw); ohne Sperrungen "
                            "nähme dieses große Netz AequilibraEs bfw") if net.n_links >= LARGE_NETWORK_LINKS else "",
            "displaced_trips": round(total, 1), "displaced_trips_rerouted": round(reached, 1),
            "displaced_trips_unreachable": round(lost, 1),
            "displaced_unreachable_pairs": [{"from": o, "to": d, "trips": round(t, 2)} for o, d, t in r.od_unreachable][:TOP],
            "per_link_pairs": b.through is not None, "closed_links": per_link, "went_to": went,
        }


def _fit_to_counts(ctx: Context, req: TrafficRequest, counts: list[Count]) -> tuple[Context, dict[str, Any]]:
    """The context with its demand adjusted to *counts* (req.count_method), and the fit before and after."""
    net = ctx.net

    def assigned_at(f: float) -> np.ndarray:
        return assign(net, ctx.demand * f, gap=req.gap, max_iterations=req.max_iterations).volume

    before = fit(net, assigned_at(1.0), counts)
    factor = scale_to_counts(net, counts, assigned_at)
    demand = ctx.demand * factor
    ignored = [{"station": c.station, "road": c.road, "reason": f"road {c.road} is not in the traffic network"}
               for c in req.counts if c.road not in set(net.road)]
    out: dict[str, Any] = {"method": req.count_method, "demand_factor": factor, "before": before,
                           "stations_ignored": len(ignored), "ignored": ignored[:TOP]}
    if req.count_method == "odme":
        est = estimate_od(net, demand, counts, lambda od, links: assign(
            net, od, gap=req.gap, max_iterations=req.max_iterations, select=links))
        out |= {"after_factor": est.start, "rounds": est.rounds, "unmatched": est.unmatched,
                "matrix": {"trips_preset": round(float(ctx.demand.sum()), 1), **est.matrix_change(net, demand)}}
        demand = est.demand
    return Context(net, ctx.zones, demand, ctx.free_flow_skim), out


def run(pack: RegionPack, req: TrafficRequest, flood_roads: list[str] | None = None, ctx: Context | None = None,
        on_iteration: Callable[[str, int, float], bool | None] | None = None) -> TrafficRun:
    """The baseline and the scenario, each to the requested gap. *on_iteration(phase, iteration, gap)* may return
    False to stop (the run then raises NetworkError('cancelled'))."""
    ctx = ctx or Context.of(pack)
    count_fit: dict[str, Any] | None = None
    counts = [c for c in req.counts if c.road in set(ctx.net.road)]
    if counts:
        ctx, count_fit = _fit_to_counts(ctx, req, counts)
    roads = set(ctx.net.road)
    flood_roads = sorted(r for r in flood_roads or [] if r in roads)  # a flood may cut roads cars do not use
    closed, capacity, demand = apply_changes(ctx, req, flood_roads)
    stopped = []

    def hook(phase: str) -> Callable[[int, float, float], bool]:
        def f(it: int, g: float, _s: float) -> bool:
            if on_iteration is not None and on_iteration(phase, it, g) is False:
                stopped.append(phase)
                return False
            return True
        return f

    z = len(ctx.net.zones)
    select = closed if len(closed) else None  # select-link on the closed links (per link if that fits in memory)
    base = assign(ctx.net, ctx.demand, gap=req.gap, max_iterations=req.max_iterations, on_iteration=hook("baseline"),
                  select=select, select_per_link=len(closed) * z * z <= SelectLink.MAX_CELLS)
    if stopped:
        raise NetworkError("cancelled")
    scen = assign(ctx.net.with_capacity(capacity), demand, gap=req.gap, max_iterations=req.max_iterations,
                  closed=closed, on_iteration=hook("scenario"), select_od=base.through_any)
    if stopped:
        raise NetworkError("cancelled")
    synthetic = [x for x in pack.synthetic_layers() if x in ("roads", "buildings", "neighbourhoods")] + ["demand"]
    if count_fit is not None:
        count_fit["after"] = fit(ctx.net, base.volume, counts)
    return TrafficRun(req, ctx.net, base, scen, closed, capacity, ctx.demand, demand, flood_roads, synthetic, count_fit)
