"""AequilibraE's bi-conjugate Frank-Wolfe (Mitradjieva and Lindberg 2013; Cython all-or-nothing on all cores) as the
equilibrium engine behind :func:`twin.traffic.assign.assign` for large networks (see BENCHMARKS.md, "Traffic
assignment": on 10^5 links and 1,000 zones its iteration is several times faster than the project's scipy one).

The twin's network is handed over as a link table: each zone becomes an AequilibraE centroid (nodes 1..Z, which no
route may pass through) joined by a free link to the zone's origin node and from its destination node, so that
zones that routes may cross (TNTP's through zones) and zones with a sink copy behave as in the project's own solver.
Progress is reported after every iteration through AequilibraE's progress signal, and the run stops between
iterations when the callback returns False or the time limit passes (the flows of the last finished iteration are
kept). Deterministic for the same input: the all-or-nothing runs on one thread unless *cores* says otherwise."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.traffic.network import Network

MIN_FFT = 1e-9  # AequilibraE's BPR and path search want positive free-flow times


class _Stop(Exception):
    """Raised from the progress signal to end AequilibraE's iteration loop between two iterations."""


@dataclass
class _Signal:
    """Stands in for AequilibraE's progress signal. After AequilibraE's iteration k (its all-or-nothing y_k at the costs
    t of the previous flows x_{k-1}, then the step to x_k) it works out the relative gap of x_{k-1} exactly as the
    project's solver does, ``(t.x_{k-1} - t.y_k) / t.x_{k-1}`` (AequilibraE's own figure measures x_k against y_k at
    those stale costs, which can read 0 while the flows are still off), reports it as iteration k - 1, and ends the
    loop once it is below the target, on request or after the time limit, keeping x_{k-1}."""

    la: Any  # AequilibraE's LinearApproximation
    gap: float
    on_iteration: Callable[[int, float, float], bool | None] | None
    max_seconds: float | None
    t0: float
    seen: int = 0
    stopped: bool = False
    converged: bool = False
    flows: np.ndarray | None = None  # x_{k-1}: the flows whose gap was reported last
    cost: np.ndarray | None = None
    history: list[tuple[int, float, float]] = field(default_factory=list)

    def emit(self, _message: list[Any]) -> None:
        if threading.current_thread() is not threading.main_thread():  # the all-or-nothing's own progress
            return
        done = len(self.la.convergence_report["iteration"])
        if self.stopped or done == self.seen:
            return
        self.seen = done
        if self.flows is not None and self.cost is not None:
            tx = float(np.dot(self.cost, self.flows))
            ty = float(np.dot(self.cost, self.la.aon_total_flow))
            rgap = max(0.0, (tx - ty) / tx) if tx > 0 else 0.0
            elapsed = time.perf_counter() - self.t0
            self.history.append((done - 1, rgap, elapsed))
            self.converged = rgap < self.gap
            stop = self.on_iteration is not None and self.on_iteration(done - 1, rgap, elapsed) is False
            if self.converged or stop or (self.max_seconds is not None and elapsed > self.max_seconds):
                self.stopped = True
                raise _Stop
        self.flows, self.cost = self.la.fw_total_flow.copy(), self.la.congested_time.copy()


@dataclass
class BfwResult:
    volume: np.ndarray  # per link of the network (closed links 0)
    iterations: int
    converged: bool
    history: list[tuple[int, float, float]]


def bfw(net: Network, od: np.ndarray, active: np.ndarray, gap: float, max_iterations: int,
        on_iteration: Callable[[int, float, float], bool | None] | None = None, max_seconds: float | None = None,
        cores: int = 1) -> BfwResult:
    """Equilibrium link volumes for *od* (zones x zones, unreachable pairs already removed) on the *active* links."""
    import pandas as pd
    from aequilibrae.matrix import AequilibraeMatrix
    from aequilibrae.paths import Graph, TrafficAssignment, TrafficClass
    from aequilibrae.paths.all_or_nothing import allOrNothing

    allOrNothing.signal.deactivate = True  # its class-wide progress bar (tqdm on stderr) for the set-up
    t0 = time.perf_counter()
    z = len(net.zones)
    links = np.flatnonzero(active)
    # AequilibraE node numbers: centroids 1..Z, then the network's nodes (node i is Z + 1 + i)
    a = np.concatenate([net.a[links] + z + 1, np.arange(1, z + 1), net.dest_node + z + 1])
    b = np.concatenate([net.b[links] + z + 1, net.origin_node + z + 1, np.arange(1, z + 1)])
    k = len(links)
    df = pd.DataFrame({
        "link_id": np.arange(1, k + 2 * z + 1), "a_node": a, "b_node": b, "direction": 1,
        "free_flow_time": np.concatenate([np.maximum(net.fft[links], MIN_FFT), np.full(2 * z, MIN_FFT)]),
        "capacity": np.concatenate([net.capacity[links], np.full(2 * z, 1e12)]),
        "alpha": np.concatenate([net.alpha[links], np.zeros(2 * z)]),
        "beta": np.concatenate([net.beta[links], np.ones(2 * z)]),
    })
    graph = Graph()
    graph.network = df
    graph.prepare_graph(np.arange(1, z + 1))
    graph.set_graph("free_flow_time")
    graph.set_blocked_centroid_flows(True)
    mat = AequilibraeMatrix()
    mat.create_empty(memory_only=True, zones=z, matrix_names=["demand"])
    mat.index[:] = np.arange(1, z + 1)
    mat.matrices[:, :, 0] = od
    mat.computational_view(["demand"])
    ta = TrafficAssignment()
    ta.set_classes([TrafficClass("car", graph, mat)])
    ta.set_vdf("BPR")
    ta.set_vdf_parameters({"alpha": "alpha", "beta": "beta"})
    ta.set_capacity_field("capacity")
    ta.set_time_field("free_flow_time")
    ta.set_algorithm("bfw")
    ta.max_iter = max_iterations + 1  # AequilibraE's iteration k + 1 measures the flows of iteration k
    ta.rgap_target = 0.0  # the signal decides when to stop (see _Signal)
    ta.set_cores(cores)
    signal = _Signal(ta.assignment, gap, on_iteration, max_seconds, t0)
    ta.assignment.signal = signal
    log = logging.getLogger("aequilibrae")
    level = log.level
    log.setLevel(logging.CRITICAL)  # else it logs "Desired RGap of 0.0 was NOT reached": the target is the signal's
    try:
        with contextlib.suppress(_Stop):
            ta.execute(log_specification=False)
    finally:
        log.setLevel(level)
    flows = signal.flows if signal.stopped and signal.flows is not None else ta.assignment.fw_total_flow
    g = graph.graph
    volume_here = np.zeros(k + 2 * z)
    volume_here[g["link_id"].to_numpy() - 1] = flows[g["__supernet_id__"].to_numpy()]
    volume = np.zeros(net.n_links)
    volume[links] = volume_here[:k]
    return BfwResult(volume=volume, iterations=len(signal.history), converged=signal.converged,
                     history=signal.history)

