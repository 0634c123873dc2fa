"""Traffic what-if scenarios on the bundled pack: closures, lanes, extra demand, flood roads, against the baseline."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from twin.region import bundled_pack
from twin.traffic.network import NetworkError
from twin.traffic.scenario import Context, TrafficRequest, run


@pytest.fixture(scope="module")
def pack_ctx() -> tuple:  # type: ignore[type-arg]
    pack = bundled_pack()
    return pack, Context.of(pack)


def _busiest_road(ctx: Context) -> str:
    from twin.traffic.assign import assign

    base = assign(ctx.net, ctx.demand)
    order = np.argsort(-base.volume, kind="stable")
    return next(ctx.net.road[i] for i in order if ctx.net.road[i])


def test_closing_the_busiest_road_moves_its_traffic(pack_ctx: tuple) -> None:  # type: ignore[type-arg]
    pack, ctx = pack_ctx
    road = _busiest_road(ctx)
    res = run(pack, TrafficRequest(name="closure", closures=[road]), ctx=ctx)
    s = res.summary()
    links = {x["id"]: x for x in res.links()}
    mine = [x for x in links.values() if x["road"] == road]
    assert mine and all(x["closed"] and x["volume"] == 0 and x["vc"] is None for x in mine)
    assert s["displaced_volume"] == pytest.approx(sum(x["volume_before"] for x in mine), abs=0.5) and s["displaced_volume"] > 0
    assert s["gained_most"] and s["rerouted_volume"] > 0
    assert s["vht"]["after"] >= s["vht"]["before"]  # closing a road never helps here (no Braess link in the pack)
    assert s["baseline"]["converged"] and s["scenario"]["converged"] and s["scenario"]["relative_gap"] < 1e-4
    assert s["trips"] == s["trips_before"] and "demand" in s["synthetic_inputs"]
    delayed = s["most_delayed_pairs"]
    assert delayed and delayed[0]["delay_min"] >= 0
    feats = res.geojson()["features"]
    assert feats[0]["geometry"]["type"] == "LineString" and len(feats) == s["links"]


def test_lane_closure_halves_capacity_and_extra_demand_adds_trips(pack_ctx: tuple) -> None:  # type: ignore[type-arg]
    pack, ctx = pack_ctx
    primary = next(r for r, c in zip(ctx.net.road, ctx.net.road_class, strict=True) if c == "primary")
    res = run(pack, TrafficRequest(lane_closures=[{"link": primary, "lanes_closed": 1}],
                                   extra_demand=[{"zone": "kiel:gaarden:neighbourhood:gaarden", "trips": 1000, "note": "Kieler Woche"}]),
              ctx=ctx)
    s = res.summary()
    assert s["trips"] == pytest.approx(s["trips_before"] + 1000, abs=0.5)
    lane = [x for x in res.links() if x["road"] == primary]
    assert all(x["capacity"] == 1000.0 and not x["closed"] for x in lane)  # 2 lanes of 1000 veh/h, one closed
    assert s["vkt"]["after"] > s["vkt"]["before"]


def test_roads_a_flood_cuts_close_and_a_zone_cut_off_is_reported(pack_ctx: tuple) -> None:  # type: ignore[type-arg]
    pack, ctx = pack_ctx
    hood = "kiel:friedrichsort:neighbourhood:friedrichsort"
    every = sorted({r for r in ctx.net.road if r.startswith("kiel:friedrichsort:")})
    res = run(pack, TrafficRequest(name="flooded"), flood_roads=every + ["kiel:gaarden:road:not-in-pack"], ctx=ctx)
    s = res.summary()
    assert s["flood_roads_closed"] == every and s["unreachable_pair_count"] > 0
    # every trip within the quarter is cut off, but for trips between zones that join the same junction (their
    # connectors still meet there)
    net, links = ctx.net, ctx.net.link_index()
    zones = [i for i, g in enumerate(net.zone_group) if g == hood]
    junction = {i: int(net.b[links[f"{net.zones[i]}:out"]]) for i in zones}
    cut = sum(float(ctx.demand[i, j]) for i in zones for j in zones if junction[i] != junction[j])
    assert cut > 0 and s["unreachable_trips"] == pytest.approx(cut, abs=0.1)
    cut_pairs = {(net.zones[i], net.zones[j]) for i in zones for j in zones
                 if junction[i] != junction[j] and ctx.demand[i, j] > 0}
    assert {(p["from"], p["to"]) for p in s["unreachable_pairs"]} == cut_pairs
    # the quarter as a whole is reported cut off from itself only where no two of its zones still meet
    shared = len(set(junction.values())) < len(zones)
    assert {(p["from"], p["to"]) for p in s["pairs_cut_off"]} == (set() if shared else {(hood, hood)})
    assert s["scenario"]["converged"]


def test_bad_requests_are_named(pack_ctx: tuple) -> None:  # type: ignore[type-arg]
    pack, ctx = pack_ctx
    with pytest.raises(NetworkError, match="unknown link or road id"):
        run(pack, TrafficRequest(closures=["kiel:gaarden:road:nope"]), ctx=ctx)
    with pytest.raises(NetworkError, match="unknown zone or neighbourhood 'atlantis'"):
        run(pack, TrafficRequest(extra_demand=[{"zone": "atlantis", "trips": 5}]), ctx=ctx)
    with pytest.raises(ValidationError):
        TrafficRequest(gap=0.5)
    with pytest.raises(ValidationError):
        TrafficRequest.model_validate({"kind": "flood"})


def test_same_request_same_results(pack_ctx: tuple) -> None:  # type: ignore[type-arg]
    pack, ctx = pack_ctx
    req = TrafficRequest(closures=[_busiest_road(ctx)])
    a, b = run(pack, req, ctx=ctx), run(pack, req, ctx=ctx)
    assert a.run.volume.tobytes() == b.run.volume.tobytes()
    assert a.summary() == {**b.summary(), "baseline": a.summary()["baseline"], "scenario": a.summary()["scenario"]}


def test_road_works_under_way_become_lane_closures() -> None:
    from datetime import UTC, datetime

    from twin.traffic.scenario import road_works_closures

    roads = {"r1": {"works": [{"starts_at": "2027-06-01T08:00:00+00:00", "ends_at": "2027-06-06T08:00:00+00:00", "lanes_closed": 1},
                              {"starts_at": "2027-06-03T08:00:00+00:00", "ends_at": "2027-06-04T08:00:00+00:00", "lanes_closed": 2}]},
             "r2": {"works": [{"starts_at": "2027-07-01T08:00:00+00:00", "ends_at": "2027-07-02T08:00:00+00:00", "lanes_closed": 1}]},
             "r3": {"works": [{"starts_at": "2027-06-01T08:00:00+00:00", "ends_at": "2027-06-09T08:00:00+00:00", "lanes_closed": 0}]}}
    got = road_works_closures(roads, datetime(2027, 6, 3, 12, tzinfo=UTC))
    assert [(w.link, w.lanes_closed) for w in got] == [("r1", 2)]  # r2 not yet, r3 closes no lane
    assert [(w.link, w.lanes_closed) for w in road_works_closures(roads, datetime(2027, 6, 2, tzinfo=UTC))] == [("r1", 1)]


def test_counts_scale_the_demand_and_report_the_fit(pack_ctx: tuple) -> None:  # type: ignore[type-arg]
    from twin.traffic.assign import assign
    from twin.traffic.counts import Count, geh, road_volumes

    pack, ctx = pack_ctx
    # counts made from an assignment of twice the demand: the fitted factor must come out near 2, the fit near perfect
    truth = assign(ctx.net, ctx.demand * 2.0).volume
    roads = sorted({r for r, c in zip(ctx.net.road, ctx.net.road_class, strict=True) if c == "primary"})[::4][:8]
    vols = road_volumes(ctx.net, truth, roads)
    counts = [Count(station=f"s{i}", road=r, vehicles_per_hour=round(vols[r], 1)) for i, r in enumerate(roads)]
    res = run(pack, TrafficRequest(counts=[*counts, Count(station="elsewhere", road="kiel:x:road:none", vehicles_per_hour=5)],
                                   count_method="factor"), ctx=ctx)
    f = res.summary()["count_fit"]
    assert f["demand_factor"] == pytest.approx(2.0, rel=0.05) and f["stations_ignored"] == 1
    assert f["before"]["r2"] < f["after"]["r2"] and f["after"]["r2"] > 0.98
    assert f["after"]["geh_under_5"] == 1.0 and len(f["after"]["stations"]) == 8
    assert res.summary()["trips_before"] == pytest.approx(float(ctx.demand.sum()) * f["demand_factor"], rel=1e-3)
    assert geh(100, 100) == 0 and geh(150, 100) == pytest.approx(4.47, abs=0.01)
