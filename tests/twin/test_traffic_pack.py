"""The bundled region pack as a traffic network, its zones and the synthetic gravity demand."""

from __future__ import annotations

import numpy as np
import pytest

from twin.region import bundled_pack
from twin.traffic.assign import Graph, assign, shortest
from twin.traffic.network import ROAD_CLASSES, NetworkError, road_class_values
from twin.traffic.pack import gravity, network_of


@pytest.fixture(scope="module")
def kiel() -> tuple:  # type: ignore[type-arg]
    pack = bundled_pack()
    net, zones = network_of(pack)
    skim, _ = shortest(Graph(net, np.ones(net.n_links, dtype=bool)), net.fft, None)
    return pack, net, zones, skim


def test_roads_are_noded_into_a_connected_network_per_neighbourhood(kiel: tuple) -> None:  # type: ignore[type-arg]
    pack, net, zones, skim = kiel
    assert {r for r in net.road if r} == set(pack.roads)  # every road is in the network
    assert net.n_links > 2 * len(pack.roads)  # crossing roads were split at their junctions
    hoods = sorted({z.neighbourhood for z in zones})
    assert hoods == sorted(pack.neighbourhoods)
    group = np.array(net.zone_group)
    same = group[:, None] == group[None, :]
    off = ~np.eye(len(zones), dtype=bool)
    assert np.isfinite(skim[same & off]).all()  # within a neighbourhood every zone reaches every other
    assert np.isinf(skim[~same]).all()  # the synthetic pack has no road across the fjord
    primary = [i for i, c in enumerate(net.road_class) if c == "primary"]
    per_lane, speed = ROAD_CLASSES["primary"]
    assert net.capacity[primary[0]] == per_lane * 2 and net.speed_kmh[primary[0]] == speed
    i = primary[0]
    assert net.fft[i] == pytest.approx(net.length_m[i] / 1000 / speed * 60)


def test_gravity_demand_is_synthetic_positive_and_only_between_joined_zones(kiel: tuple) -> None:  # type: ignore[type-arg]
    _, net, zones, skim = kiel
    od = gravity(net, zones, skim)
    assert od.sum() > 1000 and (od >= 0).all() and np.trace(od) == 0
    assert (od[np.isinf(skim)] == 0).all()
    assert od.sum(axis=1) == pytest.approx([z.production for z in zones])  # production-constrained
    res = assign(net, od)
    assert res.converged and not res.unreachable
    assert (res.volume[[i for i, c in enumerate(net.road_class) if c == "connector"]] >= 0).all()


def test_road_class_table_serves_osm_tags() -> None:
    assert road_class_values("primary_link") == ROAD_CLASSES["primary"]
    with pytest.raises(NetworkError, match="unknown road class 'bridleway_x'"):
        road_class_values("bridleway_x")


def test_an_osm_import_becomes_the_network(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`plietsch region import --osm` writes the roads with their highway tag and lanes; the network reads the capacity
    and speed of that tag from the same table."""
    import shutil
    from pathlib import Path

    from twin.importers import import_into_pack
    from twin.region import load_pack

    root = Path(__file__).resolve().parents[2]
    pack_dir = tmp_path / "kiel"
    shutil.copytree(root / "twin" / "regions" / "kiel", pack_dir)
    import_into_pack(pack_dir, osm=root / "tests" / "fixtures" / "gaarden_small.osm", licence="ODbL-1.0")
    net, zones = network_of(load_pack(pack_dir))
    roads = [i for i, c in enumerate(net.road_class) if c != "connector"]
    assert roads and all(net.road_class[i] == "secondary" and net.lanes[i] == 2 for i in roads)
    per_lane, speed = ROAD_CLASSES["secondary"]
    assert all(net.capacity[i] == 2 * per_lane and net.speed_kmh[i] == speed for i in roads)
    assert ":road:osm-w" in net.road[roads[0]]
    assert zones and len(net.zones) == len(zones)
