"""Static user-equilibrium assignment with BPR link costs, by the conjugate Frank-Wolfe method (Mitradjieva and
Lindberg 2013): each iteration loads all demand on the shortest paths at the current costs (all-or-nothing, with
scipy.sparse.csgraph's Dijkstra), mixes that with the previous search direction so that successive directions are
conjugate with respect to the cost Hessian, and moves by the step that minimises the Beckmann objective along it.

Stops at the relative gap ``(sum t.x - sum t.y) / sum t.x`` (x the flows, y the all-or-nothing flows at the same
costs) below the target. Deterministic: the same input gives the same flows, bit for bit. Demand between zones that
no route joins is reported, never assigned."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from twin.traffic.aeq import bfw
from twin.traffic.network import Network, NetworkError

MIN_COST = 1e-9  # a link's cost never reaches 0: Dijkstra on sparse graphs needs positive weights
CONJUGATE_MAX = 0.99999
CHUNK_CELLS = 20_000_000  # origins x nodes per Dijkstra call (a float and an int each: about 240 MB)
# from this many links on, algorithm="auto" runs AequilibraE's bi-conjugate Frank-Wolfe (twin/traffic/aeq.py) instead of
# the project's conjugate Frank-Wolfe: measured in bench/traffic.py (BENCHMARKS.md, "Traffic assignment"), the project's
# solver is faster end to end on a region pack (10^3 links: AequilibraE's set-up alone takes longer) and AequilibraE's
# Cython all-or-nothing is several times faster per iteration on 10^5 links
LARGE_NETWORK_LINKS = 20_000
ALGORITHMS = ("auto", "cfw", "fw", "bfw")

Progress = Callable[[int, float, float], bool | None]  # (iteration, relative gap, seconds) -> False to stop


def bpr(net: Network, volume: np.ndarray) -> np.ndarray:
    return np.asarray(net.fft * (1.0 + net.alpha * (volume / net.capacity) ** net.beta))


def bpr_derivative(net: Network, volume: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        d = net.fft * net.alpha * net.beta * volume ** (net.beta - 1.0) / net.capacity**net.beta
    return np.where(volume > 0, d, 0.0)


def beckmann(net: Network, volume: np.ndarray) -> float:
    """The Beckmann objective: the sum over links of the integral of the link cost from 0 to the volume."""
    ratio = volume / net.capacity
    return float(np.sum(net.fft * (volume + net.alpha * net.capacity * ratio ** (net.beta + 1.0) / (net.beta + 1.0))))


@dataclass
class Graph:
    """The links usable by the shortest-path search; among parallel links the cheapest (then the first) is used."""

    net: Network
    active: np.ndarray  # bool per link

    def matrix(self, cost: np.ndarray) -> tuple[csr_matrix, np.ndarray, np.ndarray]:
        n = self.net.n_nodes
        idx = np.flatnonzero(self.active)
        order = np.lexsort((idx, cost[idx], self.net.b[idx], self.net.a[idx]))
        sel = idx[order]
        keys = self.net.a[sel] * n + self.net.b[sel]
        first = np.ones(len(sel), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        sel, keys = sel[first], keys[first]
        m = csr_matrix((np.maximum(cost[sel], MIN_COST), (self.net.a[sel], self.net.b[sel])), shape=(n, n))
        return m, keys, sel


class SelectLink:
    """Select-link analysis: for each of the selected *links*, the trips of every zone pair whose path runs over it
    (``links x zones x zones``, :attr:`aon`; left out with ``per_link=False``), and the trips of every zone pair whose
    path runs over at least one of them (:attr:`any`: a path over two selected links counts once). With *od* (a
    sub-matrix of the demand, zones x zones) also select-OD: the link loads of that sub-matrix on the same paths
    (:attr:`od_loads`). :func:`shortest` fills them with the all-or-nothing paths' share; :func:`assign` mixes them with
    the same weights as the link volumes (all parts live in one buffer, :attr:`buf`, mixed as one), so that the result
    is the equilibrium's."""

    MAX_CELLS = 50_000_000  # selected links x zones x zones (400 MB of floats)

    def __init__(self, net: Network, links: np.ndarray, od: np.ndarray | None = None, per_link: bool = True) -> None:
        self.links = np.asarray(links, dtype=np.int64)
        z = len(net.zones)
        k = len(self.links) if per_link else 0
        if k * z * z > self.MAX_CELLS:
            raise NetworkError(f"select-link analysis of {len(self.links)} links x {z} x {z} zone pairs is more than "
                               f"{self.MAX_CELLS:,} cells; select fewer links")
        if len(self.links) and (self.links.min() < 0 or self.links.max() >= net.n_links):
            raise NetworkError(f"selected link index {int(self.links.max())} is outside 0..{net.n_links - 1}")
        if od is not None:
            check_demand(net, od)
        self.pos = np.full(net.n_links, -1, dtype=np.int64)
        self.pos[self.links] = np.arange(len(self.links))
        self.per_link = per_link
        self.od = od
        self.buf = np.zeros(k * z * z + z * z + (net.n_links if od is not None else 0))
        self.aon, self.any, self.od_loads = self.parts(self.buf, net)

    def parts(self, buf: np.ndarray, net: Network) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of *buf* (laid out as :attr:`buf`): per-link trips, trips over any selected link, select-OD loads."""
        z = len(net.zones)
        k = len(self.links) if self.per_link else 0
        return (buf[:k * z * z].reshape(k, z, z), buf[k * z * z:(k + 1) * z * z].reshape(z, z),
                buf[(k + 1) * z * z:])


def shortest(graph: Graph, cost: np.ndarray, demand: np.ndarray | None,
             select: SelectLink | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Zone-to-zone shortest travel times (inf where no route) and, if demand is given, its all-or-nothing loads (and,
    with *select*, the select-link trips and select-OD loads of the same paths in ``select.buf``)."""
    net = graph.net
    n, z = net.n_nodes, len(net.zones)
    m, keys, sel = graph.matrix(cost)
    skim = np.full((z, z), np.inf)
    loads = np.zeros(net.n_links)
    sub = None if select is None else select.od
    if select is not None:
        select.buf[:] = 0.0
    chunk = max(1, CHUNK_CELLS // max(n, 1))
    for lo in range(0, z, chunk):
        zs = np.arange(lo, min(z, lo + chunk))
        dist, pred = dijkstra(m, directed=True, indices=net.origin_node[zs], return_predecessors=True)
        skim[zs] = dist[:, net.dest_node]
        if demand is None:
            continue
        rows, cols = np.nonzero((demand[zs] > 0) | (sub[zs] > 0) if sub is not None else demand[zs] > 0)
        cur = net.dest_node[cols]
        keep = np.isfinite(dist[rows, cur]) & (cur != net.origin_node[zs][rows])
        rows, cols, cur, w = rows[keep], cols[keep], cur[keep], demand[zs][rows[keep], cols[keep]]
        w_sub = sub[zs][rows, cols] if sub is not None else w
        start = net.origin_node[zs][rows]
        hit = np.zeros(len(rows), dtype=bool)  # the pair's path has passed a selected link
        # select-link: flat index into select.buf and trips, per step of the walk
        cells: list[np.ndarray] = []
        trips: list[np.ndarray] = []
        k = len(select.aon) if select is not None else 0
        while len(cur):  # walk every OD pair's path back to its origin, all pairs at once
            p = pred[rows, cur]
            link = sel[np.searchsorted(keys, p * n + cur)]
            loads += np.bincount(link, weights=w, minlength=net.n_links)
            if select is not None:
                j = select.pos[link]
                on = j >= 0
                if on.any():
                    pair, w_on = zs[rows[on]] * z + cols[on], w[on]
                    if select.per_link:
                        cells.append(j[on] * z * z + pair)
                        trips.append(w_on)
                    first = ~hit[on]  # the pair's first selected link on this path: counted once in select.any
                    cells.append(k * z * z + pair[first])
                    trips.append(w_on[first])
                    hit |= on
                if sub is not None:  # select-OD: loaded per step like the links' loads (a cell list would be long)
                    select.od_loads += np.bincount(link, weights=w_sub, minlength=net.n_links)
            going = p != start
            rows, cols, cur, w, start = rows[going], cols[going], p[going], w[going], start[going]
            w_sub, hit = w_sub[going], hit[going]
        if select is not None and cells:
            end = (k + 1) * z * z
            select.buf[:end] += np.bincount(np.concatenate(cells), weights=np.concatenate(trips), minlength=end)
    return skim, loads


@dataclass
class Assignment:
    volume: np.ndarray
    cost: np.ndarray
    skim: np.ndarray  # zone-to-zone travel times at the final costs (inf: no route)
    iterations: int
    gap: float
    converged: bool
    objective: float
    tstt: float  # total system travel time: sum of volume x cost
    seconds: float
    unreachable: list[tuple[str, str, float]]  # (origin zone, destination zone, trips not assigned)
    history: list[tuple[int, float, float]] = field(default_factory=list)  # (iteration, gap, seconds)
    algorithm: str = "cfw"
    # select-link analysis (assign(select=...)): per selected link, the equilibrium trips of each zone pair over it
    through: np.ndarray | None = None
    # ... and per zone pair its equilibrium trips over at least one selected link (a path over two counts once)
    through_any: np.ndarray | None = None
    # select-OD (assign(select_od=...)): the sub-matrix's equilibrium link volumes, and its pairs that no route joins
    od_volume: np.ndarray | None = None
    od_unreachable: list[tuple[str, str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, float | int | bool | str]:
        return {"algorithm": self.algorithm, "iterations": self.iterations, "relative_gap": self.gap,
                "converged": self.converged, "beckmann_objective": self.objective, "tstt": self.tstt,
                "seconds": round(self.seconds, 3), "unreachable_pairs": len(self.unreachable),
                "unreachable_trips": float(sum(t for _, _, t in self.unreachable))}


def check_demand(net: Network, demand: np.ndarray) -> None:
    z = len(net.zones)
    if demand.shape != (z, z):
        raise NetworkError(f"demand is {demand.shape[0]} x {demand.shape[1]}, the network has {z} zones")
    bad = ~np.isfinite(demand) | (demand < 0)
    if bad.any():
        o, d = (int(x) for x in np.argwhere(bad)[0])
        raise NetworkError(f"demand {net.zones[o]} -> {net.zones[d]} is {float(demand[o, d]):g}; trips must be 0 or more")


def relative_gap(od: np.ndarray, skim: np.ndarray, cost: np.ndarray, x: np.ndarray) -> float:
    """``(sum t.x - sum t.y) / sum t.x``: t the link costs at the flows x, y the all-or-nothing flows at t (whose total
    cost is the demand times the shortest travel times)."""
    tx = float(np.dot(cost, x))
    ty = float(np.sum(od[od > 0] * skim[od > 0]))
    return max(0.0, (tx - ty) / tx) if tx > 0 else 0.0


def _line_search(net: Network, x: np.ndarray, d: np.ndarray) -> float:
    """The step in [0, 1] that minimises the Beckmann objective along x + step * d (bisection on its derivative)."""
    def slope(s: float) -> float:
        return float(np.dot(bpr(net, x + s * d), d))

    if slope(1.0) <= 0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if slope(mid) > 0:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def assign(net: Network, demand: np.ndarray, gap: float = 1e-4, max_iterations: int = 1000,
           closed: np.ndarray | None = None, on_iteration: Progress | None = None, algorithm: str = "auto",
           max_seconds: float | None = None, cores: int = 1, select: np.ndarray | None = None,
           select_od: np.ndarray | None = None, select_per_link: bool = True) -> Assignment:
    """Equilibrium flows for *demand* (zones x zones) on *net*; links in *closed* (indices) carry nothing.
    *algorithm*: ``cfw`` (the project's conjugate Frank-Wolfe), ``fw`` (plain Frank-Wolfe, the textbook baseline),
    ``bfw`` (AequilibraE's bi-conjugate Frank-Wolfe on *cores* threads; more than one thread can change the last bits)
    or ``auto`` (``bfw`` from :data:`LARGE_NETWORK_LINKS` links on, else ``cfw``). The relative gap reported at the
    end is the project's own, ``(sum t.x - sum t.y) / sum t.x`` at the final flows, for every algorithm.

    *select* (link indices) asks for a select-link analysis (:class:`SelectLink`, in ``Assignment.through``): the
    project's solvers carry it through their iterations, so ``auto`` then means ``cfw`` and ``bfw`` is refused.
    ``select_per_link=False`` keeps only the trips over any of them (``Assignment.through_any``).

    *select_od* (a sub-matrix of *demand*, zones x zones) asks for select-OD: where those trips go at equilibrium
    (``Assignment.od_volume``), by the same mechanism as select-link (an all-or-nothing load of the sub-matrix on each
    iteration's shortest paths, mixed with the iteration's step), so each of its pairs' trips is conserved along its
    routes; its pairs that no route joins are in ``Assignment.od_unreachable``, not lost. Same solvers as *select*."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    if algorithm == "auto":
        algorithm = "bfw" if net.n_links >= LARGE_NETWORK_LINKS and select is None and select_od is None else "cfw"
    if algorithm == "bfw" and (select is not None or select_od is not None):
        raise ValueError("select-link and select-OD analysis run with the project's solvers (algorithm cfw or fw), "
                         "not bfw")
    if not 0 < gap < 1:
        raise NetworkError(f"relative gap {gap!r} must lie between 0 and 1 (1e-4 is usual)")
    net.validate()
    check_demand(net, demand)
    t0 = time.perf_counter()
    active = np.ones(net.n_links, dtype=bool)
    if closed is not None and len(closed):
        active[closed] = False
    graph = Graph(net, active)
    od = demand.copy()
    np.fill_diagonal(od, 0.0)  # trips within a zone use no link
    if select_od is not None and select_od.shape == demand.shape:
        over = np.argwhere(select_od > demand * (1 + 1e-9) + 1e-9)
        if len(over):
            o, d = (int(i) for i in over[0])
            raise NetworkError(f"select-OD trips {net.zones[o]} -> {net.zones[d]} are {float(select_od[o, d]):g}, more than "
                               f"the demand's {float(demand[o, d]):g}; select a part of the demand")
    sub = None if select_od is None else select_od.copy()
    if sub is not None and sub.shape == od.shape:
        np.fill_diagonal(sub, 0.0)
    sl = None if select is None and sub is None else SelectLink(
        net, np.array([], dtype=np.int64) if select is None else select, sub, select_per_link)
    skim0, x = shortest(graph, bpr(net, np.zeros(net.n_links)), od if algorithm != "bfw" else None, sl)
    sl_x = None if sl is None else sl.buf.copy()  # select-link trips of x, then of s_prev (they mix as x and s do)
    sl_prev: np.ndarray | None = None
    unreachable = [(net.zones[o], net.zones[d], float(od[o, d])) for o, d in np.argwhere(~np.isfinite(skim0) & (od > 0))]
    od[~np.isfinite(skim0)] = 0.0
    od_unreachable = [] if sub is None else [(net.zones[o], net.zones[d], float(sub[o, d]))
                                             for o, d in np.argwhere(~np.isfinite(skim0) & (sub > 0))]
    history: list[tuple[int, float, float]] = []
    s_prev: np.ndarray | None = None
    rel_gap, it, converged = float("inf"), 0, od.sum() == 0
    if converged:
        rel_gap = 0.0
    elif algorithm == "bfw":
        res = bfw(net, od, active, gap, max_iterations, on_iteration, max_seconds, cores)
        x, it, history = res.volume, res.iterations, res.history
    while algorithm != "bfw" and not converged and it < max_iterations:
        it += 1
        cost = bpr(net, x)
        skim, y = shortest(graph, cost, od, sl)
        rel_gap = relative_gap(od, skim, cost, x)
        elapsed = time.perf_counter() - t0
        history.append((it, rel_gap, elapsed))
        if on_iteration is not None and on_iteration(it, rel_gap, elapsed) is False:
            break
        if rel_gap < gap:
            converged = True
            break
        if max_seconds is not None and elapsed > max_seconds:
            break
        s, a = y, 0.0
        if algorithm == "cfw" and s_prev is not None:
            h = bpr_derivative(net, x)
            dbar = s_prev - x
            num = float(np.sum(dbar * h * (y - x)))
            den = float(np.sum(dbar * h * (y - s_prev)))
            a = 0.0 if den == 0 else min(max(num / den, 0.0), CONJUGATE_MAX)
            s = a * s_prev + (1 - a) * y
        step_fw = _line_search(net, x, y - x)
        x_next, s_next = x + step_fw * (y - x), y
        step_taken, conj = step_fw, False
        if s is not y and float(np.dot(cost, s - x)) < 0:
            # the conjugate direction, where it descends and does better than Frank-Wolfe's own; otherwise the
            # method restarts from the Frank-Wolfe direction (conjugate Frank-Wolfe stalls on small networks without)
            step = _line_search(net, x, s - x)
            x_conj = x + step * (s - x)
            if beckmann(net, x_conj) < beckmann(net, x_next):
                x_next, s_next, step_taken, conj = x_conj, s, step, True
        if sl is not None and sl_x is not None:
            sl_s = a * sl_prev + (1 - a) * sl.buf if conj and sl_prev is not None else sl.buf.copy()
            sl_x += step_taken * (sl_s - sl_x)
            sl_prev = sl_s
        x, s_prev = x_next, s_next
    cost = bpr(net, x)
    skim, _ = shortest(graph, cost, None)
    if algorithm == "bfw" and od.sum() > 0:
        rel_gap = relative_gap(od, skim, cost, x)
        converged = rel_gap < gap
    parts = None if sl is None or sl_x is None else sl.parts(sl_x, net)
    return Assignment(volume=x, cost=cost, skim=skim, iterations=it, gap=rel_gap, converged=bool(converged),
                      objective=beckmann(net, x), tstt=float(np.dot(x, cost)), seconds=time.perf_counter() - t0,
                      unreachable=unreachable, history=history, algorithm=algorithm,
                      through=None if parts is None or select is None or not select_per_link else parts[0],
                      through_any=None if parts is None or select is None else parts[1],
                      od_volume=None if parts is None or sub is None else parts[2], od_unreachable=od_unreachable)
