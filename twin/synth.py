"""Build the bundled Kiel region pack: the real GSHHG shoreline, with synthetic neighbourhood outlines, roads,
buildings, sensors and coast-segment crest heights. Everything made up is flagged ``synthetic`` in the pack.

Deterministic for a given seed: ``plietsch region synth`` rewrites the same files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import LineString, MultiLineString, Point, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import substring

from twin.geo import land_polygon, read_gmt_segments, to_metric, to_wgs84

KIEL_BBOX = (10.00, 54.28, 10.35, 54.50)
KIEL_SEA_POINT = (10.16, 54.36)
# Synthetic outlines (UTM32 metres) placed on the real quarters; approximate, not official boundaries.
HOODS: dict[str, dict[str, Any]] = {
    "gaarden": {"name": "Gaarden", "center": (10.148, 54.3150), "size": (1500, 1300), "coast": ("quay_wall", 2.1)},
    "friedrichsort": {"name": "Friedrichsort", "center": (10.184, 54.3955), "size": (1400, 1200), "coast": ("dike", 2.6)},
}
GAUGES = [  # real station positions (WSV), readings are synthetic
    ("holtenau", "Kiel-Holtenau (WSV 9610066)", 10.15704, 54.37208),
    ("leuchtturm", "Kiel Leuchtturm (WSV 9610050)", 10.27326, 54.49959),
]
SYNTH = "synthetic (Plietsch Twin generator)"
SYNTH_LICENCE = "CC0-1.0"


def _fc(features: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features}


def _feature(geom: BaseGeometry, props: dict[str, Any]) -> dict[str, Any]:
    g = geom.__geo_interface__
    rounded = json.loads(json.dumps(g), parse_float=lambda s: round(float(s), 7))
    return {"type": "Feature", "geometry": rounded, "properties": props}


def _lines(geom: BaseGeometry) -> list[LineString]:
    if isinstance(geom, LineString):
        return [geom] if geom.length > 0 else []
    if isinstance(geom, MultiLineString):
        return [g for g in geom.geoms if g.length > 0]
    return [g for g in getattr(geom, "geoms", []) if isinstance(g, LineString) and g.length > 0]


def build_kiel_pack(out: Path, shoreline: Path, seed: int = 7, sensors_per_kind: int = 6) -> Path:
    rng = np.random.default_rng(seed)
    segments = read_gmt_segments(shoreline)
    land_m = to_metric(land_polygon(segments, KIEL_BBOX, KIEL_SEA_POINT))
    coast_m = [to_metric(s) for s in segments]
    hoods: list[dict[str, Any]] = []
    roads: list[dict[str, Any]] = []
    buildings: list[dict[str, Any]] = []
    sensors: list[dict[str, Any]] = []
    coast: list[dict[str, Any]] = []
    for slug, spec in HOODS.items():
        cx, cy = to_metric(Point(*spec["center"])).coords[0]  # type: ignore[index]
        w, h = spec["size"]  # type: ignore[misc]
        outline = box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2).intersection(land_m)
        if outline.geom_type != "Polygon":
            outline = max(outline.geoms, key=lambda g: g.area)  # type: ignore[attr-defined]
        outline = outline.simplify(15)
        hood_id = f"kiel:{slug}:neighbourhood:{slug}"
        hoods.append(_feature(to_wgs84(outline), {"id": hood_id, "name": spec["name"]}))
        # a street grid every 160 m, clipped to land within the quarter, cut into block-length segments
        step = 160.0
        xs = np.arange(cx - w / 2 + step / 2, cx + w / 2, step)
        ys = np.arange(cy - h / 2 + step / 2, cy + h / 2, step)
        n_road = 0
        for orient, values in (("x", xs), ("y", ys)):
            for v in values:
                full = LineString([(v, cy - h / 2), (v, cy + h / 2)]) if orient == "x" else LineString([(cx - w / 2, v), (cx + w / 2, v)])
                for part in _lines(full.intersection(outline)):
                    pos = 0.0
                    while pos < part.length - 20:
                        seg = substring(part, pos, min(pos + step, part.length))
                        pos += step
                        n_road += 1
                        main = (orient == "x" and abs(v - cx) < step) or (orient == "y" and abs(v - cy) < step)
                        roads.append(_feature(to_wgs84(seg), {
                            "id": f"kiel:{slug}:road:r{n_road:04d}", "name": f"{spec['name']} street {n_road}",
                            "neighbourhood": hood_id, "road_class": "primary" if main else "residential",
                            "lanes": 2 if main else 1,
                        }))
        # buildings in the blocks between the streets
        n_bld = 0
        for x0 in xs[:-1]:
            for y0 in ys[:-1]:
                for _ in range(int(rng.integers(3, 7))):
                    bw, bd = rng.uniform(12, 30), rng.uniform(10, 18)
                    bx = x0 + rng.uniform(20, step - 20 - bw)
                    by = y0 + rng.uniform(20, step - 20 - bd)
                    fp = box(bx, by, bx + bw, by + bd)
                    if not outline.contains(fp) or any(fp.intersects(b) for b in _recent(buildings, n_bld)):
                        continue
                    n_bld += 1
                    levels = int(rng.choice([2, 3, 4, 5, 6, 8], p=[0.1, 0.25, 0.3, 0.2, 0.1, 0.05]))
                    buildings.append(_feature(to_wgs84(fp), {
                        "id": f"kiel:{slug}:building:b{n_bld:04d}", "name": f"{spec['name']} building {n_bld}",
                        "neighbourhood": hood_id, "height_m": round(levels * 3.1 + rng.uniform(0.5, 2.5), 1),
                        "ground_m": round(float(rng.uniform(1.5, 6.0)), 1),
                        "use": str(rng.choice(["residential", "commercial", "mixed", "public"], p=[0.6, 0.15, 0.2, 0.05])),
                    }))
                    buildings[-1]["_m"] = fp
        # coast segments: the real shoreline within 600 m of the quarter, cut into 250 m pieces
        kind, crest = spec["coast"]  # type: ignore[misc]
        zone = outline.buffer(600)
        n_coast = 0
        for line in coast_m:
            for part in _lines(line.intersection(zone)):
                pos = 0.0
                while pos < part.length - 30:
                    seg = substring(part, pos, min(pos + 250.0, part.length))
                    pos += 250.0
                    n_coast += 1
                    ctype = kind if n_coast % 4 else ("beach" if kind == "dike" else "natural")
                    height = crest if ctype == kind else 1.2
                    coast.append(_feature(to_wgs84(seg), {
                        "id": f"kiel:_:coast:{slug}-{n_coast:03d}", "name": f"{spec['name']} shore {n_coast}",
                        "coast_type": ctype, "crest_m": round(height + float(rng.uniform(-0.25, 0.25)), 2),
                        "neighbourhood": hood_id,
                    }))
        # sensors along the streets; water level on the quarter's shore
        road_feats = [r for r in roads if r["properties"]["neighbourhood"] == hood_id]
        for kind_name, count in (("traffic_count", sensors_per_kind * 2), ("parking", sensors_per_kind),
                                 ("air_quality", max(2, sensors_per_kind // 2)), ("bike_share", sensors_per_kind),
                                 ("weather", 1)):
            picks = rng.choice(len(road_feats), size=min(count, len(road_feats)), replace=False)
            for i, ri in enumerate(sorted(int(p) for p in picks), start=1):
                mid = to_metric(LineString(road_feats[ri]["geometry"]["coordinates"])).interpolate(0.5, normalized=True)
                pos = Point(mid.x + rng.uniform(-8, 8), mid.y + rng.uniform(-8, 8))
                sensors.append(_feature(to_wgs84(pos), {
                    "id": f"kiel:{slug}:sensor:{kind_name.replace('_', '-')}-{i:03d}",
                    "name": f"{spec['name']} {kind_name.replace('_', ' ')} {i}", "sensor_kind": kind_name,
                }))
        shore = [c for c in coast if c["properties"]["neighbourhood"] == hood_id]
        if shore:
            mid = to_metric(LineString(shore[len(shore) // 2]["geometry"]["coordinates"])).interpolate(0.5, normalized=True)
            sensors.append(_feature(to_wgs84(mid), {
                "id": f"kiel:{slug}:sensor:water-level-001", "name": f"{spec['name']} tide staff (synthetic)",
                "sensor_kind": "water_level",
            }))
    for slug, name, lon, lat in GAUGES:
        sensors.append(_feature(Point(lon, lat), {
            "id": f"kiel:_:sensor:gauge-{slug}", "name": name, "sensor_kind": "water_level", "synthetic": False,
        }))
    for b in buildings:
        b.pop("_m", None)
    _write(out, shoreline, hoods, roads, buildings, sensors, coast)
    write_terrain(out, segments, rng)
    return out


TERRAIN_BOX_WGS84 = (10.11, 54.29, 10.23, 54.41)  # the inner fjord from Gaarden to Friedrichsort
TERRAIN_CELL_M = 20.0


def write_terrain(out: Path, segments: list[LineString], rng: np.random.Generator) -> None:
    """A SYNTHETIC elevation model on the real shoreline: land rises with distance from the shore (low-lying strips
    at the water's edge, about 1.0-1.6 m), the fjord deepens away from it. Replace with DGM1 via 'plietsch region import'."""
    from scipy import ndimage

    from twin.flood import Grid, rasterise_sea
    from twin.importers import Terrain, write_geotiff

    area_m = to_metric(box(*TERRAIN_BOX_WGS84))
    x0, y0, x1, y1 = area_m.bounds
    cols, rows = int((x1 - x0) // TERRAIN_CELL_M), int((y1 - y0) // TERRAIN_CELL_M)
    grid = Grid(np.zeros((rows, cols)), x0, y0 + rows * TERRAIN_CELL_M, TERRAIN_CELL_M)
    water = to_metric(land_polygon(segments, KIEL_BBOX, KIEL_SEA_POINT).symmetric_difference(box(*KIEL_BBOX)))
    sea = rasterise_sea(grid, water)  # type: ignore[arg-type]
    d_land = ndimage.distance_transform_edt(~sea) * TERRAIN_CELL_M
    d_sea = ndimage.distance_transform_edt(sea) * TERRAIN_CELL_M
    noise = ndimage.gaussian_filter(rng.normal(0, 1, sea.shape), 6)
    noise = noise / (np.abs(noise).max() or 1)
    land_h = 1.0 + 0.6 * np.clip(d_land / 150.0, 0, 1) + 0.018 * np.maximum(d_land - 150.0, 0) ** 0.85 + 0.8 * noise
    land_h = np.maximum(land_h, 0.8)
    sea_h = -1.5 - 0.02 * d_sea
    heights = np.where(sea, sea_h, land_h).round(2)
    write_geotiff(out / "terrain.tif", Terrain(heights, grid.origin_x, grid.origin_y, TERRAIN_CELL_M, TERRAIN_CELL_M, "EPSG:25832"))
    manifest_path = out / "region.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["terrain"] = {"file": "terrain.tif", "source": SYNTH + " on the GSHHG shoreline", "licence": SYNTH_LICENCE,
                           "synthetic": True, "note": f"{cols}x{rows} cells of {TERRAIN_CELL_M:g} m, EPSG:25832, "
                                                      "metres above mean water level; replace with DGM1"}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _recent(buildings: list[dict[str, Any]], n: int) -> list[BaseGeometry]:
    return [b["_m"] for b in buildings[-12:] if "_m" in b]


def _write(out: Path, shoreline: Path, hoods: list, roads: list, buildings: list, sensors: list, coast: list) -> None:
    out.mkdir(parents=True, exist_ok=True)
    gshhg = {"source": "GSHHG 2.3.7 full resolution (Wessel & Smith), via GMT 6; shoreline real, crest heights synthetic",
             "licence": "LGPL-3.0-or-later"}
    manifest = {
        "id": "kiel", "name": "Kiel (KielRegion)", "bbox": list(KIEL_BBOX), "sea_point": list(KIEL_SEA_POINT),
        "shoreline": "shoreline_gshhg.txt",
        "mean_water_level_note": "Heights are metres above mean water level (Kiel-Holtenau MW about 504 cm above gauge zero).",
        "layers": {
            "neighbourhoods": {"file": "neighbourhoods.geojson", "source": SYNTH, "licence": SYNTH_LICENCE, "synthetic": True,
                               "note": "approximate outlines of Gaarden and Friedrichsort, not official boundaries"},
            "buildings": {"file": "buildings.geojson", "source": SYNTH, "licence": SYNTH_LICENCE, "synthetic": True,
                          "note": "replace with LoD2 CityJSON via 'plietsch region import'"},
            "roads": {"file": "roads.geojson", "source": SYNTH, "licence": SYNTH_LICENCE, "synthetic": True,
                      "note": "replace with OpenStreetMap via 'plietsch region import'"},
            "sensors": {"file": "sensors.geojson", "source": SYNTH + "; gauge positions from WSV", "licence": SYNTH_LICENCE,
                        "synthetic": True, "note": "gauge-* sensors stand at the real WSV station positions"},
            "coast": {"file": "coast.geojson", "synthetic": True, **gshhg},
        },
    }
    (out / "region.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for name, feats in (("neighbourhoods", hoods), ("roads", roads), ("buildings", buildings),
                        ("sensors", sensors), ("coast", coast)):
        (out / f"{name}.geojson").write_text(json.dumps(_fc(feats), separators=(",", ":")) + "\n", encoding="utf-8")
    shutil.copyfile(shoreline, out / "shoreline_gshhg.txt")
    (out / "ATTRIBUTION.md").write_text(
        "# Attribution\n\n- Shoreline (`shoreline_gshhg.txt`, coast segment lines): GSHHG 2.3.7 full resolution, "
        "Wessel, P., and W. H. F. Smith (1996), LGPL-3.0-or-later, extracted with GMT 6 "
        "(`gmt coast -R10.00/10.35/54.28/54.50 -Df -W -M`).\n"
        "- Gauge positions: Wasserstraßen- und Schifffahrtsverwaltung des Bundes (WSV), PEGELONLINE.\n"
        "- Everything else in this pack is SYNTHETIC, made by `plietsch region synth`; see region.json.\n",
        encoding="utf-8")
