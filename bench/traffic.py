"""Benchmark: relative gap against time for the traffic assignment, with baselines in the same run.

Networks: (a) the bundled Kiel pack (its roads, zones per neighbourhood, the SYNTHETIC gravity demand); (b) a generated
grid: ``--side`` x ``--side`` junctions joined both ways (side 160: 101,760 road links), ``--zones-side``^2 zones
(32: 1,024) whose centroids join every (side/zones-side)-th junction, BPR links with capacities and free-flow times
drawn from a fixed seed, and a gravity demand (exp(-0.05 x free-flow minutes)) scaled to ``--trips``.

Algorithms on each network: the project's conjugate Frank-Wolfe (twin.traffic.assign, scipy Dijkstra); plain
all-or-nothing + Frank-Wolfe (the same code with algorithm="fw"); and AequilibraE's bi-conjugate Frank-Wolfe when the
``bench`` extra is installed (``pip install -e .[bench]``), each until the gap target or ``--time-limit`` seconds.

Run: ``.venv/bin/python -m bench.traffic [--side 160 --zones-side 32 --trips 200000 --time-limit 120]``.
Prints one JSON line per run (network, algorithm, iterations, final gap, seconds, gap-vs-time trace).
"""

from __future__ import annotations

import argparse
import contextlib
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


def own(net: Network, od: np.ndarray, algorithm: str, gap: float, limit: float) -> dict[str, Any]:
    trace: list[tuple[int, float, float]] = []

    def note(i: int, g: float, s: float) -> None:
        trace.append((i, g, round(s, 3)))
        print(json.dumps({"progress": algorithm, "iteration": i, "gap": g, "seconds": round(s, 2)}), file=sys.stderr, flush=True)

    res = assign(net, od, gap=gap, max_iterations=100_000, algorithm=algorithm, max_seconds=limit, on_iteration=note)
    return {"algorithm": f"plietsch-{algorithm}", "iterations": res.iterations, "gap": res.gap, "seconds": round(res.seconds, 2),
            "converged": res.converged, "tstt": res.tstt, "objective": res.objective, "trace": _thin(trace)}


def aequilibrae(net: Network, od: np.ndarray, gap: float, limit: float, iterations: int) -> dict[str, Any] | None:
    try:
        import pandas as pd
        from aequilibrae.matrix import AequilibraeMatrix
        from aequilibrae.paths import Graph as AGraph
        from aequilibrae.paths import TrafficAssignment, TrafficClass
    except ImportError:
        return None
    z = len(net.zones)
    # AequilibraE's centroids are nodes 1..z that no route passes through: the origin node of each zone, and its
    # sink copy folded back onto it
    node = np.arange(net.n_nodes) + 1
    node[net.dest_node] = node[net.origin_node]
    order = np.concatenate([net.origin_node, np.setdiff1d(np.arange(net.n_nodes), np.concatenate([net.origin_node, net.dest_node]))])
    renum = np.zeros(net.n_nodes, dtype=np.int64)
    renum[order] = np.arange(1, len(order) + 1)
    renum[net.dest_node] = renum[net.origin_node]
    df = pd.DataFrame({"link_id": np.arange(1, net.n_links + 1), "a_node": renum[net.a], "b_node": renum[net.b], "direction": 1,
                       "free_flow_time": np.maximum(net.fft, 1e-6), "capacity": net.capacity, "b": net.alpha, "power": net.beta})
    t0 = time.perf_counter()
    g = AGraph()
    g.network = df
    g.prepare_graph(np.arange(1, z + 1))
    g.set_graph("free_flow_time")
    g.set_skimming(["free_flow_time"])
    g.set_blocked_centroid_flows(True)
    mat = AequilibraeMatrix()
    mat.create_empty(memory_only=True, zones=z, matrix_names=["demand"])
    mat.index[:] = np.arange(1, z + 1)
    mat.matrices[:, :, 0] = od
    mat.computational_view(["demand"])
    ta = TrafficAssignment()
    ta.set_classes([TrafficClass("car", g, mat)])
    ta.set_vdf("BPR")
    ta.set_vdf_parameters({"alpha": "b", "beta": "power"})
    ta.set_capacity_field("capacity")
    ta.set_time_field("free_flow_time")
    ta.set_algorithm("bfw")
    ta.max_iter = iterations
    ta.rgap_target = gap
    ta.set_cores(os.cpu_count() or 1)
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):  # AequilibraE's progress bars
        ta.execute()
    seconds = time.perf_counter() - t0
    rep = ta.report()
    gaps = [float(x) for x in rep["rgap"]]
    per = seconds / max(1, len(gaps))
    trace = [(i + 1, g_, round((i + 1) * per, 3)) for i, g_ in enumerate(gaps)]  # even spacing: AequilibraE logs no clock
    return {"algorithm": "aequilibrae-bfw", "iterations": len(gaps), "gap": gaps[-1], "seconds": round(seconds, 2),
            "converged": gaps[-1] < gap, "trace": _thin(trace), "cores": os.cpu_count(), "note": f"max_iter {iterations}"}


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
    ap.add_argument("--aeq-iterations", type=int, default=60, help="AequilibraE's iteration cap (it has no time limit)")
    ap.add_argument("--skip", default="", help="comma list of: pack, grid, fw, aequilibrae")
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
    if "grid" not in skip:
        t = time.perf_counter()
        net, od = grid(args.side, args.zones_side, args.trips)
        print(json.dumps({"grid": {"links": net.n_links, "road_links": int((net.alpha > 0).sum()), "zones": len(net.zones),
                                   "trips": float(od.sum()), "built_s": round(time.perf_counter() - t, 2)}}), flush=True)
        nets.append(("grid", net, od))
    for name, net, od in nets:
        runs = [own(net, od, "cfw", args.gap, args.time_limit)]
        if "fw" not in skip:
            runs.append(own(net, od, "fw", args.gap, args.time_limit))
        if "aequilibrae" not in skip:
            aeq = aequilibrae(net, od, args.gap, args.time_limit, args.aeq_iterations)
            if aeq is not None:
                runs.append(aeq)
        for r in runs:
            print(json.dumps({"network": name, "links": net.n_links, "zones": len(net.zones), **r}), flush=True)


if __name__ == "__main__":
    main()
