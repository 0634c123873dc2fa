"""Known answers for the equilibrium assignment: closed forms, Braess's paradox, a disconnected zone."""

from __future__ import annotations

import numpy as np
import pytest

from twin.traffic.assign import assign, beckmann, bpr
from twin.traffic.network import NetworkError, from_links

ENGINES = ["cfw", "bfw"]  # the project's conjugate Frank-Wolfe and AequilibraE's bi-conjugate one
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


@pytest.mark.parametrize("algorithm", ENGINES)
def test_two_parallel_routes_meet_the_closed_form(algorithm: str) -> None:
    net, od = two_routes(1000.0)
    res = assign(net, od, gap=1e-6, algorithm=algorithm)  # type: ignore[arg-type]
    # t1 = 10 + 0.02 x1, t2 = 15 + 0.01 x2, x1 + x2 = 1000: x1 = (15 - 10 + 0.01 * 1000) / 0.03 = 500
    assert res.converged and res.gap < 1e-6
    assert res.volume[0] == pytest.approx(500.0, rel=1e-4)
    assert res.volume[2] == pytest.approx(500.0, rel=1e-4)
    assert res.cost[0] + res.cost[1] == pytest.approx(20.0, rel=1e-4)
    assert res.skim[0, 1] == pytest.approx(20.0, rel=1e-4)
    # Beckmann: integral of 10 + 0.02x over 0..500 plus 15 + 0.01x over 0..500
    assert res.objective == pytest.approx(10 * 500 + 0.01 * 500**2 + 15 * 500 + 0.005 * 500**2, rel=1e-4)
    assert res.tstt == pytest.approx(1000 * 20.0, rel=1e-4)


@pytest.mark.parametrize("algorithm", ENGINES)
def test_low_demand_takes_only_the_faster_route(algorithm: str) -> None:
    net, od = two_routes(100.0)
    res = assign(net, od, algorithm=algorithm)  # type: ignore[arg-type]
    # at 100 trips the first route costs 12 < 15: nobody takes the second
    assert res.volume[0] == pytest.approx(100.0) and res.volume[2] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("algorithm", ENGINES)
def test_bpr_power_four_equalises_route_costs(algorithm: str) -> None:
    net = from_links([("o", "d", 10.0, 400.0, 0.15, 4.0), ("o", "m", 12.0, 600.0, 0.15, 4.0),
                      ("m", "d", EPS, 1e9, 0.0, 1.0)], zones=["o", "d"])
    od = np.array([[0.0, 1500.0], [0.0, 0.0]])
    res = assign(net, od, gap=1e-8, algorithm=algorithm)
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


@pytest.mark.parametrize("algorithm", ENGINES)
def test_braess_paradox(algorithm: str) -> None:
    od = np.array([[0.0, 6.0], [0.0, 0.0]])
    without = assign(braess(False), od, gap=1e-8, algorithm=algorithm)  # type: ignore[arg-type]
    with_link = assign(braess(True), od, gap=1e-8, algorithm=algorithm)  # type: ignore[arg-type]
    # without the link: 3 on each route, each costs 10*3 + 50 + 3 = 83
    assert without.volume[:4] == pytest.approx([3, 3, 3, 3], rel=1e-5)
    assert without.skim[0, 1] == pytest.approx(83.0, rel=1e-5)
    # with it: 2 on each of three routes (s-a-t, s-b-t, s-a-b-t), each costs 92: worse for everybody
    assert with_link.volume == pytest.approx([4, 2, 2, 4, 2], rel=1e-4)
    assert with_link.skim[0, 1] == pytest.approx(92.0, rel=1e-4)
    assert with_link.tstt > without.tstt
    assert with_link.tstt == pytest.approx(6 * 92.0, rel=1e-4)


@pytest.mark.parametrize("algorithm", ENGINES)
def test_closing_the_braess_link_restores_the_better_equilibrium(algorithm: str) -> None:
    od = np.array([[0.0, 6.0], [0.0, 0.0]])
    closed = assign(braess(True), od, gap=1e-8, closed=np.array([4]), algorithm=algorithm)  # type: ignore[arg-type]
    assert closed.volume[4] == 0.0
    assert closed.skim[0, 1] == pytest.approx(83.0, rel=1e-5)


@pytest.mark.parametrize("algorithm", ENGINES)
def test_a_closure_that_disconnects_a_zone_is_reported(algorithm: str) -> None:
    net = from_links([("x", "y", 5.0, 100.0, 0.15, 4.0), ("y", "x", 5.0, 100.0, 0.15, 4.0),
                      ("y", "z", 5.0, 100.0, 0.15, 4.0), ("z", "y", 5.0, 100.0, 0.15, 4.0)], zones=["x", "y", "z"])
    od = np.array([[0, 10, 20], [10, 0, 30], [20, 30, 0]], dtype=float)
    res = assign(net, od, closed=np.array([2]), algorithm=algorithm)  # y -> z closed: z cannot be reached at all
    assert sorted((o, d) for o, d, _ in res.unreachable) == [("x", "z"), ("y", "z")]
    assert sum(t for *_, t in res.unreachable) == 50.0
    assert np.isinf(res.skim[0, 2]) and np.isinf(res.skim[1, 2])
    assert res.volume[2] == 0.0
    assert res.volume[3] == pytest.approx(50.0)  # z still leaves: z -> y carries 20 + 30
    assert res.converged


@pytest.mark.parametrize("algorithm", ENGINES)
def test_same_input_same_flows_bit_for_bit(algorithm: str) -> None:
    od = np.array([[0.0, 6.0], [0.0, 0.0]])
    a = assign(braess(True), od, gap=1e-6, algorithm=algorithm)  # type: ignore[arg-type]
    b = assign(braess(True), od, gap=1e-6, algorithm=algorithm)  # type: ignore[arg-type]
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


def small_grid(side: int = 8, seed: int = 3) -> tuple[object, np.ndarray]:
    """A congested grid with zones on every other junction (zones are through nodes), random BPR links."""
    rng = np.random.default_rng(seed)
    links = []
    for i in range(side):
        for j in range(side):
            for di, dj in ((0, 1), (1, 0)):
                if i + di < side and j + dj < side:
                    u, v = f"{i},{j}", f"{i + di},{j + dj}"
                    for x, y in ((u, v), (v, u)):
                        links.append((x, y, float(rng.uniform(1, 3)), float(rng.choice([50.0, 100.0])), 0.15, 4.0))
    zones = [f"{i},{j}" for i in range(0, side, 2) for j in range(0, side, 2)]
    net = from_links(links, zones=zones)
    od = rng.uniform(0, 9, (len(zones), len(zones)))
    np.fill_diagonal(od, 0.0)
    return net, od


def test_both_engines_reach_the_same_equilibrium_on_a_grid() -> None:
    net, od = small_grid()
    cfw = assign(net, od, gap=1e-4, algorithm="cfw")  # type: ignore[arg-type]
    bfw = assign(net, od, gap=1e-4, algorithm="bfw")  # type: ignore[arg-type]
    assert cfw.converged and bfw.converged and bfw.gap < 1e-4
    assert bfw.algorithm == "bfw" and bfw.history[-1][1] == pytest.approx(bfw.gap, rel=1e-4)
    # the Beckmann objective has one minimum: both solvers get there (link flows may differ only where it is flat)
    assert bfw.objective == pytest.approx(cfw.objective, rel=1e-4)
    assert bfw.tstt == pytest.approx(cfw.tstt, rel=1e-3)
    assert np.allclose(bfw.skim, cfw.skim, rtol=1e-2)


def test_zones_that_routes_may_not_cross_stay_closed_to_through_traffic_in_both_engines() -> None:
    # o -> d directly costs 30; through zone z (o -> z -> d) costs 2: allowed only when zones are through nodes
    links = [("o", "d", 30.0, 1e6, 0.0, 1.0), ("o", "z", 1.0, 1e6, 0.0, 1.0), ("z", "d", 1.0, 1e6, 0.0, 1.0)]
    od = np.zeros((3, 3))
    od[0, 1] = 10.0
    for algorithm in ENGINES:
        through = assign(from_links(links, zones=["o", "d", "z"]), od, algorithm=algorithm)
        blocked = assign(from_links(links, zones=["o", "d", "z"], through_zones=False), od, algorithm=algorithm)
        assert through.volume.tolist() == pytest.approx([0.0, 10.0, 10.0]) and through.skim[0, 1] == pytest.approx(2.0)
        assert blocked.volume.tolist() == pytest.approx([10.0, 0.0, 0.0]) and blocked.skim[0, 1] == pytest.approx(30.0)


def test_aequilibrae_engine_reports_every_iteration_and_stops_when_asked() -> None:
    net, od = small_grid()
    seen: list[tuple[int, float]] = []
    full = assign(net, od, gap=1e-4, algorithm="bfw", on_iteration=lambda i, g, s: seen.append((i, g)) is None)  # type: ignore[arg-type]
    assert [i for i, _ in seen] == list(range(1, full.iterations + 1))
    assert seen[0][1] > 1e-2 and seen[-1][1] < 1e-4 and full.converged and full.iterations > 3

    def stop_at_3(i: int, g: float, s: float) -> bool:
        return i < 3

    cut = assign(net, od, gap=1e-4, algorithm="bfw", on_iteration=stop_at_3)  # type: ignore[arg-type]
    assert cut.iterations == 3 and not cut.converged
    assert cut.gap == pytest.approx(seen[2][1], rel=1e-4)  # the flows kept are the ones whose gap was reported
    timed = assign(net, od, gap=1e-12, algorithm="bfw", max_seconds=0.0)  # type: ignore[arg-type]
    assert timed.iterations == 1 and not timed.converged


def test_auto_picks_the_engine_by_network_size(monkeypatch: pytest.MonkeyPatch) -> None:
    import twin.traffic.assign as mod

    net, od = small_grid(4)
    assert assign(net, od).algorithm == "cfw"  # type: ignore[arg-type]
    monkeypatch.setattr(mod, "LARGE_NETWORK_LINKS", 10)
    assert assign(net, od).algorithm == "bfw"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown algorithm 'xfw'; use one of auto, cfw, fw, bfw"):
        assign(net, od, algorithm="xfw")  # type: ignore[arg-type]
