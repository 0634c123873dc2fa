"""Region packs from a municipality's open data: ``new_pack`` takes the real layers in (district polygons, population,
GSHHG shoreline, stations at known public places, surge presets), ``synthesise`` generates the layers that stay made up
(buildings, roads, sensors, crest heights, terrain) inside the real districts. Everything made up is flagged
``synthetic`` in the pack; no code here names a region: what to build is data in the pack's ``region.json``.

Consistency with the real data: buildings stand on land (inside the GSHHG land polygon, never in the water) within
their district; a district gets one building per ``residents_per_building`` residents (density follows population;
``buildings_per_km2`` of land where the population is unknown) and a street grid whose spacing shrinks as population
density grows. Deterministic for a given seed: ``plietsch region synth`` rewrites the same files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import LineString, MultiLineString, Point, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import substring, unary_union

from twin.districts import District, build_districts, read_population, read_source_districts, union_polygon, write_districts
from twin.geo import land_polygon, read_gmt_segments, to_metric, to_wgs84
from twin.region import BUNDLED_DIR, Manifest, Quarter, RegionPackError, Station, SurgePreset, SynthSpec, load_pack

SYNTH = "synthetic (Plietsch Twin generator)"
SYNTH_LICENCE = "CC0-1.0"
GSHHG = {"source": "GSHHG 2.3.7 full resolution (Wessel & Smith), via GMT 6; shoreline real (about 100-200 m fidelity), "
                   "crest heights synthetic", "licence": "LGPL-3.0-or-later"}
SYNTH_LAYERS = ("neighbourhoods", "buildings", "roads", "sensors", "coast")
DENSE_PER_KM2 = 4000.0  # residents per km2 of land from which streets are STREET_M apart
STREET_M = 160.0  # street spacing in dense districts; twice that elsewhere
COAST_ZONE_M = 600.0
COAST_PIECE_M = 250.0


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


def new_pack(out: Path, *, region_id: str, name: str, districts: Path, shoreline: Path, sea_point: tuple[float, float],
             quarters: list[Quarter], stations: list[Station], surge_presets: dict[str, SurgePreset],
             districts_source: str, districts_licence: str, population: Path | None = None,
             population_columns: tuple[str, str, str] = ("stadtteil", "jahr", "ew_ins"),
             population_source: str = "", population_licence: str = "", name_field: str | None = None,
             code_field: str | None = None, bbox: tuple[float, float, float, float] | None = None,
             shoreline_note: str = "", mean_water_level_note: str = "", attribution: str = "",
             extra_sources: list[Path] | None = None) -> Path:
    """A new pack folder with the real layers and what to synthesise; then run :func:`synthesise`."""
    out.mkdir(parents=True, exist_ok=True)
    segments = read_gmt_segments(shoreline)
    if not segments:
        raise RegionPackError(f"{shoreline}: no shoreline segments")
    if bbox is None:  # GMT clips the shoreline at its -R box, so the segments' extent is about the box
        x0, y0, x1, y1 = (round(v, 6) for v in unary_union(segments).bounds)
        bbox = (x0, y0, x1, y1)
    try:
        land_polygon(segments, bbox, sea_point)
    except ValueError as exc:
        raise RegionPackError(f"{shoreline}: {exc}; give a --sea-point in open water inside {bbox}") from None
    source = read_source_districts(districts, name_field, code_field)
    pop = read_population(population, population_columns) if population is not None else None
    ds = build_districts(region_id, source, districts_source, districts_licence, pop, population_source,
                         population.name if population is not None else "")
    codes = {d.code for d in ds}
    for q in quarters:
        unknown = [c for c in q.districts if c not in codes]
        if unknown:
            raise RegionPackError(f"quarter {q.slug!r}: district number(s) {unknown} are not in {districts.name} "
                                  f"(it has {min(codes)}..{max(codes)})")
    write_districts(out / "districts.geojson", ds)
    sources = out / "sources"  # the municipality's files as published, beside the attribution
    sources.mkdir(exist_ok=True)
    for f in (districts, population, *(extra_sources or [])):
        if f is not None and f.resolve() != (sources / f.name).resolve():
            shutil.copyfile(f, sources / f.name)
    if shoreline.resolve() != (out / "shoreline_gshhg.txt").resolve():
        shutil.copyfile(shoreline, out / "shoreline_gshhg.txt")
    real_src = districts_source + (f"; population: {population_source} ({population_licence})" if population else "")
    manifest = Manifest(
        id=region_id, name=name, bbox=bbox, sea_point=sea_point, shoreline="shoreline_gshhg.txt",
        mean_water_level_note=mean_water_level_note or "Heights are metres above mean water level.",
        layers={"districts": {"file": "districts.geojson", "source": real_src, "licence": districts_licence
                              + (f"; population {population_licence}" if population else ""), "synthetic": False,
                              "note": "official districts: name, number" + (", residents of the newest year" if pop else "")}},
        synth=SynthSpec(quarters=quarters, stations=stations), surge_presets=surge_presets)
    (out / "region.json").write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")
    lines = ["# Attribution", "",
             f"- Districts (`districts.geojson`, from `sources/{districts.name}`): {districts_source}, licence "
             f"{districts_licence}.",
             *([f"- Population per district (`sources/{population.name}`, newest year in `districts.geojson`): "
                f"{population_source}, licence {population_licence}."] if population else []),
             f"- Shoreline (`shoreline_gshhg.txt`, coast segment lines): GSHHG 2.3.7 full resolution, Wessel, P., and "
             f"W. H. F. Smith (1996), LGPL-3.0-or-later{'; ' + shoreline_note if shoreline_note else ''}.",
             *[f"- Station {s.name}{' (' + s.code + ')' if s.code else ''}: position from {s.source or 'its operator'}."
               for s in stations],
             *([f"- {attribution}"] if attribution else []),
             "- Everything else in this pack (buildings, roads, sensors other than the stations above, crest heights, "
             "terrain) is SYNTHETIC, made by `plietsch region synth`; see region.json."]
    (out / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def build_kiel_pack(out: Path, shoreline: Path | None = None, seed: int = 7, sensors_per_kind: int = 6) -> Path:
    """The bundled Kiel pack's synthetic layers, rebuilt into *out* (its real layers and region.json copied over)."""
    src = BUNDLED_DIR / "kiel"
    out.mkdir(parents=True, exist_ok=True)
    if src.resolve() != out.resolve():
        for name in ("region.json", "districts.geojson", "shoreline_gshhg.txt", "ATTRIBUTION.md"):
            shutil.copyfile(src / name, out / name)
    if shoreline is not None and shoreline.is_file() and shoreline.resolve() != (out / "shoreline_gshhg.txt").resolve():
        shutil.copyfile(shoreline, out / "shoreline_gshhg.txt")
    return synthesise(out, seed=seed, sensors_per_kind=sensors_per_kind)


def synthesise(pack_dir: Path, seed: int | None = None, sensors_per_kind: int | None = None) -> Path:
    """Generate the pack's SYNTHETIC layers inside its real districts, on land, as its region.json's ``synth`` says."""
    manifest = Manifest.model_validate_json((pack_dir / "region.json").read_text(encoding="utf-8"))
    if manifest.synth is None or manifest.shoreline is None or manifest.sea_point is None:
        raise RegionPackError(f"{pack_dir / 'region.json'}: no 'synth' section, shoreline or sea_point; "
                              "make the pack with 'plietsch region new'")
    shoreline, sea_point = manifest.shoreline, manifest.sea_point
    spec = manifest.synth.model_copy(update={k: v for k, v in (("seed", seed), ("sensors_per_kind", sensors_per_kind))
                                             if v is not None})
    manifest = manifest.model_copy(update={"layers": {"districts": manifest.layers["districts"]}, "terrain": None,
                                           "synth": spec})
    (pack_dir / "region.json").write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")
    districts = load_pack(pack_dir).districts
    rng = np.random.default_rng(spec.seed)
    segments = read_gmt_segments(pack_dir / shoreline)
    land_m = to_metric(land_polygon(segments, manifest.bbox, sea_point))
    coast_m = [to_metric(s) for s in segments]
    layers: dict[str, list[dict[str, Any]]] = {k: [] for k in SYNTH_LAYERS}
    covered: BaseGeometry | None = None
    outlines = []
    for q in spec.quarters:
        members = [districts[c] for c in q.districts]
        outline = to_metric(union_polygon(members, f"quarter {q.slug!r}"))
        outlines.append(outline)
        hood_id = f"{manifest.id}:{q.slug}:neighbourhood:{q.slug}"
        layers["neighbourhoods"].append(_feature(to_wgs84(outline), {
            "id": hood_id, "name": q.name, "synthetic": False}))
        _streets_and_buildings(manifest.id, q, hood_id, members, land_m, spec, rng, layers)
        zone = outline.intersection(land_m).buffer(COAST_ZONE_M)
        if covered is not None:
            zone = zone.difference(covered)
        covered = zone if covered is None else covered.union(zone)
        _coast(manifest.id, q, hood_id, zone, coast_m, rng, layers["coast"])
        _sensors(manifest.id, q, hood_id, spec.sensors_per_kind, rng, layers)
    for s in spec.stations:
        layers["sensors"].append(_feature(Point(s.lon, s.lat), {
            "id": f"{manifest.id}:_:sensor:{s.slug}", "name": s.name + (f" ({s.code})" if s.code else ""),
            "sensor_kind": s.sensor_kind, "synthetic": False}))
    _write(pack_dir, manifest, layers)
    write_terrain(pack_dir, manifest, segments, unary_union(outlines), spec.terrain_cell_m, rng)
    return pack_dir


def _density(d: District, land_km2: float, spec: SynthSpec) -> tuple[int, bool]:
    """(buildings, dense streets?) of a district from its population, or the default density where it is unknown."""
    if land_km2 <= 0:
        return 0, False
    if d.population is None:
        return int(round(spec.buildings_per_km2 * land_km2)), False
    return int(round(d.population / spec.residents_per_building)), d.population / land_km2 >= DENSE_PER_KM2


def _streets_and_buildings(region: str, q: Quarter, hood_id: str, members: list[District], land_m: BaseGeometry,
                           spec: SynthSpec, rng: np.random.Generator, layers: dict[str, list[dict[str, Any]]]) -> None:
    """A street grid on land in the quarter (every 2 x STREET_M; every STREET_M in dense districts), noded at its
    crossings, of which only the connected part is kept; buildings in the blocks, per district as many as its
    population says."""
    parts = [(d, to_metric(d.polygon()).intersection(land_m)) for d in members]
    area = unary_union([a for _, a in parts])
    dense = unary_union([a for d, a in parts if _density(d, a.area / 1e6, spec)[1]])
    x0, y0, x1, y1 = area.bounds
    lines: list[tuple[bool, LineString]] = []
    for k in range(int(x0 // STREET_M), int(x1 // STREET_M) + 1):
        lines.append((k % 6 == 0, LineString([(k * STREET_M, y0), (k * STREET_M, y1)])))
    for k in range(int(y0 // STREET_M), int(y1 // STREET_M) + 1):
        lines.append((k % 6 == 0, LineString([(x0, k * STREET_M), (x1, k * STREET_M)])))
    pieces: list[LineString] = []
    mains: list[BaseGeometry] = []
    for main, full in lines:
        c = full.coords[0][0] if full.coords[0][0] == full.coords[1][0] else full.coords[0][1]
        within = area if round(c / STREET_M) % 2 == 0 else dense
        got = _lines(full.intersection(within)) if not within.is_empty else []
        pieces.extend(got)
        if main:
            mains.extend(got)
    noded = [g for g in _lines(unary_union(pieces)) if g.length >= 20.0]
    roads = _largest_component(noded)
    main_union = unary_union(mains) if mains else None
    roads.sort(key=lambda g: (round(g.centroid.y, 1), round(g.centroid.x, 1)))
    for n, seg in enumerate(roads, start=1):
        main = main_union is not None and seg.centroid.distance(main_union) < 0.5
        layers["roads"].append(_feature(to_wgs84(seg), {
            "id": f"{region}:{q.slug}:road:r{n:04d}", "name": f"{q.name} street {n}", "neighbourhood": hood_id,
            "road_class": "primary" if main else "residential", "lanes": 2 if main else 1}))
    n_bld = 0
    for d, part in parts:
        target, _ = _density(d, part.area / 1e6, spec)
        if part.is_empty or target == 0:
            continue
        inner = part.buffer(-3.0)
        candidates: list[BaseGeometry] = []
        bx0, by0, bx1, by1 = part.bounds
        for i in range(int(bx0 // STREET_M), int(bx1 // STREET_M) + 1):
            for j in range(int(by0 // STREET_M), int(by1 // STREET_M) + 1):
                placed: list[BaseGeometry] = []
                for _ in range(int(rng.integers(4, 9))):
                    bw, bd = rng.uniform(12, 30), rng.uniform(10, 18)
                    bx = i * STREET_M + 20 + rng.uniform(0, STREET_M - 40 - bw)
                    by = j * STREET_M + 20 + rng.uniform(0, STREET_M - 40 - bd)
                    fp = box(bx, by, bx + bw, by + bd)
                    if inner.contains(fp) and not any(fp.intersects(p) for p in placed):
                        placed.append(fp)
                candidates.extend(placed)
        picks = sorted(int(k) for k in rng.choice(len(candidates), size=min(target, len(candidates)), replace=False)) \
            if candidates else []
        for k in picks:
            n_bld += 1
            levels = int(rng.choice([2, 3, 4, 5, 6, 8], p=[0.1, 0.25, 0.3, 0.2, 0.1, 0.05]))
            layers["buildings"].append(_feature(to_wgs84(candidates[k]), {
                "id": f"{region}:{q.slug}:building:b{n_bld:04d}", "name": f"{q.name} building {n_bld}",
                "neighbourhood": hood_id, "height_m": round(levels * 3.1 + rng.uniform(0.5, 2.5), 1),
                "ground_m": round(float(rng.uniform(1.5, 6.0)), 1),
                "use": str(rng.choice(["residential", "commercial", "mixed", "public"], p=[0.6, 0.15, 0.2, 0.05])),
                "height_source": f"synthetic; district {d.code} {d.name}"}))


def _largest_component(pieces: list[LineString]) -> list[LineString]:
    """The pieces of the largest connected network (pieces meet at shared end points after noding)."""
    parent: dict[tuple[float, float], tuple[float, float]] = {}

    def find(a: tuple[float, float]) -> tuple[float, float]:
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    ends = []
    for g in pieces:
        a, b = (tuple(round(v, 2) for v in g.coords[0]), tuple(round(v, 2) for v in g.coords[-1]))
        ends.append(a)
        parent[find(a)] = find(b)  # type: ignore[arg-type]
    if not pieces:
        return []
    sizes: dict[tuple[float, float], float] = {}
    for g, a in zip(pieces, ends, strict=True):
        sizes[find(a)] = sizes.get(find(a), 0.0) + g.length  # type: ignore[arg-type]
    best = max(sizes, key=lambda r: sizes[r])
    return [g for g, a in zip(pieces, ends, strict=True) if find(a) == best]  # type: ignore[arg-type]


def _coast(region: str, q: Quarter, hood_id: str, zone: BaseGeometry, coast_m: list[LineString],
           rng: np.random.Generator, coast: list[dict[str, Any]]) -> None:
    """The real shoreline near the quarter, cut into pieces with SYNTHETIC crest heights."""
    n = 0
    for line in coast_m:
        for part in _lines(line.intersection(zone)):
            pos = 0.0
            while pos < part.length - 30:
                seg = substring(part, pos, min(pos + COAST_PIECE_M, part.length))
                pos += COAST_PIECE_M
                n += 1
                ctype = q.coast_kind if n % 4 else ("beach" if q.coast_kind == "dike" else "natural")
                height = q.crest_m if ctype == q.coast_kind else 1.2
                coast.append(_feature(to_wgs84(seg), {
                    "id": f"{region}:_:coast:{q.slug}-{n:03d}", "name": f"{q.name} shore {n}",
                    "coast_type": ctype, "crest_m": round(height + float(rng.uniform(-0.25, 0.25)), 2),
                    "neighbourhood": hood_id}))


def _sensors(region: str, q: Quarter, hood_id: str, per_kind: int, rng: np.random.Generator,
             layers: dict[str, list[dict[str, Any]]]) -> None:
    road_feats = [r for r in layers["roads"] if r["properties"]["neighbourhood"] == hood_id]
    sensors = layers["sensors"]
    for kind_name, count in (("traffic_count", per_kind * 2), ("parking", per_kind),
                             ("air_quality", max(2, per_kind // 2)), ("bike_share", per_kind), ("weather", 1)):
        if not road_feats:
            break
        picks = rng.choice(len(road_feats), size=min(count, len(road_feats)), replace=False)
        for i, ri in enumerate(sorted(int(p) for p in picks), start=1):
            mid = to_metric(LineString(road_feats[ri]["geometry"]["coordinates"])).interpolate(0.5, normalized=True)
            pos = Point(mid.x + rng.uniform(-8, 8), mid.y + rng.uniform(-8, 8))
            sensors.append(_feature(to_wgs84(pos), {
                "id": f"{region}:{q.slug}:sensor:{kind_name.replace('_', '-')}-{i:03d}",
                "name": f"{q.name} {kind_name.replace('_', ' ')} {i}", "sensor_kind": kind_name}))
    shore = [c for c in layers["coast"] if c["properties"]["neighbourhood"] == hood_id]
    if shore:
        mid = to_metric(LineString(shore[len(shore) // 2]["geometry"]["coordinates"])).interpolate(0.5, normalized=True)
        sensors.append(_feature(to_wgs84(mid), {
            "id": f"{region}:{q.slug}:sensor:water-level-001", "name": f"{q.name} tide staff (synthetic)",
            "sensor_kind": "water_level", "neighbourhood": hood_id}))


def write_terrain(out: Path, manifest: Manifest, segments: list[LineString], quarters_m: BaseGeometry,
                  cell_m: float, rng: np.random.Generator) -> None:
    """A SYNTHETIC elevation model on the real shoreline around the quarters: land rises with distance from the
    shore (low-lying strips at the water's edge, about 1.0-1.6 m), the fjord deepens away from it. Replace with DGM1
    via 'plietsch region import'."""
    from scipy import ndimage

    from twin.flood import Grid, rasterise_sea
    from twin.importers import Terrain, write_geotiff

    frame_m = to_metric(box(*manifest.bbox))
    area_m = quarters_m.buffer(1000.0).envelope.intersection(frame_m.envelope)
    x0, y0, x1, y1 = area_m.bounds
    cols, rows = int((x1 - x0) // cell_m), int((y1 - y0) // cell_m)
    grid = Grid(np.zeros((rows, cols)), x0, y0 + rows * cell_m, cell_m)
    if manifest.sea_point is None:
        raise RegionPackError(f"{out / 'region.json'}: no sea_point to tell the water from the land")
    water = to_metric(land_polygon(segments, manifest.bbox, manifest.sea_point).symmetric_difference(box(*manifest.bbox)))
    sea = rasterise_sea(grid, water)  # type: ignore[arg-type]
    d_land = ndimage.distance_transform_edt(~sea) * cell_m
    d_sea = ndimage.distance_transform_edt(sea) * cell_m
    noise = ndimage.gaussian_filter(rng.normal(0, 1, sea.shape), 6)
    noise = noise / (np.abs(noise).max() or 1)
    land_h = 1.0 + 0.6 * np.clip(d_land / 150.0, 0, 1) + 0.018 * np.maximum(d_land - 150.0, 0) ** 0.85 + 0.8 * noise
    land_h = np.maximum(land_h, 0.8)
    sea_h = -1.5 - 0.02 * d_sea
    heights = np.where(sea, sea_h, land_h).round(2)
    write_geotiff(out / "terrain.tif", Terrain(heights, grid.origin_x, grid.origin_y, cell_m, cell_m, "EPSG:25832"))
    manifest_path = out / "region.json"
    data = json.loads(manifest_path.read_text(encoding="utf-8"))
    data["terrain"] = {"file": "terrain.tif", "source": SYNTH + " on the GSHHG shoreline", "licence": SYNTH_LICENCE,
                       "synthetic": True, "note": f"{cols}x{rows} cells of {cell_m:g} m, EPSG:25832, "
                                                  "metres above mean water level; replace with DGM1"}
    manifest_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write(out: Path, manifest: Manifest, layers: dict[str, list[dict[str, Any]]]) -> None:
    data = json.loads(manifest.model_dump_json(exclude_none=True))
    data["layers"].update({
        "neighbourhoods": {"file": "neighbourhoods.geojson", "source": manifest.layers["districts"].source,
                           "licence": manifest.layers["districts"].licence, "synthetic": False,
                           "note": "the twin quarters: real district outlines (union of the districts each names)"},
        "buildings": {"file": "buildings.geojson", "source": SYNTH, "licence": SYNTH_LICENCE, "synthetic": True,
                      "note": "on land inside the real districts, one per "
                              f"{manifest.synth.residents_per_building if manifest.synth else 80:g} residents; "
                              "replace with LoD2 CityJSON via 'plietsch region import'"},
        "roads": {"file": "roads.geojson", "source": SYNTH, "licence": SYNTH_LICENCE, "synthetic": True,
                  "note": "street grid inside the real districts; replace with OpenStreetMap via 'plietsch region import'"},
        "sensors": {"file": "sensors.geojson", "source": SYNTH + "; stations at their published positions",
                    "licence": SYNTH_LICENCE, "synthetic": True,
                    "note": "sensors with synthetic=false stand at real stations (gauges, air quality); the rest are made up"},
        "coast": {"file": "coast.geojson", "synthetic": True, **GSHHG},
    })
    (out / "region.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, feats in layers.items():
        (out / f"{name}.geojson").write_text(json.dumps(_fc(feats), ensure_ascii=False, separators=(",", ":")) + "\n",
                                             encoding="utf-8")
