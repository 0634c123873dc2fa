"""Known answers for the select-link analysis of closures and select-OD (where the closed links' traffic went):
parallel routes with one closed, three BPR routes against the closed form, a zone cut off, a pair over two closed
links counted once, conservation, determinism; and a closure on the bundled Kiel pack."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twin.region import bundled_pack
from twin.traffic import assign as assign_module
from twin.traffic.assign import Assignment, assign
from twin.traffic.network import Network, NetworkError, from_links
from twin.traffic.scenario import Context, TrafficRequest, run

EPS = 1e-6
FREE = ("", "", EPS, 1e9, 0.0, 1.0)  # a link of nearly no cost that never congests


def linear(a: str, b: str, intercept: float, slope: float) -> tuple[str, str, float, float, float, float]:
    """t = intercept + slope * x as a BPR link with c = 1."""
    return (a, b, intercept, 1.0, slope / intercept, 1.0)


def free(a: str, b: str) -> tuple[str, str, float, float, float, float]:
    return (a, b, *FREE[2:])  # type: ignore[return-value]


def closure(net: Network, od: np.ndarray, closed: list[int], gap: float = 1e-8) -> tuple[Assignment, Assignment]:
    """The baseline with select-link on *closed* and the scenario with its displaced trips as select-OD."""
    sel = np.array(closed, dtype=np.int64)
    base = assign(net, od, gap=gap, select=sel)
    assert base.through_any is not None
    return base, assign(net, od, gap=gap, closed=sel, select_od=base.through_any)


def balance(net: Network, volume: np.ndarray, od: np.ndarray) -> np.ndarray:
    """Per node: what flows in minus what flows out, plus what the OD matrix sends from it minus what it ends there
    (0 everywhere for link volumes that carry exactly *od*)."""
    out = np.bincount(net.b, weights=volume, minlength=net.n_nodes) - np.bincount(net.a, weights=volume, minlength=net.n_nodes)
    out += np.bincount(net.origin_node, weights=od.sum(axis=1), minlength=net.n_nodes)
    out -= np.bincount(net.dest_node, weights=od.sum(axis=0), minlength=net.n_nodes)
    return out


def test_two_routes_one_closed_all_displaced_trips_take_the_other() -> None:
    # o -> d by route A (o-m1-d) or B (o-m2-d); e -> d by its own link, which no closure touches
    net = from_links([linear("o", "m1", 10.0, 0.02), free("m1", "d"), linear("o", "m2", 15.0, 0.01), free("m2", "d"),
                      linear("e", "d", 5.0, 0.01)], zones=["o", "d", "e"])
    od = np.zeros((3, 3))
    od[0, 1], od[2, 1] = 1000.0, 300.0
    base, scen = closure(net, od, [0])
    assert base.volume[0] == pytest.approx(500.0, rel=1e-4)  # the closed form of the two routes (500 each)
    assert base.through_any is not None and base.through is not None
    assert base.through_any[0, 1] == pytest.approx(base.volume[0], rel=1e-12) and base.through_any.sum() == pytest.approx(base.volume[0])
    assert base.through_any[2, 1] == 0  # e's trips never used the closed link
    assert scen.od_volume is not None
    assert scen.od_volume[2] == pytest.approx(base.volume[0], rel=1e-12)  # exactly its baseline volume, on B
    assert scen.od_volume[3] == pytest.approx(base.volume[0], rel=1e-12)
    assert scen.od_volume[[0, 1, 4]].tolist() == [0.0, 0.0, 0.0]
    assert not scen.od_unreachable
    # unlike the difference of the equilibria, which gives B all 1000 - 500 = 500 more, e's link nothing
    assert scen.volume[2] - base.volume[2] == pytest.approx(500.0, rel=1e-4)


def test_three_bpr_routes_split_the_displaced_trips_as_the_equilibrium_says() -> None:
    # t1 = 10 + .02 x1, t2 = 15 + .01 x2, t3 = 12 + .01 x3, 1000 trips: all three cost T = 16.8 (250 T - 3200 = 1000),
    # x = 340, 180, 480. Route 3 closed: t1 = t2 at x1 = x2 = 500, so its 480 trips split 240 / 240.
    net = from_links([linear("o", "m1", 10.0, 0.02), free("m1", "d"), linear("o", "m2", 15.0, 0.01), free("m2", "d"),
                      linear("o", "m3", 12.0, 0.01), free("m3", "d")], zones=["o", "d"])
    od = np.array([[0.0, 1000.0], [0.0, 0.0]])
    base, scen = closure(net, od, [4])
    assert base.volume[[0, 2, 4]] == pytest.approx([340.0, 180.0, 480.0], rel=1e-4)
    assert base.through_any is not None and base.through_any[0, 1] == pytest.approx(480.0, rel=1e-4)
    assert scen.od_volume is not None
    assert scen.od_volume[[0, 2, 4]] == pytest.approx([240.0, 240.0, 0.0], rel=1e-4)
    assert scen.od_volume[0] + scen.od_volume[2] == pytest.approx(base.through_any[0, 1], rel=1e-12)  # none lost


def test_a_closure_that_cuts_a_zone_off_reports_its_displaced_trips_unreachable() -> None:
    net = from_links([linear("o", "d", 10.0, 0.01), linear("c", "m", 3.0, 0.01), free("m", "d")], zones=["o", "d", "c"])
    od = np.zeros((3, 3))
    od[0, 1], od[2, 1] = 100.0, 40.0
    base, scen = closure(net, od, [1])
    assert base.through_any is not None and base.through_any[2, 1] == pytest.approx(40.0)
    assert scen.od_unreachable == [("c", "d", pytest.approx(40.0))]
    assert scen.od_volume is not None and scen.od_volume.tolist() == [0.0, 0.0, 0.0]  # reported, not put anywhere
    assert ("c", "d", pytest.approx(40.0)) in scen.unreachable


def test_a_pair_over_two_closed_links_is_counted_once() -> None:
    # o -> a -> b -> d (two closed links in a row) or o -> d directly
    net = from_links([linear("o", "a", 5.0, 0.01), linear("a", "b", 5.0, 0.01), free("b", "d"),
                      linear("o", "d", 12.0, 0.01)], zones=["o", "d"])
    od = np.array([[0.0, 500.0], [0.0, 0.0]])
    base, scen = closure(net, od, [0, 1])
    assert base.through is not None and base.through_any is not None
    used = base.volume[0]
    assert used > 0 and base.through[0, 0, 1] == pytest.approx(used) and base.through[1, 0, 1] == pytest.approx(used)
    assert base.through_any[0, 1] == pytest.approx(used, rel=1e-12)  # once, not 2 x used
    assert scen.od_volume is not None and scen.od_volume[3] == pytest.approx(used, rel=1e-12)
    only_any = assign(net, od, gap=1e-8, select=np.array([0, 1]), select_per_link=False)
    assert only_any.through is None and only_any.through_any is not None
    assert np.array_equal(only_any.through_any, base.through_any)


def test_displaced_trips_are_conserved_on_a_congested_grid_and_the_analysis_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    side, names = 5, [f"n{i}" for i in range(25)]
    links = []
    for i in range(side):
        for j in range(side):
            for di, dj in ((0, 1), (1, 0)):
                if i + di < side and j + dj < side:
                    u, v = names[i * side + j], names[(i + di) * side + j + dj]
                    fft, cap = float(rng.uniform(1, 3)), float(rng.uniform(200, 600))
                    links += [(u, v, fft, cap, 0.15, 4.0), (v, u, fft, cap, 0.15, 4.0)]
    zones = names[::4]
    net = from_links(links, zones=zones)
    od = rng.uniform(0, 150, (len(zones), len(zones)))
    np.fill_diagonal(od, 0.0)
    closed = [k for k, (u, v, *_) in enumerate(links) if {u, v} in ({"n12", "n13"}, {"n7", "n12"})]
    base, scen = closure(net, od, closed, gap=1e-5)
    assert base.through_any is not None and scen.od_volume is not None and base.through is not None
    assert base.through_any.sum() > 0 and (base.through_any <= od + 1e-9).all()
    assert base.through_any.sum() <= sum(base.volume[closed]) + 1e-9
    assert base.through.sum(axis=(1, 2)) == pytest.approx(base.volume[closed], rel=1e-9)
    assert np.abs(balance(net, scen.od_volume, base.through_any)).max() < 1e-8 * od.sum()  # every trip arrives
    assert (scen.od_volume <= scen.volume + 1e-9).all() and scen.od_volume[closed].sum() == 0
    again_base, again = closure(net, od, closed, gap=1e-5)
    assert again_base.through_any is not None and again.od_volume is not None
    assert again_base.through_any.tobytes() == base.through_any.tobytes()
    assert again.od_volume.tobytes() == scen.od_volume.tobytes() and again.volume.tobytes() == scen.volume.tobytes()
    plain = assign(net, od, gap=1e-5, closed=np.array(closed))
    assert plain.volume.tobytes() == scen.volume.tobytes() and plain.od_volume is None  # flows are left alone


def test_select_od_is_checked_and_large_networks_fall_back_to_cfw(monkeypatch: pytest.MonkeyPatch) -> None:
    net = from_links([linear("o", "d", 10.0, 0.01)], zones=["o", "d"])
    od = np.array([[0.0, 100.0], [0.0, 0.0]])
    with pytest.raises(NetworkError, match="select-OD trips o -> d are 150, more than the demand's 100"):
        assign(net, od, select_od=np.array([[0.0, 150.0], [0.0, 0.0]]))
    with pytest.raises(NetworkError, match="demand is 3 x 3"):
        assign(net, od, select_od=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not bfw"):
        assign(net, od, select_od=od, algorithm="bfw")
    monkeypatch.setattr(assign_module, "LARGE_NETWORK_LINKS", 1)
    assert assign(net, od).algorithm == "bfw"
    assert assign(net, od, select_od=od).algorithm == "cfw"


@pytest.fixture(scope="module")
def kiel() -> tuple:  # type: ignore[type-arg]
    pack = bundled_pack()
    return pack, Context.of(pack)


def _mid(geom: list[tuple[float, float]]) -> tuple[float, float]:
    return geom[len(geom) // 2]


def test_closing_a_busy_kiel_link_its_traffic_goes_to_a_nearby_road(kiel: tuple) -> None:  # type: ignore[type-arg]
    pack, ctx = kiel
    net = ctx.net
    base = assign(net, ctx.demand)
    busiest = next(int(i) for i in np.argsort(-base.volume, kind="stable") if net.road_class[i] != "connector")
    res = run(pack, TrafficRequest(name="select-link", closures=[net.link_ids[busiest]]), ctx=ctx)
    s = res.summary()
    sl = s["select_link"]
    assert sl["solver"] == "cfw" and sl["solver_fallback"] is False
    before = res.base.volume[busiest]
    assert sl["displaced_trips"] == pytest.approx(before, abs=0.05) and s["displaced_volume"] == pytest.approx(before, abs=0.05)
    assert sl["displaced_trips_unreachable"] == 0 and sl["displaced_trips_rerouted"] == pytest.approx(before, abs=0.05)
    closed = sl["closed_links"]
    assert [c["link"] for c in closed] == [net.link_ids[busiest]] and closed[0]["volume_before"] == pytest.approx(before, abs=0.05)
    assert closed[0]["zone_pairs"] and closed[0]["neighbourhood_pairs"]
    hoods = closed[0]["neighbourhood_pairs"]
    assert hoods == sorted(hoods, key=lambda p: -p["trips"]) and hoods[0]["trips"] <= before + 0.05
    went = sl["went_to"]
    top = went[0]
    assert top["road"] and top["road"] != net.road[busiest] and top["displaced_volume"] > 0.2 * before
    assert top["share"] == pytest.approx(top["displaced_volume"] / before, abs=1e-3) and top["share"] <= 1.0001
    links = {x["id"]: x for x in res.links()}
    mine = links[top["link"]]
    assert mine["volume_diff"] > 0 and mine["displaced_volume"] == pytest.approx(top["displaced_volume"], abs=0.05)
    assert links[net.link_ids[busiest]]["displaced_volume"] == 0
    # a parallel road: it starts within 2 km of the closed link's middle
    (lon0, lat0), (lon1, lat1) = _mid(net.geometry[busiest]), _mid(net.geometry[net.link_index()[top["link"]]])
    km = math.hypot((lon1 - lon0) * 111.32 * math.cos(math.radians(lat0)), (lat1 - lat0) * 110.57)
    assert km < 2.0
    assert all("displaced_volume" in f["properties"] for f in res.geojson()["features"])
    again = run(pack, TrafficRequest(name="select-link", closures=[net.link_ids[busiest]]), ctx=ctx).summary()
    assert again["select_link"] == sl


def test_a_scenario_without_closures_has_no_select_link_part(kiel: tuple) -> None:  # type: ignore[type-arg]
    pack, ctx = kiel
    res = run(pack, TrafficRequest(extra_demand=[{"zone": "kiel:gaarden:neighbourhood:gaarden", "trips": 200}]), ctx=ctx)
    assert res.summary()["select_link"] is None and res.base.through_any is None
    assert {x["displaced_volume"] for x in res.links()} == {0.0}


def test_a_flooded_quarter_its_cut_off_trips_are_displaced_and_unreachable(kiel: tuple) -> None:  # type: ignore[type-arg]
    pack, ctx = kiel
    every = sorted({r for r in ctx.net.road if r.startswith("kiel:friedrichsort:")})
    s = run(pack, TrafficRequest(name="flooded"), flood_roads=every, ctx=ctx).summary()
    sl = s["select_link"]
    # every pair that no route joins any more had all its routes over the closed roads: all of it was displaced
    assert s["unreachable_trips"] > 0 and sl["displaced_trips_unreachable"] == pytest.approx(s["unreachable_trips"], abs=0.2)
    assert {(p["from"], p["to"]) for p in sl["displaced_unreachable_pairs"]} <= {(p["from"], p["to"]) for p in s["unreachable_pairs"]}
    assert sl["displaced_trips"] == pytest.approx(sl["displaced_trips_rerouted"] + sl["displaced_trips_unreachable"], abs=0.2)
    assert sl["displaced_trips"] <= s["displaced_volume"] + 0.1  # pairs over several closed links count once
    assert len(sl["closed_links"]) == min(20, s["closed_link_count"]) and sl["per_link_pairs"]
    assert all(w["road"] not in every for w in sl["went_to"])
