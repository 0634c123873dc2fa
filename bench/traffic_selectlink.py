"""Benchmark (issue 10 item 4): what the select-link / select-OD analysis of a closure costs. The scenario's two
assignments (baseline with select-link on the closed links, scenario with select-OD of the trips that used them), with
and without the analysis, on the same network, demand, closure and algorithm (cfw), in the same run.

Run: ``.venv/bin/python -m bench.traffic_selectlink pack`` (the Kiel pack at 1x and 4x demand, the busiest link and
the 20 busiest closed, medians of 5 alternating) or ``... grid`` (the 10^5-link grid of ``bench.traffic``, one link
closed, 3 iterations per assignment)."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from twin.traffic.assign import assign


def pair(net: Any, od: Any, closed: Any, analysis: bool, **kw: Any) -> tuple[float, int, int, float, float]:
    t = time.perf_counter()
    if analysis:
        b = assign(net, od, algorithm="cfw", select=closed, **kw)
        s = assign(net, od, algorithm="cfw", closed=closed, select_od=b.through_any, **kw)
    else:
        b = assign(net, od, algorithm="cfw", **kw)
        s = assign(net, od, algorithm="cfw", closed=closed, **kw)
    return time.perf_counter() - t, b.iterations, s.iterations, b.gap, s.gap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=("pack", "grid"))
    which = ap.parse_args().which
    if which == "pack":
        from twin.region import bundled_pack
        from twin.traffic.scenario import Context
        ctx = Context.of(bundled_pack())
        net = ctx.net
        for factor in (1.0, 4.0):
            od = ctx.demand * factor
            v = assign(net, od).volume
            road = np.array([c != "connector" for c in net.road_class])
            order = [int(i) for i in np.argsort(-v, kind="stable") if road[i]]
            for label, ids in (("busiest link", order[:1]), ("20 busiest links", order[:20])):
                closed = np.array(ids)
                res: dict[bool, list[tuple[float, int, int, float, float]]] = {}
                for analysis in (False, True, False, True, False, True, False, True, False, True):
                    res.setdefault(analysis, []).append(pair(net, od, closed, analysis))
                print(json.dumps({"net": f"kiel x{factor:g}", "closure": label, "load": os.getloadavg(),
                                  **{("with" if a else "without"): {"median_s": round(float(np.median([r[0] for r in rs])), 4),
                                     "iters": rs[0][1:3]} for a, rs in res.items()}}), flush=True)
    else:
        from bench.traffic import grid
        net, od = grid(160, 32, 200_000.0)
        v = assign(net, od, algorithm="cfw", max_iterations=1).volume
        one = np.array([int(np.argmax(np.where(net.alpha > 0, v, -1)))])
        for analysis in (False, True):
            r = pair(net, od, one, analysis, max_iterations=3)
            print(json.dumps({"net": "grid 160", "links": net.n_links, "zones": len(net.zones), "analysis": analysis,
                              "seconds (2 assignments x 3 iterations)": round(r[0], 1), "iters": r[1:3], "gaps": r[3:5],
                              "load": os.getloadavg()}), flush=True)


if __name__ == "__main__":
    main()
