"""The directed road network: nodes, links (length, lanes, capacity, free-flow speed and time, road class) and zones.

Sources: a region pack's roads (noded where they cross), and TNTP files (``_net.tntp``, ``_trips.tntp``: the text
format of the transportation research networks). Capacity and free-flow speed come from :data:`ROAD_CLASSES`, one
table for the pack's ``road_class`` and OpenStreetMap ``highway`` tags alike.

Zones are where trips start and end. A zone has an origin node (trips leave from it) and a destination node (trips
arrive there); when they differ, no route can pass through the zone (TNTP's "first thru node", and the pack's centroid
connectors)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

# road class (OpenStreetMap highway tag) -> (capacity per lane in vehicles/hour, free-flow speed in km/h).
# Planning values in the range of the German HBS 2015 and the HCM for urban roads; ``*_link`` tags take their road's
# values. A documented preset, not a calibration: replace per road with measured values where they exist.
ROAD_CLASSES: dict[str, tuple[float, float]] = {
    "motorway": (1900.0, 110.0),
    "trunk": (1700.0, 80.0),
    "primary": (1000.0, 50.0),
    "secondary": (900.0, 50.0),
    "tertiary": (800.0, 40.0),
    "unclassified": (600.0, 40.0),
    "residential": (500.0, 30.0),
    "living_street": (300.0, 10.0),
    "service": (300.0, 20.0),
    "connector": (100_000.0, 30.0),  # zone centroid connectors: never a bottleneck
}
BPR_ALPHA = 0.15  # t = t0 * (1 + alpha * (v/c)^beta), the Bureau of Public Roads function with its usual parameters
BPR_BETA = 4.0


class NetworkError(ValueError):
    """A network or demand file that cannot be used; the message names the link, zone or line."""


def road_class_values(tag: str) -> tuple[float, float]:
    """Capacity per lane (veh/h) and free-flow speed (km/h) of a road class or OSM highway tag."""
    base = tag[:-5] if tag.endswith("_link") else tag
    if base not in ROAD_CLASSES:
        raise NetworkError(f"unknown road class {tag!r}; known: {', '.join(ROAD_CLASSES)}")
    return ROAD_CLASSES[base]


@dataclass
class Network:
    """A directed graph. Link arrays are aligned: link i runs from node ``a[i]`` to ``b[i]``."""

    nodes: list[str]
    link_ids: list[str]
    a: np.ndarray
    b: np.ndarray
    length_m: np.ndarray
    lanes: np.ndarray
    capacity: np.ndarray  # vehicles per hour (TNTP: the file's unit)
    speed_kmh: np.ndarray
    fft: np.ndarray  # free-flow travel time, minutes (TNTP: the file's unit)
    alpha: np.ndarray
    beta: np.ndarray
    road_class: list[str]
    zones: list[str]
    origin_node: np.ndarray  # per zone
    dest_node: np.ndarray  # per zone
    road: list[str] = field(default_factory=list)  # the region pack road each link belongs to ("" if none)
    geometry: list[list[tuple[float, float]]] = field(default_factory=list)  # lon/lat per link, pack networks only
    zone_group: list[str] = field(default_factory=list)  # per zone: its neighbourhood (pack) or the zone itself

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_links(self) -> int:
        return len(self.link_ids)

    def link_index(self) -> dict[str, int]:
        return {lid: i for i, lid in enumerate(self.link_ids)}

    def links_of(self, ids: list[str]) -> np.ndarray:
        """Link indices named by link ids or region-pack road ids (a road closes all its links, both directions)."""
        index = self.link_index()
        by_road: dict[str, list[int]] = {}
        for i, r in enumerate(self.road):
            if r:
                by_road.setdefault(r, []).append(i)
        out: list[int] = []
        unknown = []
        for x in ids:
            if x in index:
                out.append(index[x])
            elif x in by_road:
                out.extend(by_road[x])
            else:
                unknown.append(x)
        if unknown:
            raise NetworkError(f"unknown link or road id(s): {', '.join(sorted(unknown)[:10])}"
                               f"{' ...' if len(unknown) > 10 else ''}; list the links with GET /traffic/network")
        return np.array(sorted(set(out)), dtype=np.int64)

    def with_capacity(self, capacity: np.ndarray) -> Network:
        return replace(self, capacity=capacity)

    def validate(self) -> None:
        """Refuse numbers no assignment can use, naming the first bad link."""
        checks = (("capacity", self.capacity, lambda v: v > 0), ("free-flow time", self.fft, lambda v: v >= 0),
                  ("length", self.length_m, lambda v: v >= 0), ("BPR alpha", self.alpha, lambda v: v >= 0),
                  ("BPR beta", self.beta, lambda v: v >= 0))
        for name, values, ok in checks:
            good = np.isfinite(values) & ok(values)
            if not good.all():
                i = int(np.flatnonzero(~good)[0])
                raise NetworkError(f"link {self.link_ids[i]} ({self.nodes[self.a[i]]} -> {self.nodes[self.b[i]]}): "
                                   f"{name} {float(values[i]):g} is not usable; it must be a finite number"
                                   f"{' above 0' if name == 'capacity' else ' of 0 or more'}")


# --- TNTP ---------------------------------------------------------------------------------------------------------

_META = re.compile(r"<([^>]+)>\s*(.*)")


def _metadata(lines: list[str], path: Path) -> tuple[dict[str, str], int]:
    meta: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = _META.match(line.strip())
        if m is None:
            continue
        key = m.group(1).strip().upper()
        if key == "END OF METADATA":
            return meta, i + 1
        meta[key] = m.group(2).strip()
    raise NetworkError(f"{path}: no <END OF METADATA> line; is this a TNTP file?")


def _int_meta(meta: dict[str, str], key: str, path: Path, default: int | None = None) -> int:
    if key not in meta:
        if default is not None:
            return default
        raise NetworkError(f"{path}: metadata <{key}> is missing")
    try:
        return int(float(meta[key]))
    except ValueError:
        raise NetworkError(f"{path}: metadata <{key}> is {meta[key]!r}, not a number") from None


def read_tntp_net(path: Path) -> Network:
    """A TNTP network file: init_node term_node capacity length free_flow_time b power speed toll link_type ;"""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise NetworkError(f"{path}: no such network file") from None
    meta, start = _metadata(lines, path)
    n_zones = _int_meta(meta, "NUMBER OF ZONES", path)
    n_nodes = _int_meta(meta, "NUMBER OF NODES", path)
    first_thru = _int_meta(meta, "FIRST THRU NODE", path, default=1)
    n_links_declared = _int_meta(meta, "NUMBER OF LINKS", path)
    if not 0 < n_zones <= n_nodes:
        raise NetworkError(f"{path}: {n_zones} zones for {n_nodes} nodes; zones are nodes 1..zones, so 0 < zones <= nodes")
    rows: list[tuple[int, int, float, float, float, float, float, float, str]] = []
    for lineno, raw in enumerate(lines[start:], start=start + 1):
        text = raw.split("~", 1)[0].strip().rstrip(";").strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) < 7:
            raise NetworkError(f"{path} line {lineno}: {len(parts)} fields, a link needs at least 7 "
                               "(init_node term_node capacity length free_flow_time b power)")
        try:
            ai, bi = int(parts[0]), int(parts[1])
            cap, length, fft, bb, power = (float(x) for x in parts[2:7])
            speed = float(parts[7]) if len(parts) > 7 else 0.0
        except ValueError as exc:
            raise NetworkError(f"{path} line {lineno} (link {parts[0]}->{parts[1]}): {exc}") from None
        for node in (ai, bi):
            if not 1 <= node <= n_nodes:
                raise NetworkError(f"{path} line {lineno} (link {ai}->{bi}): node {node} is outside 1..{n_nodes}")
        link_type = parts[9] if len(parts) > 9 else "1"
        rows.append((ai, bi, cap, length, fft, bb, power, speed, link_type))
    if len(rows) != n_links_declared:
        raise NetworkError(f"{path}: <NUMBER OF LINKS> says {n_links_declared}, the file has {len(rows)} links")
    names = [str(i) for i in range(1, n_nodes + 1)]
    arr = np.array([r[:8] for r in rows], dtype=np.float64).reshape(-1, 8)
    a = arr[:, 0].astype(np.int64) - 1
    b = arr[:, 1].astype(np.int64) - 1
    zones = [str(z) for z in range(1, n_zones + 1)]
    origin = np.arange(n_zones, dtype=np.int64)
    dest = origin.copy()
    blocked = [z for z in range(n_zones) if z + 1 < first_thru]
    if blocked:  # zones that are no through nodes: arriving links end at a sink copy of the zone's node
        sink = {z: n_nodes + k for k, z in enumerate(blocked)}
        names += [f"{z + 1}>" for z in blocked]
        for z, s in sink.items():
            b[b == z] = s
            dest[z] = s
    link_ids = [f"{int(x)}-{int(y)}" for x, y in arr[:, :2]]
    dup = {lid for lid in link_ids if link_ids.count(lid) > 1} if len(set(link_ids)) != len(link_ids) else set()
    if dup:  # parallel links keep apart by their position in the file
        seen: dict[str, int] = {}
        for i, lid in enumerate(link_ids):
            if lid in dup:
                seen[lid] = seen.get(lid, 0) + 1
                link_ids[i] = f"{lid}#{seen[lid]}"
    net = Network(nodes=names, link_ids=link_ids, a=a, b=b, length_m=arr[:, 3], lanes=np.ones(len(rows)),
                  capacity=arr[:, 2], speed_kmh=arr[:, 7], fft=arr[:, 4], alpha=arr[:, 5], beta=arr[:, 6],
                  road_class=[r[8] for r in rows], zones=zones, origin_node=origin, dest_node=dest,
                  road=[""] * len(rows), zone_group=list(zones))
    net.validate()
    return net


def read_tntp_trips(path: Path, zones: int) -> np.ndarray:
    """A TNTP trips file as a zones x zones matrix (row origin, column destination)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise NetworkError(f"{path}: no such trips file") from None
    meta, start = _metadata(lines, path)
    declared = _int_meta(meta, "NUMBER OF ZONES", path)
    if declared != zones:
        raise NetworkError(f"{path}: {declared} zones, but the network has {zones}; are these files of one network?")
    od = np.zeros((zones, zones))
    origin: int | None = None
    for lineno, raw in enumerate(lines[start:], start=start + 1):
        text = raw.split("~", 1)[0].strip()
        if not text:
            continue
        if text.lower().startswith("origin"):
            try:
                origin = int(text.split()[1])
            except (IndexError, ValueError):
                raise NetworkError(f"{path} line {lineno}: {text!r} is not 'Origin <zone>'") from None
            if not 1 <= origin <= zones:
                raise NetworkError(f"{path} line {lineno}: origin zone {origin} is outside 1..{zones}")
            continue
        if origin is None:
            raise NetworkError(f"{path} line {lineno}: demand before the first 'Origin' line")
        for item in text.split(";"):
            item = item.strip()
            if not item:
                continue
            dest_s, _, value_s = item.partition(":")
            try:
                dest, value = int(dest_s), float(value_s)
            except ValueError:
                raise NetworkError(f"{path} line {lineno} (origin {origin}): {item!r} is not 'zone : trips'") from None
            if not 1 <= dest <= zones:
                raise NetworkError(f"{path} line {lineno}: destination zone {dest} (from origin {origin}) is outside 1..{zones}")
            if not math.isfinite(value) or value < 0:
                raise NetworkError(f"{path} line {lineno}: trips {origin} -> {dest} is {value_s.strip()!r}; it must be 0 or more")
            od[origin - 1, dest - 1] += value
    total = meta.get("TOTAL OD FLOW")
    if total is not None:
        try:
            declared_total = float(total)
        except ValueError:
            declared_total = float("nan")
        if math.isfinite(declared_total) and not math.isclose(declared_total, od.sum(), rel_tol=1e-3, abs_tol=1e-6):
            raise NetworkError(f"{path}: <TOTAL OD FLOW> says {declared_total:g}, the rows add up to {od.sum():g}")
    return od


def write_tntp(net: Network, od: np.ndarray, net_path: Path, trips_path: Path) -> None:
    """Write a network whose zones are nodes 1..Z (as TNTP needs) and its demand; used for fixtures and the bench."""
    lines = [f"<NUMBER OF ZONES> {len(net.zones)}", f"<NUMBER OF NODES> {net.n_nodes}", "<FIRST THRU NODE> 1",
             f"<NUMBER OF LINKS> {net.n_links}", "<END OF METADATA>", "",
             "~\tinit_node\tterm_node\tcapacity\tlength\tfree_flow_time\tb\tpower\tspeed\ttoll\tlink_type\t;"]
    for i in range(net.n_links):
        lines.append(f"\t{net.a[i] + 1}\t{net.b[i] + 1}\t{net.capacity[i]:.6g}\t{net.length_m[i]:.6g}\t{net.fft[i]:.6g}"
                     f"\t{net.alpha[i]:g}\t{net.beta[i]:g}\t{net.speed_kmh[i]:g}\t0\t1\t;")
    Path(net_path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = [f"<NUMBER OF ZONES> {len(net.zones)}", f"<TOTAL OD FLOW> {od.sum():.6f}", "<END OF METADATA>", ""]
    for o in range(od.shape[0]):
        out.append(f"Origin \t{o + 1}")
        out.append(" ".join(f"{d + 1} : {od[o, d]:.6f};" for d in np.flatnonzero(od[o] > 0)))
    Path(trips_path).write_text("\n".join(out) + "\n", encoding="utf-8")


def from_links(links: list[tuple[str, str, float, float, float, float]], zones: list[str],
               through_zones: bool = True) -> Network:
    """A network from ``(from, to, free_flow_time, capacity, alpha, beta)`` rows; zones are node names. Small
    networks for tests and examples. With ``through_zones=False`` no route passes through a zone node."""
    names: list[str] = list(zones)
    for u, v, *_ in links:
        for x in (u, v):
            if x not in names:
                names.append(x)
    pos = {x: i for i, x in enumerate(names)}
    arr = np.array([r[2:] for r in links], dtype=np.float64).reshape(-1, 4)
    a = np.array([pos[r[0]] for r in links], dtype=np.int64)
    b = np.array([pos[r[1]] for r in links], dtype=np.int64)
    origin = np.array([pos[z] for z in zones], dtype=np.int64)
    dest = origin.copy()
    if not through_zones:
        for k, zname in enumerate(zones):
            names.append(f"{zname}>")
            b[b == pos[zname]] = len(names) - 1
            dest[k] = len(names) - 1
    net = Network(nodes=names, link_ids=[f"{r[0]}-{r[1]}" for r in links], a=a, b=b, length_m=np.zeros(len(links)),
                  lanes=np.ones(len(links)), capacity=arr[:, 1], speed_kmh=np.zeros(len(links)), fft=arr[:, 0],
                  alpha=arr[:, 2], beta=arr[:, 3], road_class=["link"] * len(links), zones=list(zones),
                  origin_node=origin, dest_node=dest, road=[""] * len(links), zone_group=list(zones))
    net.validate()
    return net
