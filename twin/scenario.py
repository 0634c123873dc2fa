"""Storm-surge scenarios on a fork of the twin: the request, the run over a region pack, and its impact.

A scenario never changes the live twin: it reads the pack (terrain, coast segments with their crests, assets) and
returns results of its own."""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from shapely.geometry import LineString, Point, Polygon

from twin.flood import MAX_CELLS, Barrier, FloodInputError, FloodResult, Grid, rasterise_sea, simulate
from twin.geo import to_metric
from twin.importers import read_geotiff
from twin.profiles import Surge
from twin.region import BUNDLED_DIR, Manifest, RegionPack, SurgePreset

ROAD_CUT_DEPTH_M = 0.3  # a road is cut where water stands deeper than this (passable for emergency vehicles below)
MAX_STEPS = 500


@functools.cache
def bundled_presets() -> dict[str, SurgePreset]:
    """The surge presets of the bundled region packs (data in each pack's region.json, not code)."""
    out: dict[str, SurgePreset] = {}
    for manifest in sorted(BUNDLED_DIR.glob("*/region.json")):
        out.update(Manifest.model_validate_json(manifest.read_text(encoding="utf-8")).surge_presets)
    return out


def _preset(name: str, presets: Mapping[str, SurgePreset] | None) -> SurgePreset:
    known = bundled_presets() if presets is None else presets
    if name not in known:
        raise FloodInputError(f"unknown preset {name!r}; known: {', '.join(sorted(known)) or 'none'} "
                              "(a region pack defines its presets in region.json 'surge_presets')")
    return known[name]
Level = Annotated[float, Field(ge=-3.0, le=6.0, allow_inf_nan=False)]


class CurvePoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    hour: float = Field(ge=0.0, le=240.0, allow_inf_nan=False, description="hours after the start")
    level_m: Level = Field(description="water level, metres above mean water level")


class Breach(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    segment: str = Field(description="coast segment id")
    from_hour: float = Field(default=0.0, ge=0.0, le=240.0, description="hours after the start when it fails")


MAX_CURVE_POINTS = 1000  # a point per 15 minutes over the longest run (240 h) is 961
MAX_SEGMENTS = 500  # breaches and raised crests: more than any region pack's coast segments


class ScenarioRequest(BaseModel):
    """What a planner asks for. Either a preset or a curve; levels are metres above mean water level."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(default="", max_length=200)
    preset: str | None = Field(default=None, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$",
                               description="a surge preset of the region pack (its region.json 'surge_presets')")
    curve: list[CurvePoint] | None = Field(default=None, max_length=MAX_CURVE_POINTS,
                                           description=f"water level over time, interpolated linearly; at most {MAX_CURVE_POINTS} points")
    start: AwareDatetime | None = Field(default=None, description="start of the scenario; default: the preset's or now")
    duration_h: float = Field(default=24.0, gt=0.0, le=240.0, description="hours to simulate")
    step_minutes: float = Field(default=60.0, ge=5.0, le=1440.0, description="time step")
    sea_level_rise_m: float = Field(default=0.0, ge=0.0, le=3.0, description="added to every level")
    breaches: list[Breach] = Field(default_factory=list, max_length=MAX_SEGMENTS, description=f"at most {MAX_SEGMENTS}")
    raised_crests: dict[str, Annotated[float, Field(ge=-3.0, le=5.0)]] = Field(
        default_factory=dict, max_length=MAX_SEGMENTS, description=f"coast segment id -> metres added to its crest; at most {MAX_SEGMENTS}")

    @model_validator(mode="after")
    def _one_source(self) -> ScenarioRequest:
        if (self.preset is None) == (self.curve is None):
            raise ValueError("give either 'preset' or 'curve', not both or neither")
        if self.curve is not None:
            if len(self.curve) < 2:
                raise ValueError("a curve needs at least two points")
            hours = [p.hour for p in self.curve]
            if hours != sorted(hours) or len(set(hours)) != len(hours):
                raise ValueError("curve hours must increase strictly")
        if self.steps > MAX_STEPS:
            raise ValueError(f"{self.steps} time steps is above the limit of {MAX_STEPS}; use a longer step_minutes")
        return self

    @property
    def steps(self) -> int:
        return int(math.floor(self.duration_h * 60 / self.step_minutes)) + 1

    def start_time(self, presets: Mapping[str, SurgePreset] | None = None) -> datetime:
        """*presets*: the region pack's (default: the bundled packs')."""
        if self.start is not None:
            return self.start
        if self.preset is not None:
            p = _preset(self.preset, presets)
            return p.peak_at - timedelta(hours=min(self.duration_h / 2, p.duration_h))
        return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    def levels(self, presets: Mapping[str, SurgePreset] | None = None) -> list[float]:
        start, step = self.start_time(presets), timedelta(minutes=self.step_minutes)
        if self.preset is not None:
            p = _preset(self.preset, presets)
            surge = Surge(peak_at=p.peak_at, peak_m=p.peak_m, duration_h=p.duration_h)
            raw = [surge.level(start + i * step) for i in range(self.steps)]
        else:
            assert self.curve is not None
            xs = [p.hour for p in self.curve]
            ys = [p.level_m for p in self.curve]
            raw = list(np.interp([i * self.step_minutes / 60 for i in range(self.steps)], xs, ys))
        return [round(float(v) + self.sea_level_rise_m, 3) for v in raw]

    def check_against(self, pack: RegionPack) -> None:
        """Refuse presets and segments the pack does not have, and packs without terrain."""
        if self.preset is not None:
            _preset(self.preset, pack.manifest.surge_presets)
        unknown = [b.segment for b in self.breaches if b.segment not in pack.coast]
        unknown += [s for s in self.raised_crests if s not in pack.coast]
        if unknown:
            raise FloodInputError(f"unknown coast segment(s): {', '.join(sorted(set(unknown)))}; list them with GET /coast")
        if pack.terrain_path is None or not pack.terrain_path.is_file():
            raise FloodInputError(f"region pack {pack.id!r} has no terrain; import a DGM with 'plietsch region import --dgm'")


@dataclass
class AssetImpact:
    entity_id: str
    kind: str
    neighbourhood: str | None
    max_depth_m: float
    first_wet: str | None


@dataclass
class ScenarioRun:
    request: ScenarioRequest
    grid: Grid
    result: FloodResult
    assets: list[AssetImpact]
    baseline_assets: set[str]
    synthetic_inputs: list[str]

    def summary(self) -> dict[str, Any]:
        r = self.result
        area_km2 = float((r.max_depth > 0).sum()) * self.grid.cell**2 / 1e6
        by_hood: dict[str, Counter[str]] = {}
        for a in self.assets:
            by_hood.setdefault(a.neighbourhood or "outside the quarters", Counter())[a.kind] += 1
        roads_cut = sorted(a.entity_id for a in self.assets if a.kind == "road" and a.max_depth_m > ROAD_CUT_DEPTH_M)
        affected = {a.entity_id for a in self.assets}
        return {
            "name": self.request.name, "steps": len(r.levels), "start": r.times[0].isoformat(), "end": r.times[-1].isoformat(),
            "levels_m": r.levels, "peak_level_m": max(r.levels), "extent_cells": r.extent_cells,
            "max_flooded_area_km2": round(area_km2, 4), "max_depth_m": round(float(r.max_depth.max()), 3),
            "cell_m": self.grid.cell, "affected": {k: sum(1 for a in self.assets if a.kind == k) for k in ("building", "road", "sensor")},
            "by_neighbourhood": {h: dict(c) for h, c in sorted(by_hood.items())}, "roads_cut": roads_cut,
            "compared_with_baseline": {"baseline_affected": len(self.baseline_assets),
                                       "added_by_scenario": len(affected - self.baseline_assets)},
            "synthetic_inputs": self.synthetic_inputs, "terrain_cells": int(self.grid.heights.size),
        }


def load_grid(pack: RegionPack) -> Grid:
    assert pack.terrain_path is not None
    t = read_geotiff(pack.terrain_path)
    if t.heights.size > MAX_CELLS:
        raise FloodInputError(f"terrain of {t.heights.size:,} cells is above the limit of {MAX_CELLS:,}")
    return Grid(t.heights, t.origin_x, t.origin_y, t.pixel_x, t.crs)


def barriers(pack: RegionPack, req: ScenarioRequest) -> list[Barrier]:
    breach = {b.segment: b.from_hour for b in req.breaches}
    out = []
    for c in pack.coast.values():
        line = to_metric(LineString(c.line))
        out.append(Barrier(c.id, line, c.crest_m + req.raised_crests.get(c.id, 0.0), breach.get(c.id)))  # type: ignore[arg-type]
    return out


def _asset_cells(pack: RegionPack, grid: Grid) -> list[tuple[str, str, str | None, tuple[np.ndarray, np.ndarray]]]:
    items: list[tuple[str, str, str | None, tuple[np.ndarray, np.ndarray]]] = []
    for b in pack.buildings.values():
        items.append((b.id, "building", b.neighbourhood, grid.cells_of(to_metric(Polygon(b.footprint)))))
    for r in pack.roads.values():
        items.append((r.id, "road", r.neighbourhood, grid.cells_of(to_metric(LineString(r.line)))))
    for s in pack.sensors.values():
        items.append((s.id, "sensor", s.neighbourhood, grid.cells_of(to_metric(Point(s.lon, s.lat)).buffer(grid.cell / 2))))
    return items


def impacts(pack: RegionPack, grid: Grid, res: FloodResult) -> list[AssetImpact]:
    out = []
    for eid, kind, hood, (rr, cc) in _asset_cells(pack, grid):
        if not len(rr):
            continue
        depth = float(res.max_depth[rr, cc].max())
        if depth <= 0:
            continue
        firsts = res.first_wet_step[rr, cc]
        first = int(firsts[firsts >= 0].min())
        out.append(AssetImpact(eid, kind, hood, round(depth, 3), res.times[first].isoformat()))
    return out


def run(pack: RegionPack, req: ScenarioRequest,
        on_step: Callable[[int, int, np.ndarray], bool | None] | None = None, grid: Grid | None = None) -> ScenarioRun:
    """Run a scenario and its baseline (no surge: mean water level plus the sea-level rise, same barriers).
    *grid* is the pack's terrain when the caller has it loaded already."""
    req.check_against(pack)
    grid = grid or load_grid(pack)
    water = pack.water_polygon()
    if water is None:
        raise FloodInputError(f"region pack {pack.id!r} has no shoreline to tell the sea from the land")
    sea = rasterise_sea(grid, to_metric(water))  # type: ignore[arg-type]
    bars = barriers(pack, req)
    step = timedelta(minutes=req.step_minutes)
    presets = pack.manifest.surge_presets
    start = req.start_time(presets)
    result = simulate(grid, sea, bars, start, step, req.levels(presets), on_step)
    base = simulate(grid, sea, bars, start, step, [req.sea_level_rise_m])
    return ScenarioRun(req, grid, result, impacts(pack, grid, result), {a.entity_id for a in impacts(pack, grid, base)},
                       [x for x in pack.synthetic_layers() if x in ("terrain", "coast", "buildings", "roads", "sensors")])


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two scenarios' asset lists side by side: what only one of them floods, and depth differences."""
    da = {x["entity_id"]: x for x in a["assets"]}
    db = {x["entity_id"]: x for x in b["assets"]}
    both = sorted(set(da) & set(db))
    return {"only_in_first": sorted(set(da) - set(db)), "only_in_second": sorted(set(db) - set(da)),
            "in_both": len(both),
            "deeper_in_second": sorted(e for e in both if db[e]["max_depth_m"] > da[e]["max_depth_m"] + 0.05),
            "area_km2": [a["summary"]["max_flooded_area_km2"], b["summary"]["max_flooded_area_km2"]]}
