"""Region packs: a folder of files that describes a region. Loading one needs no code change per neighbourhood.

Layout of a pack folder::

    region.json            manifest: id, name, bbox, and per layer its file, source, licence and whether it is synthetic
    neighbourhoods.geojson buildings.geojson roads.geojson sensors.geojson coast.geojson
    districts.geojson      optional: the municipality's real districts (name, official number, population, source,
                           licence); context and zones, not twin entities (see twin.districts)
    terrain.tif            optional elevation raster (metres above mean water level)

``region.json`` may also hold ``synth`` (what ``plietsch region synth`` generates: the twin quarters as lists of
district numbers, the stations at known public places, the seed) and ``surge_presets`` (storm surges of record, as
data: the scenario runner reads them from the pack).

Every feature carries ``id`` (an entity id) in its properties. Errors name the file, the feature and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from shapely import STRtree
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.base import BaseGeometry

from twin.districts import District, DistrictError, load_districts
from twin.entities import Building, CoastSegment, Entity, Neighbourhood, Region, RoadSegment, Sensor
from twin.geo import read_layer, to_metric
from twin.ids import EntityId

LAYERS = ("neighbourhoods", "buildings", "roads", "sensors", "coast")
BUNDLED_DIR = Path(__file__).resolve().parent / "regions"


class RegionPackError(ValueError):
    """A region pack is missing a file or holds a bad feature."""


class LayerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str
    source: str
    licence: str
    synthetic: bool
    note: str = ""


class Quarter(BaseModel):
    """A twin quarter: neighbouring real districts whose buildings, roads and sensors are generated (SYNTHETIC)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    name: str = Field(min_length=1)
    districts: list[int] = Field(min_length=1)
    coast_kind: Literal["quay_wall", "dike", "beach", "natural"] = "quay_wall"
    crest_m: float = Field(default=2.0, ge=0.0, le=10.0, description="synthetic crest height, metres above mean water level")


class Station(BaseModel):
    """A measuring station at a known public place: real name, code and position (its readings may be synthetic)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    name: str = Field(min_length=1)
    sensor_kind: str = Field(min_length=1)
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)
    code: str = ""
    source: str = ""


class SynthSpec(BaseModel):
    """What 'plietsch region synth' generates for a pack: data, so that no code names a region."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = 7
    sensors_per_kind: int = Field(default=6, ge=1, le=200)
    residents_per_building: float = Field(default=80.0, gt=0, description="one synthetic building per this many residents")
    buildings_per_km2: float = Field(default=60.0, gt=0, description="density where a district's population is unknown")
    terrain_cell_m: float = Field(default=20.0, ge=5.0, le=200.0)
    quarters: list[Quarter] = Field(min_length=1)
    stations: list[Station] = Field(default_factory=list)


class SurgePreset(BaseModel):
    """A storm surge of record: its peak above mean water level at the pack's gauge, as a scenario preset."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    peak_at: AwareDatetime
    peak_m: float = Field(ge=-3.0, le=6.0)
    duration_h: float = Field(default=14.0, gt=0, le=240)
    gauge: str = ""
    source: str = ""
    note: str = ""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    name: str
    bbox: tuple[float, float, float, float]
    mean_water_level_note: str = ""
    sea_point: tuple[float, float] | None = None  # a point known to be water, to tell water from land
    shoreline: str | None = None  # GMT multi-segment shoreline file in the pack
    layers: dict[str, LayerInfo]
    terrain: LayerInfo | None = None
    synth: SynthSpec | None = None
    surge_presets: dict[str, SurgePreset] = Field(default_factory=dict)


@dataclass
class PlaceIndex:
    """Spatial index (shapely STRtree, metric coordinates) for attributing a point to its place."""

    neighbourhood_ids: list[str]
    neighbourhood_tree: STRtree
    road_ids: list[str]
    road_tree: STRtree
    coast_ids: list[str]
    coast_tree: STRtree
    max_distance_m: float = 250.0

    @classmethod
    def build(cls, pack: RegionPack) -> PlaceIndex:
        def tree(items: list[tuple[str, BaseGeometry]]) -> tuple[list[str], STRtree]:
            return [i for i, _ in items], STRtree([to_metric(g) for _, g in items])

        n_ids, n_tree = tree([(n.id, Polygon(n.polygon)) for n in pack.neighbourhoods.values()])
        r_ids, r_tree = tree([(r.id, LineString(r.line)) for r in pack.roads.values()])
        c_ids, c_tree = tree([(c.id, LineString(c.line)) for c in pack.coast.values()])
        return cls(n_ids, n_tree, r_ids, r_tree, c_ids, c_tree)

    def locate(self, lon: float, lat: float) -> dict[str, str | None]:
        p = to_metric(Point(lon, lat))
        hood = None
        hits = self.neighbourhood_tree.query(p, predicate="intersects")
        if len(hits):
            hood = self.neighbourhood_ids[int(min(hits))]
        return {"neighbourhood": hood, "road": self._nearest(self.road_tree, self.road_ids, p),
                "coast": self._nearest(self.coast_tree, self.coast_ids, p)}

    def _nearest(self, tree: STRtree, ids: list[str], p: BaseGeometry) -> str | None:
        if not ids:
            return None
        idx = tree.query_nearest(p, max_distance=self.max_distance_m)
        return ids[int(idx[0])] if len(idx) else None


@dataclass
class RegionPack:
    path: Path
    manifest: Manifest
    region: Region
    neighbourhoods: dict[str, Neighbourhood] = field(default_factory=dict)
    buildings: dict[str, Building] = field(default_factory=dict)
    roads: dict[str, RoadSegment] = field(default_factory=dict)
    sensors: dict[str, Sensor] = field(default_factory=dict)
    coast: dict[str, CoastSegment] = field(default_factory=dict)
    coast_by_gauge: dict[str, list[CoastSegment]] = field(default_factory=dict)
    districts: dict[int, District] = field(default_factory=dict)
    _index: PlaceIndex | None = None
    _entities: dict[str, Entity] | None = None
    _fingerprint: str | None = None

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def index(self) -> PlaceIndex:
        if self._index is None:
            self._index = PlaceIndex.build(self)
        return self._index

    def entities(self) -> dict[str, Entity]:
        """Every entity by id (built once; the pack is not changed after loading)."""
        if self._entities is None:
            out: dict[str, Entity] = {self.region.id: self.region}
            for layer in (self.neighbourhoods, self.buildings, self.roads, self.sensors, self.coast):
                out.update(layer)
            self._entities = out
        return self._entities

    def fold_fingerprint(self) -> str:
        """What of this pack the twin's fold reads (``twin.state``): each sensor's id, kind and the road and
        neighbourhood its readings are aggregated under, each coast segment's id, name, crest and gauge. A twin snapshot
        records it: a snapshot of another fingerprint was folded with other sensors or segments (an edited or rebuilt
        pack) and must be rebuilt, not continued."""
        if self._fingerprint is None:
            import hashlib
            import json

            doc = {"sensors": sorted((str(s.id), s.sensor_kind, str(s.road or ""), str(s.neighbourhood or ""))
                                     for s in self.sensors.values()),
                   "coast": sorted((str(c.id), c.name or "", c.crest_m, str(c.gauge or "")) for c in self.coast.values())}
            self._fingerprint = hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()[:16]
        return self._fingerprint

    def synthetic_layers(self) -> list[str]:
        names = [n for n, info in self.manifest.layers.items() if info.synthetic]
        if self.manifest.terrain is not None and self.manifest.terrain.synthetic:
            names.append("terrain")
        return names

    def water_polygon(self) -> BaseGeometry | None:
        """The sea within the region's box, from the pack's shoreline (None if the pack has none)."""
        if self.manifest.shoreline is None or self.manifest.sea_point is None:
            return None
        from twin.geo import read_gmt_segments, water_polygon

        return water_polygon(read_gmt_segments(self.path / self.manifest.shoreline), self.manifest.bbox, self.manifest.sea_point)

    @property
    def terrain_path(self) -> Path | None:
        return None if self.manifest.terrain is None else self.path / self.manifest.terrain.file


def _coords(geom: dict[str, Any], expected: str, where: str) -> Any:
    if not isinstance(geom, dict) or geom.get("type") != expected:
        got = geom.get("type") if isinstance(geom, dict) else type(geom).__name__
        raise RegionPackError(f"{where}: geometry must be a {expected}, got {got}")
    return geom["coordinates"]


def _feature_entity(layer: str, feature: dict[str, Any], synthetic: bool, where: str) -> Entity:
    props = dict(feature.get("properties") or {})
    props.setdefault("synthetic", synthetic)
    geom = feature.get("geometry")
    model: type[Entity]
    if layer == "neighbourhoods":
        props["polygon"] = [tuple(c) for c in _coords(geom, "Polygon", where)[0]]  # type: ignore[arg-type]
        model = Neighbourhood
    elif layer == "buildings":
        props["footprint"] = [tuple(c) for c in _coords(geom, "Polygon", where)[0]]  # type: ignore[arg-type]
        model = Building
    elif layer == "roads":
        props["line"] = [tuple(c) for c in _coords(geom, "LineString", where)]  # type: ignore[arg-type]
        model = RoadSegment
    elif layer == "coast":
        props["line"] = [tuple(c) for c in _coords(geom, "LineString", where)]  # type: ignore[arg-type]
        model = CoastSegment
    elif layer == "sensors":
        lon, lat = _coords(geom, "Point", where)[:2]  # type: ignore[arg-type]
        props["lon"], props["lat"] = float(lon), float(lat)
        model = Sensor
    else:  # pragma: no cover - LAYERS is closed
        raise RegionPackError(f"{where}: unknown layer {layer}")
    try:
        return model.model_validate(props)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RegionPackError(f"{where}: {problems}") from None


def load_pack(path: Path) -> RegionPack:
    path = Path(path)
    manifest_path = path / "region.json"
    if not manifest_path.is_file():
        raise RegionPackError(f"{path}: not a region pack (no region.json)")
    try:
        manifest = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise RegionPackError(f"{manifest_path}: {exc}") from None
    region = Region(
        id=EntityId.of(manifest.id, "_", "region", manifest.id), name=manifest.name, synthetic=False,
        bbox=manifest.bbox, mean_water_level_note=manifest.mean_water_level_note,
    )
    pack = RegionPack(path=path, manifest=manifest, region=region)
    if "districts" in manifest.layers:
        try:
            pack.districts = load_districts(path / manifest.layers["districts"].file, manifest.id)
        except DistrictError as exc:
            raise RegionPackError(str(exc)) from None
    for layer in LAYERS:
        info = manifest.layers.get(layer)
        if info is None:
            continue
        file = path / info.file
        data = read_layer(file, layer, RegionPackError)
        target: dict[str, Any] = getattr(pack, layer)
        for i, feature in enumerate(data.get("features", [])):
            fid = (feature.get("properties") or {}).get("id", f"#{i}")
            entity = _feature_entity(layer, feature, info.synthetic, f"{file.name} feature {fid}")
            if entity.id.region != manifest.id:
                raise RegionPackError(f"{file.name} feature {fid}: id is not in region {manifest.id!r}")
            if entity.id in target:
                raise RegionPackError(f"{file.name} feature {fid}: duplicate id")
            target[entity.id] = entity
    _attribute_sensors(pack)
    _assign_gauges(pack)
    return pack


def _assign_gauges(pack: RegionPack) -> None:
    """Each coast segment is driven by its nearest water-level sensor (one sensor, so its state is co-partitioned)."""
    gauges = [s for s in pack.sensors.values() if s.sensor_kind == "water_level"]
    if not gauges:
        return
    tree = STRtree([to_metric(Point(g.lon, g.lat)) for g in gauges])
    for cid, seg in list(pack.coast.items()):
        if seg.gauge is None:
            nearest = int(tree.query_nearest(to_metric(LineString(seg.line)))[0])
            pack.coast[cid] = seg.model_copy(update={"gauge": gauges[nearest].id})

    def segments_of(gauge: str) -> list[CoastSegment]:
        return [c for c in pack.coast.values() if c.gauge == gauge]

    pack.coast_by_gauge = {g.id: segments_of(g.id) for g in gauges}


def _attribute_sensors(pack: RegionPack) -> None:
    """Give every sensor its neighbourhood and nearest road and coast segment, from the spatial index where the pack
    does not say them."""
    if not pack.sensors:
        return
    index = pack.index
    for sid, sensor in list(pack.sensors.items()):
        if sensor.neighbourhood and (sensor.road or sensor.coast):
            continue
        place = index.locate(sensor.lon, sensor.lat)
        update = {k: v for k, v in place.items() if getattr(sensor, k) is None and v is not None}
        if update:
            pack.sensors[sid] = sensor.model_copy(update=update)


def bundled_pack(name: str = "kiel") -> RegionPack:
    return load_pack(BUNDLED_DIR / name)
