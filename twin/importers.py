"""Importers for real open data into a region pack: OpenStreetMap XML (buildings, roads), CityJSON (LoD1/LoD2
buildings, as Schleswig-Holstein publishes them) and GeoTIFF terrain (DGM1). Coordinates are reprojected to WGS84
(from EPSG:25832 unless the file says otherwise). Every error names the file, the feature and the problem."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from shapely.geometry import LineString, MultiPoint, Point, Polygon
from shapely.ops import unary_union

from twin.geo import WGS84, transformer
from twin.region import RegionPack

LEVEL_HEIGHT_M = 3.0
ROAD_CLASSES = {"motorway", "trunk", "primary", "secondary", "tertiary", "unclassified", "residential", "living_street",
                "service", "pedestrian", "cycleway"}


class ImportError_(ValueError):
    """A file could not be imported; the message names the file, the feature and the problem."""


def _fail(path: Path, feature: str, problem: str) -> ImportError_:
    return ImportError_(f"{path.name}: {feature}: {problem}")


def _hood_for(pack: RegionPack, lon: float, lat: float) -> str:
    for n in pack.neighbourhoods.values():
        if Polygon(n.polygon).contains(Point(lon, lat)):
            return n.id.scope
    return "_"


def _number(raw: str) -> float:
    m = re.fullmatch(r"\s*([0-9]+(?:[.,][0-9]+)?)\s*(m|meters?|metres?)?\s*", raw)
    if not m:
        raise ValueError(f"not a height in metres: {raw!r}")
    return float(m.group(1).replace(",", "."))


@dataclass
class Imported:
    buildings: list[dict[str, Any]]
    roads: list[dict[str, Any]]
    warnings: list[str]


def import_osm(path: Path, pack: RegionPack) -> Imported:
    """Buildings (height from ``height``, else ``building:levels`` x 3 m) and roads (``highway``) from OSM XML."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise _fail(path, "XML", f"not well-formed ({exc})") from None
    except FileNotFoundError:
        raise ImportError_(f"{path}: file not found") from None
    if root.tag != "osm":
        raise _fail(path, "root element", f"expected <osm>, got <{root.tag}>")
    nodes: dict[str, tuple[float, float]] = {}
    for n in root.iter("node"):
        try:
            nodes[n.attrib["id"]] = (float(n.attrib["lon"]), float(n.attrib["lat"]))
        except (KeyError, ValueError):
            raise _fail(path, f"node {n.attrib.get('id', '?')}", "needs numeric lat and lon") from None
    out = Imported([], [], [])
    for way in root.iter("way"):
        wid = way.attrib.get("id", "?")
        tags = {t.attrib["k"]: t.attrib.get("v", "") for t in way.iter("tag")}
        if "building" not in tags and tags.get("highway") not in ROAD_CLASSES:
            continue
        refs = [nd.attrib.get("ref", "") for nd in way.iter("nd")]
        missing = [r for r in refs if r not in nodes]
        if missing:
            raise _fail(path, f"way {wid}", f"refers to node(s) {', '.join(missing[:5])} not in the file; export with "
                                             "complete ways (e.g. osmium extract --strategy complete_ways)")
        coords = [nodes[r] for r in refs]
        if "building" in tags:
            if len(coords) < 4 or coords[0] != coords[-1]:
                raise _fail(path, f"way {wid} (building)", "footprint is not a closed ring of at least 3 points")
            try:
                if "height" in tags:
                    height, source = _number(tags["height"]), "height"
                elif "building:levels" in tags:
                    height, source = _number(tags["building:levels"]) * LEVEL_HEIGHT_M, "building:levels"
                else:
                    height, source = 2 * LEVEL_HEIGHT_M, "default (no height or levels tagged)"
                    out.warnings.append(f"{path.name}: way {wid}: no height or building:levels, assumed {height} m")
            except ValueError as exc:
                raise _fail(path, f"way {wid} (building)", str(exc)) from None
            c = Polygon(coords).centroid
            hood = _hood_for(pack, c.x, c.y)
            out.buildings.append(_feature("Polygon", [coords], {
                "id": f"{pack.id}:{hood}:building:osm-w{wid}", "name": tags.get("name", f"OSM way {wid}"), "synthetic": False,
                "neighbourhood": f"{pack.id}:{hood}:neighbourhood:{hood}" if hood != "_" else None,
                "height_m": round(height, 2), "use": tags.get("building", "yes"), "height_source": source}))
        else:
            mid = LineString(coords).interpolate(0.5, normalized=True)
            hood = _hood_for(pack, mid.x, mid.y)
            out.roads.append(_feature("LineString", coords, {
                "id": f"{pack.id}:{hood}:road:osm-w{wid}", "name": tags.get("name", f"OSM way {wid}"), "synthetic": False,
                "neighbourhood": f"{pack.id}:{hood}:neighbourhood:{hood}" if hood != "_" else None,
                "road_class": tags["highway"], "lanes": int(tags["lanes"]) if tags.get("lanes", "").isdigit() else 1}))
    return out


def _feature(kind: str, coords: Any, props: dict[str, Any]) -> dict[str, Any]:
    if props.get("neighbourhood") is None:
        props.pop("neighbourhood")
    return {"type": "Feature", "geometry": {"type": kind, "coordinates": coords}, "properties": props}


def _cityjson_crs(doc: dict[str, Any], default: str) -> str:
    ref = str(doc.get("metadata", {}).get("referenceSystem", ""))
    m = re.search(r"EPSG(?:/0/|::|:)(\d+)", ref)
    return f"EPSG:{m.group(1)}" if m else default


def _rings(boundaries: Any) -> list[list[int]]:
    """All rings (lists of vertex indices) in a CityJSON boundary of any nesting depth."""
    if boundaries and isinstance(boundaries[0], int):
        return [boundaries]
    return [r for b in boundaries for r in _rings(b)]


def import_cityjson(path: Path, pack: RegionPack, source_crs: str = "EPSG:25832") -> Imported:
    """LoD1/LoD2 buildings: footprint from the ground surfaces (or the lowest ring), height = top - ground."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportError_(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise _fail(path, "JSON", f"not valid JSON ({exc})") from None
    if doc.get("type") != "CityJSON":
        raise _fail(path, "document", f"'type' must be 'CityJSON', got {doc.get('type')!r}")
    crs = _cityjson_crs(doc, source_crs)
    verts = np.asarray(doc.get("vertices", []), dtype=float)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise _fail(path, "vertices", "expected a list of [x, y, z]")
    tr = doc.get("transform")
    if tr:
        verts = verts * np.asarray(tr["scale"]) + np.asarray(tr["translate"])
    to_wgs = transformer(crs, WGS84)
    out = Imported([], [], [])
    for oid, obj in doc.get("CityObjects", {}).items():
        if obj.get("type") not in ("Building", "BuildingPart"):
            continue
        geoms = [g for g in obj.get("geometry", []) if str(g.get("lod", "")).split(".")[0] in ("1", "2")]
        if not geoms:
            out.warnings.append(f"{path.name}: {oid}: no LoD1/LoD2 geometry, skipped")
            continue
        g = max(geoms, key=lambda g: str(g.get("lod")))
        try:
            rings = _rings(g["boundaries"])
            idx = sorted({i for r in rings for i in r})
            pts = verts[idx]
        except (KeyError, IndexError, TypeError):
            raise _fail(path, f"CityObject {oid}", "geometry boundaries refer to vertices that do not exist") from None
        ground, top = float(pts[:, 2].min()), float(pts[:, 2].max())
        height = float(obj.get("attributes", {}).get("measuredHeight", top - ground))
        if not height > 0:
            raise _fail(path, f"CityObject {oid}", f"height {height} m is not positive")
        flat = [r for r in rings if len(r) >= 3 and np.allclose(verts[r][:, 2], ground, atol=0.05)]
        footprint = unary_union([Polygon(verts[r][:, :2]) for r in flat]) if flat else MultiPoint(pts[:, :2]).convex_hull
        footprint = footprint.buffer(0)
        if footprint.geom_type != "Polygon" or footprint.is_empty:
            raise _fail(path, f"CityObject {oid}", "footprint is not a single polygon")
        lon, lat = to_wgs.transform(*np.asarray(footprint.exterior.coords).T)
        ring = [[round(float(x), 7), round(float(y), 7)] for x, y in zip(lon, lat, strict=True)]
        c = Polygon(ring).centroid
        hood = _hood_for(pack, c.x, c.y)
        name = re.sub(r"[^A-Za-z0-9._-]", "-", oid)[:100]
        out.buildings.append(_feature("Polygon", [ring], {
            "id": f"{pack.id}:{hood}:building:lod-{name}", "name": obj.get("attributes", {}).get("name", oid),
            "synthetic": False, "neighbourhood": f"{pack.id}:{hood}:neighbourhood:{hood}" if hood != "_" else None,
            "height_m": round(height, 2), "ground_m": round(ground, 2), "use": "lod" + str(g.get("lod")),
        }))
    return out


@dataclass(frozen=True)
class Terrain:
    heights: np.ndarray  # metres, row 0 is the north edge; NaN where there is no data
    origin_x: float  # west edge, in crs units
    origin_y: float  # north edge
    pixel_x: float
    pixel_y: float
    crs: str

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        rows, cols = self.heights.shape
        return (self.origin_x, self.origin_y - rows * self.pixel_y, self.origin_x + cols * self.pixel_x, self.origin_y)


def read_geotiff(path: Path, default_crs: str = "EPSG:25832") -> Terrain:
    """A single-band GeoTIFF elevation model (DGM1) with its georeference."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tags = {t.code: t.value for t in page.tags.values()}  # type: ignore[union-attr]
            data = page.asarray().astype("float64")  # type: ignore[union-attr]
    except FileNotFoundError:
        raise ImportError_(f"{path}: file not found") from None
    except (tifffile.TiffFileError, ValueError) as exc:
        raise _fail(path, "TIFF", f"not a readable TIFF ({exc})") from None
    if data.ndim != 2:
        raise _fail(path, "raster", f"expected one band, got shape {data.shape}")
    if 33550 not in tags or 33922 not in tags:
        raise _fail(path, "georeference", "no ModelPixelScale/ModelTiepoint tags: not a GeoTIFF (or a world file is needed)")
    sx, sy = float(tags[33550][0]), float(tags[33550][1])
    tie = tags[33922]
    i, j, x, y = float(tie[0]), float(tie[1]), float(tie[3]), float(tie[4])
    crs = default_crs
    keys = tags.get(34735)
    if keys is not None:
        k = list(keys)
        for n in range(4, len(k), 4):
            if k[n] in (3072, 2048) and k[n + 1] == 0:  # ProjectedCSTypeGeoKey / GeographicTypeGeoKey
                crs = f"EPSG:{k[n + 3]}"
    nodata = tags.get(42113)
    if nodata is not None:
        data[data == float(str(nodata).strip("\x00 "))] = np.nan
    return Terrain(data, x - i * sx, y + j * sy, sx, sy, crs)


def write_geotiff(path: Path, terrain: Terrain) -> None:
    epsg = int(terrain.crs.split(":")[1])
    geokeys = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, epsg)
    heights = np.where(np.isnan(terrain.heights), -9999.0, terrain.heights).astype("float32")
    tags: list[Any] = [  # ModelPixelScale, ModelTiepoint, GeoKeyDirectory, GDAL_NODATA
        (33550, "d", 3, (terrain.pixel_x, terrain.pixel_y, 0.0), False),
        (33922, "d", 6, (0.0, 0.0, 0.0, terrain.origin_x, terrain.origin_y, 0.0), False),
        (34735, "H", len(geokeys), geokeys, False),
        (42113, "s", 0, "-9999", False),
    ]
    tifffile.imwrite(path, heights, extratags=tags, compression="zlib")


def _write_layer(pack_dir: Path, manifest: dict[str, Any], layer: str, features: list[dict[str, Any]], source: str,
                 licence: str) -> None:
    name = f"{layer}.geojson"
    (pack_dir / name).write_text(json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":")) + "\n",
                                 encoding="utf-8")
    manifest["layers"][layer] = {"file": name, "source": source, "licence": licence, "synthetic": False}


def import_into_pack(pack_dir: Path, *, osm: Path | None = None, cityjson: Path | None = None, dgm: Path | None = None,
                     source_crs: str = "EPSG:25832", licence: str | None = None) -> list[str]:
    """Replace the pack's layers with imported real data; returns a line per layer written (and the warnings)."""
    from twin.region import load_pack  # the pack before the import, for neighbourhood attribution

    pack = load_pack(pack_dir)
    manifest = json.loads((pack_dir / "region.json").read_text(encoding="utf-8"))
    report: list[str] = []
    buildings: list[dict[str, Any]] = []
    if osm is not None:
        got = import_osm(osm, pack)
        report += got.warnings
        if got.roads:
            _write_layer(pack_dir, manifest, "roads", got.roads, f"OpenStreetMap ({osm.name})", licence or "ODbL-1.0")
            report.append(f"roads: {len(got.roads)} from {osm.name}")
        buildings += got.buildings
    if cityjson is not None:
        got = import_cityjson(cityjson, pack, source_crs)
        report += got.warnings
        buildings += got.buildings
    if buildings:
        sources = ", ".join(p.name for p in (osm, cityjson) if p is not None)
        _write_layer(pack_dir, manifest, "buildings", buildings, f"imported ({sources})", licence or "see source")
        report.append(f"buildings: {len(buildings)} from {sources}")
    if dgm is not None:
        terrain = read_geotiff(dgm, source_crs)
        write_geotiff(pack_dir / "terrain.tif", terrain)
        manifest["terrain"] = {"file": "terrain.tif", "source": f"GeoTIFF ({dgm.name}), {terrain.crs}",
                               "licence": licence or "DL-DE/BY-2.0", "synthetic": False,
                               "note": f"{terrain.heights.shape[1]}x{terrain.heights.shape[0]} cells of {terrain.pixel_x} m"}
        report.append(f"terrain: {terrain.heights.shape} cells from {dgm.name}")
    (pack_dir / "region.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    load_pack(pack_dir)  # the result must load
    return report
