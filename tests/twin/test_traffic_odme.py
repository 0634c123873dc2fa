"""OD matrix estimation from counts (twin.traffic.counts.estimate_od) with known answers: counts made by assigning a
known "true" OD matrix, a prior of another pattern, and what the estimation must reach; and select-link analysis."""

from __future__ import annotations

import numpy as np
import pytest

from twin.traffic.assign import Assignment, assign
from twin.traffic.counts import MAX_CHANGE, Count, counts_from, estimate_od, fit, scale_to_counts
from twin.traffic.network import Network, NetworkError, from_links

# true trips between the four corner zones of a 3 x 3 grid, and a prior of another pattern (and level)
TRUE = np.array([[0, 400, 100, 300], [100, 0, 250, 50], [300, 80, 0, 200], [60, 350, 120, 0]], dtype=float)
PRIOR = 1.5 * np.array([[0, 100, 300, 200], [300, 0, 100, 250], [100, 250, 0, 100], [300, 100, 300, 0]], dtype=float)


def grid(spur: bool = False) -> Network:
    """3 x 3 junctions joined both ways (BPR, congested at these demands), zones at the corners; every pair of
    junctions is a road. With *spur*, a dead-end road off the centre that no zone pair's route uses."""
    rows = []
    for i in range(3):
        for j in range(3):
            for di, dj in ((0, 1), (1, 0)):
                if i + di < 3 and j + dj < 3:
                    u, v = f"n{i}{j}", f"n{i + di}{j + dj}"
                    fft, cap = (1.5, 300.0) if (i + j) % 2 else (1.0, 500.0)
                    rows += [(u, v, fft, cap, 0.15, 4.0), (v, u, fft, cap, 0.15, 4.0)]
    if spur:
        rows += [("n11", "x", 1.0, 500.0, 0.15, 4.0), ("x", "n11", 1.0, 500.0, 0.15, 4.0)]
    net = from_links(rows, ["n00", "n02", "n20", "n22"])
    net.road = ["road:" + "-".join(sorted((net.nodes[a], net.nodes[b]))) for a, b in zip(net.a, net.b, strict=True)]
    return net


def counts_of(net: Network, od: np.ndarray) -> list[Count]:
    return counts_from(net, assign(net, od).volume, sorted(set(net.road)))


def assign_with(net: Network) -> object:
    def f(od: np.ndarray, links: np.ndarray) -> Assignment:
        return assign(net, od, select=links)
    return f


def worst_geh(f: dict) -> float:  # type: ignore[type-arg]
    return max(s["geh"] for s in f["stations"])


def test_select_link_trips_add_up_to_the_link_volumes() -> None:
    net = grid()
    for algorithm in ("cfw", "fw"):
        a = assign(net, TRUE, select=np.arange(net.n_links), algorithm=algorithm, max_iterations=200)
        assert a.through is not None and a.through.shape == (net.n_links, 4, 4)
        assert a.through.sum(axis=(1, 2)) == pytest.approx(a.volume, abs=1e-6)
        assert (a.through >= -1e-9).all() and (a.through[:, np.eye(4, dtype=bool)] == 0).all()
        # a zone pair's trips over the links leaving its origin are all its trips
        first = [i for i in range(net.n_links) if net.a[i] == net.origin_node[0]]
        assert a.through[first, 0, 1].sum() == pytest.approx(TRUE[0, 1])
        plain = assign(net, TRUE, algorithm=algorithm, max_iterations=200)
        assert np.array_equal(plain.volume, a.volume) and plain.through is None  # the analysis leaves the flows alone
    with pytest.raises(ValueError, match="bfw"):
        assign(net, TRUE, select=np.arange(3), algorithm="bfw")
    with pytest.raises(NetworkError, match="outside"):
        assign(net, TRUE, select=np.array([net.n_links]))


def test_estimation_fits_every_station_where_the_single_factor_cannot() -> None:
    net = grid()
    counts = counts_of(net, TRUE)
    factor = scale_to_counts(net, counts, lambda f: assign(net, PRIOR * f).volume)
    scaled = fit(net, assign(net, PRIOR * factor).volume, counts)
    est = estimate_od(net, PRIOR * factor, counts, assign_with(net))
    assert est.start == scaled and worst_geh(scaled) > 10 and scaled["geh_under_5"] < 0.8  # the level alone is not enough
    assert worst_geh(est.after) < 5 and est.after["geh_under_5"] == 1.0 and est.after["r2"] > 0.99
    assert est.after == fit(net, est.assignment.volume, counts)
    assert est.rounds[0]["squared_error"] > 50 * min(r["squared_error"] for r in est.rounds)
    prior = PRIOR * factor
    cells = prior > 0
    ratio = est.demand[cells] / prior[cells]
    assert (ratio >= 1 / MAX_CHANGE - 1e-12).all() and (ratio <= MAX_CHANGE + 1e-12).all()
    change = est.matrix_change(net, prior)
    assert change["trips_before"] == pytest.approx(prior.sum(), abs=0.1)
    assert change["trips_after"] == pytest.approx(est.demand.sum(), abs=0.1)
    assert abs(change["largest_cell_change"]["relative"]) == pytest.approx(float(np.abs(ratio - 1).max()), abs=1e-4)
    assert est.unmatched == []


def test_same_input_same_matrix_and_zero_cells_stay_zero() -> None:
    net = grid()
    counts = counts_of(net, TRUE)
    prior = PRIOR.copy()
    prior[0, 3] = prior[3, 0] = 0.0  # no trips between the diagonal corners in the prior
    one = estimate_od(net, prior, counts, assign_with(net))
    two = estimate_od(net, prior, counts, assign_with(net))
    assert np.array_equal(one.demand, two.demand) and one.rounds == two.rounds and one.after == two.after
    assert one.demand[0, 3] == 0 and one.demand[3, 0] == 0 and (one.demand[prior == 0] == 0).all()
    assert one.after["r2"] > one.start["r2"]  # still better, with fewer cells to move


def test_a_count_on_a_road_no_route_uses_is_reported() -> None:
    net = grid(spur=True)
    counts = [*counts_of(net, TRUE)]
    counts = [c if c.road != "road:n11-x" else Count(station="spur", road=c.road, vehicles_per_hour=120.0) for c in counts]
    est = estimate_od(net, PRIOR, counts, assign_with(net))
    assert [u["station"] for u in est.unmatched] == ["spur"] and "road:n11-x" in est.unmatched[0]["reason"]
    others = [s for s in est.after["stations"] if s["station"] != "spur"]
    assert max(s["geh"] for s in others) < 5  # the rest still fit
    assert next(s for s in est.after["stations"] if s["station"] == "spur")["assigned"] == 0


def test_conflicting_counts_end_at_a_compromise() -> None:
    net = grid()
    counts = counts_of(net, TRUE)
    road = counts[0].road
    mid = counts[0].vehicles_per_hour
    conflicting = [*counts[1:], Count(station="low", road=road, vehicles_per_hour=round(mid * 0.6, 1)),
                   Count(station="high", road=road, vehicles_per_hour=round(mid * 1.4, 1))]
    est = estimate_od(net, PRIOR, conflicting, assign_with(net))
    assert np.isfinite(est.demand).all() and est.demand.sum() < MAX_CHANGE * PRIOR.sum()
    got = {s["station"]: s["assigned"] for s in est.after["stations"]}
    assert got["low"] == got["high"] and mid * 0.8 < got["low"] < mid * 1.2  # near the middle of the two
    assert est.after["r2"] > est.start["r2"]


def test_errors_name_the_station_and_road() -> None:
    net = grid()
    bad = [Count(station="k-17", road="road:nowhere", vehicles_per_hour=10.0)]
    with pytest.raises(NetworkError, match=r"count station 'k-17': road 'road:nowhere' is not a road of the network"):
        estimate_od(net, PRIOR, bad, assign_with(net))
    with pytest.raises(NetworkError, match="at least one count"):
        estimate_od(net, PRIOR, [], assign_with(net))
    empty = estimate_od(net, np.zeros((4, 4)), counts_of(net, TRUE), assign_with(net))  # no trips: nothing to move
    assert (empty.demand == 0).all() and len(empty.unmatched) == len(set(net.road))
    with pytest.raises(NetworkError, match="max_change 0.5"):
        estimate_od(net, PRIOR, counts_of(net, TRUE), assign_with(net), max_change=0.5)


def test_a_scenario_estimates_the_pack_demand_from_counts_and_reports_the_fit() -> None:
    from twin.region import bundled_pack
    from twin.traffic.scenario import Context, TrafficRequest, run

    pack = bundled_pack()
    ctx = Context.of(pack)
    net = ctx.net
    hoods = sorted(set(net.zone_group))
    # the truth: three times the preset, from one neighbourhood 2.5 times as many trips per zone as from the other
    weight = np.array([2.5 if hoods.index(g) % 2 else 0.7 for g in net.zone_group])
    roads = sorted({r for r, c in zip(net.road, net.road_class, strict=True) if c in ("primary", "secondary")})[::2][:30]
    counts = counts_from(net, assign(net, ctx.demand * 3 * weight[:, None]).volume, roads)
    res = run(pack, TrafficRequest(counts=[*counts, Count(station="elsewhere", road="kiel:x:road:none", vehicles_per_hour=5)]),
              ctx=ctx)
    s = res.summary()
    f = s["count_fit"]
    assert f["method"] == "odme" and f["stations_ignored"] == 1 and f["ignored"][0]["station"] == "elsewhere"
    assert f["before"]["r2"] < 0.5 and worst_geh(f["after_factor"]) > 10  # the single factor leaves poor stations
    assert f["after"]["geh_under_5"] == 1.0 and worst_geh(f["after"]) < 5 and f["after"]["r2"] > f["after_factor"]["r2"]
    m = f["matrix"]
    assert m["trips_preset"] == pytest.approx(ctx.demand.sum(), abs=0.1)
    assert m["trips_before"] == pytest.approx(ctx.demand.sum() * f["demand_factor"], rel=1e-4)
    assert s["trips_before"] == pytest.approx(m["trips_after"], abs=0.1) and m["trips_after"] != m["trips_before"]
    assert 0 < abs(m["largest_cell_change"]["relative"]) <= MAX_CHANGE - 1 and f["unmatched"] == []
    assert f["rounds"][0]["squared_error"] > min(r["squared_error"] for r in f["rounds"][1:])
