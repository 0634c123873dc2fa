"""Benchmark: relative gap against time for the traffic assignment, with baselines in the same run.

Networks: (a) the bundled Kiel pack (its roads, zones per neighbourhood, the SYNTHETIC gravity demand); (b) a generated
grid: ``--side`` x ``--side`` junctions joined both ways (side 160: 101,760 road links), ``--zones-side``^2 zones
(32: 1,024) whose centroids join every (side/zones-side)-th junction, BPR links with capacities and free-flow times
drawn from a fixed seed, and a gravity demand (exp(-0.05 x free-flow minutes)) scaled to ``--trips``.

Algorithms on each network, all through ``twin.traffic.assign.assign`` and measured with the same relative gap:
AequilibraE's bi-conjugate Frank-Wolfe (``bfw``, the engine for large networks, on 1 and 2 threads); the project's own
conjugate Frank-Wolfe (``cfw``: scipy Dijkstra, all-or-nothing loading in numpy; the engine for region packs); and plain
all-or-nothing + Frank-Wolfe (``fw``, the textbook baseline), each until the gap target or ``--time-limit`` seconds.

OD matrix estimation on the pack (case ``odme``): SYNTHETIC counts on ``--odme-stations`` primary/secondary roads from
the equilibrium of a "true" matrix (the preset times 3, times a fixed-seed factor per origin and per destination zone
between 0.4 and 2.5: another pattern, not only another level); from the preset, the single factor
(``scale_to_counts``, the baseline) and then the estimation (``estimate_od``), each with its seconds and its fit
(R^2, share of stations with GEH < 5, worst GEH).

Run: ``.venv/bin/python -m bench.traffic [--side 160 --zones-side 32 --trips 200000 --time-limit 120]``
(only the OD estimation: ``--skip grid,bfw,cfw,fw``).
Prints one JSON line per run (network, algorithm, iterations, final gap, seconds to the gap target, seconds in all with
the final skim, load average after the run, gap-vs-time trace).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from twin.traffic.assign import Graph, assign, shortest
from twin.traffic.network import Network


def grid(side: int, zones_side: int, trips: float, seed: int = 7) -> tuple[Network, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.arange(side * side).reshape(side, side)
    a = np.concatenate([ids[:, :-1].ravel(), ids[:-1, :].ravel()])
    b = np.concatenate([ids[:, 1:].ravel(), ids[1:, :].ravel()])
    a, b = np.concatenate([a, b]), np.concatenate([b, a])
    m = len(a)
    fft = rng.uniform(0.5, 1.5, m)  # minutes per block
    cap = rng.choice([500.0, 1000.0, 2000.0], m, p=[0.6, 0.3, 0.1])
    step = side // zones_side
    spots = ids[step // 2::step, step // 2::step][:zones_side, :zones_side].ravel()
    z = len(spots)
    n = side * side
    cen, sink = n + np.arange(z), n + z + np.arange(z)
    a = np.concatenate([a, cen, spots])
    b = np.concatenate([b, spots, sink])
    fft = np.concatenate([fft, np.full(2 * z, 0.1)])
    cap = np.concatenate([cap, np.full(2 * z, 1e6)])
    total = len(a)
    alpha = np.concatenate([np.full(m, 0.15), np.zeros(2 * z)])
    names = [f"n{i}" for i in range(n)] + [f"z{i}" for i in range(z)] + [f"z{i}>" for i in range(z)]
    net = Network(nodes=names, link_ids=[f"l{i}" for i in range(total)], a=a.astype(np.int64), b=b.astype(np.int64),
                  length_m=fft * 500, lanes=np.ones(total), capacity=cap, speed_kmh=np.full(total, 30.0), fft=fft,
                  alpha=alpha, beta=np.full(total, 4.0), road_class=["grid"] * total, zones=[f"z{i}" for i in range(z)],
                  origin_node=cen.astype(np.int64), dest_node=sink.astype(np.int64), road=[""] * total,
                  zone_group=[f"z{i}" for i in range(z)])
    skim, _ = shortest(Graph(net, np.ones(total, dtype=bool)), net.fft, None)
    w = np.exp(-0.05 * np.where(np.isfinite(skim), skim, 1e9)) * rng.uniform(0.5, 1.5, (z, z))
    np.fill_diagonal(w, 0.0)
    return net, w / w.sum() * trips


def own(net: Network, od: np.ndarray, algorithm: str, gap: float, limit: float, cores: int = 1) -> dict[str, Any]:
    trace: list[tuple[int, float, float]] = []

    def note(i: int, g: float, s: float) -> None:
        trace.append((i, g, round(s, 3)))
        print(json.dumps({"progress": algorithm, "iteration": i, "gap": g, "seconds": round(s, 2)}), file=sys.stderr, flush=True)

    res = assign(net, od, gap=gap, max_iterations=100_000, algorithm=algorithm, max_seconds=limit, on_iteration=note,
                 cores=cores)
    reached = next((s for _, g, s in trace if g < gap), None)
    return {"algorithm": algorithm + (f" ({cores} threads)" if algorithm == "bfw" else ""), "iterations": res.iterations,
            "gap": res.gap, "seconds_to_gap": reached, "seconds": round(res.seconds, 2), "converged": res.converged,
            "tstt": res.tstt, "objective": res.objective, "load": os.getloadavg(), "trace": _thin(trace)}


def odme(net: Network, preset: np.ndarray, stations: int, gap: float, seed: int = 11) -> dict[str, Any]:
    """The single factor and the OD estimation from the same SYNTHETIC counts (see the module's text)."""
    from twin.traffic.counts import counts_from, estimate_od, fit, scale_to_counts

    rng = np.random.default_rng(seed)
    z = len(net.zones)
    truth = preset * 3 * rng.uniform(0.4, 2.5, z)[:, None] * rng.uniform(0.4, 2.5, z)[None, :]
    roads = sorted({r for r, c in zip(net.road, net.road_class, strict=True) if c in ("primary", "secondary")})
    roads = roads[:: max(1, len(roads) // stations)][:stations]
    counts = counts_from(net, assign(net, truth, gap=gap).volume, roads)

    def summary(f: dict[str, Any]) -> dict[str, Any]:
        return {"r2": f["r2"], "geh_under_5": f["geh_under_5"], "worst_geh": max(s["geh"] for s in f["stations"])}

    t = time.perf_counter()
    factor = scale_to_counts(net, counts, lambda f: assign(net, preset * f, gap=gap).volume)
    scaled = fit(net, assign(net, preset * factor, gap=gap).volume, counts)
    t_factor = time.perf_counter() - t
    t = time.perf_counter()
    est = estimate_od(net, preset * factor, counts, lambda od, links: assign(net, od, gap=gap, select=links))
    t_odme = time.perf_counter() - t
    return {"case": "odme", "links": net.n_links, "zones": z, "stations": len(counts), "trips_true": round(float(truth.sum()), 1),
            "preset": summary(fit(net, assign(net, preset, gap=gap).volume, counts)),
            "single_factor": {"factor": factor, "seconds": round(t_factor, 2), **summary(scaled)},
            "odme_after_factor": {"seconds": round(t_odme, 2), "rounds": len(est.rounds) - 1, **summary(est.after),
                                  "trips": round(float(est.demand.sum()), 1),
                                  "largest_cell_change": est.matrix_change(net, preset * factor)["largest_cell_change"]["relative"]},
            "load": os.getloadavg()}


def _thin(trace: list[tuple[int, float, float]], keep: int = 25) -> list[tuple[int, float, float]]:
    if len(trace) <= keep:
        return trace
    idx = sorted(set(np.linspace(0, len(trace) - 1, keep).astype(int).tolist()))
    return [trace[i] for i in idx]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=160)
    ap.add_argument("--zones-side", type=int, default=32)
    ap.add_argument("--trips", type=float, default=200_000.0)
    ap.add_argument("--gap", type=float, default=1e-4)
    ap.add_argument("--pack-factor", type=float, default=4.0,
                    help="the pack's synthetic demand times this (at 1 it is uncongested: one iteration)")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per run before it stops short of the gap")
    ap.add_argument("--cores", default="1,2", help="comma list of thread counts for AequilibraE's all-or-nothing (bfw)")
    ap.add_argument("--odme-stations", type=int, default=30, help="count stations for the OD estimation case")
    ap.add_argument("--skip", default="", help="comma list of: pack, grid, bfw, cfw, fw, odme")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform(),
                                  "load": os.getloadavg()}}), flush=True)
    nets: list[tuple[str, Network, np.ndarray]] = []
    if "pack" not in skip:
        from twin.region import bundled_pack
        from twin.traffic.scenario import Context

        ctx = Context.of(bundled_pack())
        nets.append((f"kiel-pack x{args.pack_factor:g}", ctx.net, ctx.demand * args.pack_factor))
        if "odme" not in skip:
            print(json.dumps({"network": "kiel-pack", **odme(ctx.net, ctx.demand, args.odme_stations, args.gap)}), flush=True)
    if "grid" not in skip:
        t = time.perf_counter()
        net, od = grid(args.side, args.zones_side, args.trips)
        print(json.dumps({"grid": {"links": net.n_links, "road_links": int((net.alpha > 0).sum()), "zones": len(net.zones),
                                   "trips": float(od.sum()), "built_s": round(time.perf_counter() - t, 2)}}), flush=True)
        nets.append(("grid", net, od))
    for name, net, od in nets:
        runs = [("bfw", c) for c in sorted({int(x) for x in args.cores.split(",")}) if "bfw" not in skip]
        runs += [(alg, 1) for alg in ("cfw", "fw") if alg not in skip]
        for alg, cores in runs:
            r = own(net, od, alg, args.gap, args.time_limit, cores)
            print(json.dumps({"network": name, "links": net.n_links, "zones": len(net.zones), **r}), flush=True)


if __name__ == "__main__":
    main()
