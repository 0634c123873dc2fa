"""The region pack's roads as a traffic network, zones per neighbourhood and a synthetic demand preset.

The pack's roads are lines that cross without sharing a vertex; they are noded (split where they cross, with shapely)
and every piece becomes a link in each direction (the pack has no one-way tags). Each neighbourhood is cut into zones
of :data:`ZONE_CELL_M` metres by its buildings; a zone's centroid (its buildings' floor-area-weighted centre) joins the
nearest junction by a connector in each direction, and no route passes through a centroid.

Demand preset ``gravity-floor-area-v1`` (SYNTHETIC, a documented assumption, not a survey): a zone produces
:data:`TRIP_RATE` car trips per 100 m2 of residential floor area in the peak hour (mixed use counts half), and attracts
in proportion to its floor area of commercial, public and mixed use plus a tenth of its residential floor area; trips
from a zone are spread over the others by attraction x exp(-BETA x free-flow minutes) (a production-constrained
gravity model). Floor area = footprint x storeys (height / 3 m). Zones that no road joins get no trips."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely import STRtree
from shapely.geometry import LineString, MultiLineString, Point, Polygon

from twin.geo import to_metric, to_wgs84
from twin.region import RegionPack
from twin.traffic.network import BPR_ALPHA, BPR_BETA, Network, NetworkError, road_class_values

ZONE_CELL_M = 500.0
TRIP_RATE = 0.6  # peak-hour car trips per 100 m2 of residential floor area
BETA = 0.15  # per minute of free-flow travel time
STOREY_M = 3.0
CONNECTOR_KMH = 20.0
NOT_FOR_CARS = {"pedestrian", "cycleway", "footway", "path", "steps", "bridleway"}
PRESET = "gravity-floor-area-v1"


@dataclass
class Zone:
    id: str
    neighbourhood: str
    lon: float
    lat: float
    production: float  # trips per peak hour
    attraction: float  # relative weight


def _floor_area(footprint: list[tuple[float, float]], height_m: float) -> float:
    return float(to_metric(Polygon(footprint)).area) * max(1.0, round(height_m / STOREY_M))


def zones_of(pack: RegionPack) -> list[Zone]:
    """Zones per neighbourhood: its buildings grouped in cells of ZONE_CELL_M metres (only cells with buildings)."""
    cells: dict[tuple[str, int, int], list[tuple[float, float, float, float, float]]] = {}
    for b in sorted(pack.buildings.values(), key=lambda b: b.id):
        c = to_metric(Polygon(b.footprint)).centroid
        area = _floor_area(b.footprint, b.height_m)
        prod = area * (1.0 if b.use == "residential" else 0.5 if b.use == "mixed" else 0.0)
        attr = area * (0.1 if b.use == "residential" else 1.0)
        key = (str(b.neighbourhood), int(c.x // ZONE_CELL_M), int(c.y // ZONE_CELL_M))
        cells.setdefault(key, []).append((c.x, c.y, area, prod, attr))
    out = []
    counters: dict[str, int] = {}
    for (hood, _, _), items in sorted(cells.items()):
        arr = np.array(items)
        w = arr[:, 2]
        x, y = float(np.average(arr[:, 0], weights=w)), float(np.average(arr[:, 1], weights=w))
        p = to_wgs84(Point(x, y))
        counters[hood] = counters.get(hood, 0) + 1
        out.append(Zone(f"{hood}/z{counters[hood]}", hood, round(p.x, 7), round(p.y, 7),
                        production=float(arr[:, 3].sum()) * TRIP_RATE / 100.0, attraction=float(arr[:, 4].sum())))
    return out


def network_of(pack: RegionPack) -> tuple[Network, list[Zone]]:
    """The pack's drivable roads, noded, with a zone per neighbourhood cell and its connectors."""
    roads = [r for r in sorted(pack.roads.values(), key=lambda r: r.id) if r.road_class not in NOT_FOR_CARS]
    if not roads:
        raise NetworkError(f"region pack {pack.id!r} has no drivable roads; import them with 'plietsch region import --osm'")
    metric = [to_metric(LineString(r.line)) for r in roads]
    pieces = list(shapely.get_parts(shapely.node(MultiLineString(metric))))  # type: ignore[arg-type]
    tree = STRtree(metric)
    node_of: dict[tuple[float, float], int] = {}
    coords: list[tuple[float, float]] = []

    def node(pt: tuple[float, float]) -> int:
        key = (round(pt[0], 1), round(pt[1], 1))
        if key not in node_of:
            node_of[key] = len(coords)
            coords.append(key)
        return node_of[key]

    rows: list[tuple[Any, ...]] = []
    pieces_of: dict[str, int] = {}
    for piece in pieces:
        if piece.length < 0.5:
            continue
        road_i = int(tree.query_nearest(piece.interpolate(0.5, normalized=True))[0])
        r = roads[road_i]
        try:
            per_lane, speed = road_class_values(r.road_class)
        except NetworkError as exc:
            raise NetworkError(f"road {r.id}: {exc}") from None
        pts = list(piece.coords)
        u, v = node(pts[0]), node(pts[-1])
        if u == v:
            continue
        geom = [(round(x, 7), round(y, 7)) for x, y in to_wgs84(piece).coords]
        k = pieces_of[r.id] = pieces_of.get(r.id, 0) + 1
        for a, b, g, tag in ((u, v, geom, "ab"), (v, u, geom[::-1], "ba")):
            rows.append((r.id, f"{r.id}#{k}{tag}", a, b, piece.length, float(r.lanes), per_lane * r.lanes, speed,
                         r.road_class, g))
    n_road_nodes = len(coords)
    zones = zones_of(pack)
    if not zones:
        raise NetworkError(f"region pack {pack.id!r} has no buildings to place zones at")
    node_tree = STRtree([Point(c) for c in coords])
    names = [f"n{i}" for i in range(n_road_nodes)]
    origin, dest = [], []
    for z in zones:
        zp = to_metric(Point(z.lon, z.lat))
        near = int(node_tree.query_nearest(zp)[0])
        dist = max(1.0, float(zp.distance(Point(coords[near]))))
        o, d = len(names), len(names) + 1
        names += [z.id, f"{z.id}>"]
        origin.append(o)
        dest.append(d)
        cgeom = [(z.lon, z.lat), tuple(round(v, 7) for v in to_wgs84(Point(coords[near])).coords[0])]
        rows.append(("", f"{z.id}:out", o, near, dist, 1.0, 100_000.0, CONNECTOR_KMH, "connector", cgeom))
        rows.append(("", f"{z.id}:in", near, d, dist, 1.0, 100_000.0, CONNECTOR_KMH, "connector", cgeom[::-1]))
    length = np.array([r[4] for r in rows])
    speeds = np.array([r[7] for r in rows])
    net = Network(
        nodes=names, link_ids=[r[1] for r in rows], a=np.array([r[2] for r in rows], dtype=np.int64),
        b=np.array([r[3] for r in rows], dtype=np.int64), length_m=length, lanes=np.array([r[5] for r in rows]),
        capacity=np.array([r[6] for r in rows]), speed_kmh=speeds, fft=length / 1000.0 / speeds * 60.0,
        alpha=np.where(np.array([r[8] for r in rows]) == "connector", 0.0, BPR_ALPHA), beta=np.full(len(rows), BPR_BETA),
        road_class=[r[8] for r in rows], zones=[z.id for z in zones], origin_node=np.array(origin, dtype=np.int64),
        dest_node=np.array(dest, dtype=np.int64), road=[r[0] for r in rows], geometry=[r[9] for r in rows],
        zone_group=[z.neighbourhood for z in zones])
    net.validate()
    return net, zones


def gravity(net: Network, zones: list[Zone], free_flow_skim: np.ndarray) -> np.ndarray:
    """The ``gravity-floor-area-v1`` preset (SYNTHETIC): trips per peak hour between zones."""
    prod = np.array([z.production for z in zones])
    attr = np.array([z.attraction for z in zones])
    with np.errstate(over="ignore"):
        f = np.where(np.isfinite(free_flow_skim), np.exp(-BETA * np.nan_to_num(free_flow_skim, posinf=0.0)), 0.0)
    np.fill_diagonal(f, 0.0)
    w = attr[None, :] * f
    tot = w.sum(axis=1, keepdims=True)
    share = np.divide(w, tot, out=np.zeros_like(w), where=tot > 0)
    od = prod[:, None] * share
    if not math.isfinite(float(od.sum())):
        raise NetworkError("the gravity model gave a non-finite demand; check the buildings' heights and footprints")
    return od
