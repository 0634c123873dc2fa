"""Known answers for the equilibrium assignment: closed forms, Braess's paradox, a disconnected zone."""

from __future__ import annotations

import numpy as np
import pytest

from twin.traffic.assign import assign, beckmann, bpr
from twin.traffic.network import NetworkError, from_links

EPS = 1e-6  # a free-flow time that is nearly 0, so that t = EPS + slope * x is a BPR function with beta = 1


def linear(a: str, b: str, intercept: float, slope: float) -> tuple[str, str, float, float, float, float]:
    """t = intercept + slope * x as a BPR link: fft * (1 + alpha * x / c) with c = 1."""
    fft = intercept if intercept > 0 else EPS
    return (a, b, fft, 1.0, slope / fft, 1.0)


def two_routes(demand: float) -> tuple[object, np.ndarray]:
    net = from_links([linear("o", "m1", 10.0, 0.02), ("m1", "d", EPS, 1e9, 0.0, 1.0),
                      linear("o", "m2", 15.0, 0.01), ("m2", "d", EPS, 1e9, 0.0, 1.0)], zones=["o", "d"])
    od = np.array([[0.0, demand], [0.0, 0.0]])
    return net, od


def test_two_parallel_routes_meet_the_closed_form() -> None:
    net, od = two_routes(1000.0)
    res = assign(net, od, gap=1e-6)  # type: ignore[arg-type]
    # t1 = 10 + 0.02 x1, t2 = 15 + 0.01 x2, x1 + x2 = 1000: x1 = (15 - 10 + 0.01 * 1000) / 0.03 = 500
    assert res.converged and res.gap < 1e-6
    assert res.volume[0] == pytest.approx(500.0, rel=1e-4)
    assert res.volume[2] == pytest.approx(500.0, rel=1e-4)
    assert res.cost[0] + res.cost[1] == pytest.approx(20.0, rel=1e-4)
    assert res.skim[0, 1] == pytest.approx(20.0, rel=1e-4)
    # Beckmann: integral of 10 + 0.02x over 0..500 plus 15 + 0.01x over 0..500
    assert res.objective == pytest.approx(10 * 500 + 0.01 * 500**2 + 15 * 500 + 0.005 * 500**2, rel=1e-4)
    assert res.tstt == pytest.approx(1000 * 20.0, rel=1e-4)


def test_low_demand_takes_only_the_faster_route() -> None:
    net, od = two_routes(100.0)
    res = assign(net, od)  # type: ignore[arg-type]
    # at 100 trips the first route costs 12 < 15: nobody takes the second
    assert res.volume[0] == pytest.approx(100.0) and res.volume[2] == pytest.approx(0.0, abs=1e-9)


def test_bpr_power_four_equalises_route_costs() -> None:
    net = from_links([("o", "d", 10.0, 400.0, 0.15, 4.0), ("o", "m", 12.0, 600.0, 0.15, 4.0),
                      ("m", "d", EPS, 1e9, 0.0, 1.0)], zones=["o", "d"])
    od = np.array([[0.0, 1500.0], [0.0, 0.0]])
    res = assign(net, od, gap=1e-8)
    t1, t2 = res.cost[0], res.cost[1] + res.cost[2]
    assert res.volume[0] + res.volume[1] == pytest.approx(1500.0)
    assert t1 == pytest.approx(t2, rel=1e-5)  # Wardrop: used routes cost the same
    # the closed-form check: with x1 found, 10 (1 + .15 (x1/400)^4) = 12 (1 + .15 ((1500-x1)/600)^4) + EPS
    x1 = res.volume[0]
    assert 10 * (1 + 0.15 * (x1 / 400) ** 4) == pytest.approx(12 * (1 + 0.15 * ((1500 - x1) / 600) ** 4) + EPS, rel=1e-5)


def braess(extra: bool) -> object:
    links = [linear("s", "a", 0.0, 10.0), linear("a", "t", 50.0, 1.0), linear("s", "b", 50.0, 1.0),
             linear("b", "t", 0.0, 10.0)]
    if extra:
        links.append(linear("a", "b", 10.0, 1.0))
    return from_links(links, zones=["s", "t"])


def test_braess_paradox() -> None:
    od = np.array([[0.0, 6.0], [0.0, 0.0]])
    without = assign(braess(False), od, gap=1e-8)  # type: ignore[arg-type]
    with_link = assign(braess(True), od, gap=1e-8)  # type: ignore[arg-type]
    # without the link: 3 on each route, each costs 10*3 + 50 + 3 = 83
    assert without.volume[:4] == pytest.approx([3, 3, 3, 3], rel=1e-5)
    assert without.skim[0, 1] == pytest.approx(83.0, rel=1e-5)
    # with it: 2 on each of three routes (s-a-t, s-b-t, s-a-b-t), each costs 92: worse for everybody
    assert with_link.volume == pytest.approx([4, 2, 2, 4, 2], rel=1e-4)
    assert with_link.skim[0, 1] == pytest.approx(92.0, rel=1e-4)
    assert with_link.tstt > without.tstt
    assert with_link.tstt == pytest.approx(6 * 92.0, rel=1e-4)


def test_closing_the_braess_link_restores_the_better_equilibrium() -> None:
    od = np.array([[0.0, 6.0], [0.0, 0.0]])
    closed = assign(braess(True), od, gap=1e-8, closed=np.array([4]))  # type: ignore[arg-type]
    assert closed.volume[4] == 0.0
    assert closed.skim[0, 1] == pytest.approx(83.0, rel=1e-5)


def test_a_closure_that_disconnects_a_zone_is_reported() -> None:
    net = from_links([("x", "y", 5.0, 100.0, 0.15, 4.0), ("y", "x", 5.0, 100.0, 0.15, 4.0),
                      ("y", "z", 5.0, 100.0, 0.15, 4.0), ("z", "y", 5.0, 100.0, 0.15, 4.0)], zones=["x", "y", "z"])
    od = np.array([[0, 10, 20], [10, 0, 30], [20, 30, 0]], dtype=float)
    res = assign(net, od, closed=np.array([2]))  # y -> z closed: z cannot be reached at all
    assert sorted((o, d) for o, d, _ in res.unreachable) == [("x", "z"), ("y", "z")]
    assert sum(t for *_, t in res.unreachable) == 50.0
    assert np.isinf(res.skim[0, 2]) and np.isinf(res.skim[1, 2])
    assert res.volume[2] == 0.0
    assert res.volume[3] == pytest.approx(50.0)  # z still leaves: z -> y carries 20 + 30
    assert res.converged


def test_same_input_same_flows_bit_for_bit() -> None:
    od = np.array([[0.0, 6.0], [0.0, 0.0]])
    a = assign(braess(True), od, gap=1e-6)  # type: ignore[arg-type]
    b = assign(braess(True), od, gap=1e-6)  # type: ignore[arg-type]
    assert a.volume.tobytes() == b.volume.tobytes() and a.iterations == b.iterations


def test_conjugate_frank_wolfe_needs_fewer_iterations_than_frank_wolfe() -> None:
    net = from_links([("o", "d", 10.0, 400.0, 0.15, 4.0), ("o", "m", 12.0, 600.0, 0.15, 4.0),
                      ("m", "d", 1.0, 300.0, 0.15, 4.0), ("o", "n", 8.0, 200.0, 0.15, 4.0), ("n", "d", 6.0, 500.0, 0.15, 4.0)],
                     zones=["o", "d"])
    od = np.array([[0.0, 1800.0], [0.0, 0.0]])
    cfw = assign(net, od, gap=1e-5, algorithm="cfw")
    fw = assign(net, od, gap=1e-5, algorithm="fw", max_iterations=5000)
    assert cfw.converged and fw.converged
    assert cfw.iterations < fw.iterations
    assert cfw.objective == pytest.approx(fw.objective, rel=1e-4)
    assert beckmann(net, cfw.volume) <= beckmann(net, fw.volume) * (1 + 1e-5)
    assert np.allclose(bpr(net, cfw.volume), cfw.cost)


def test_bad_demand_and_gap_are_named() -> None:
    net, _ = two_routes(1.0)
    with pytest.raises(NetworkError, match="demand o -> d is -5"):
        assign(net, np.array([[0.0, -5.0], [0.0, 0.0]]))  # type: ignore[arg-type]
    with pytest.raises(NetworkError, match="relative gap"):
        assign(net, np.zeros((2, 2)), gap=0.0)  # type: ignore[arg-type]
