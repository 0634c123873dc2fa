"""Hydraulically connected storm-surge inundation over a terrain raster (pure: numpy, scipy, scikit-image).

Only cells connected to the sea through cells lower than the water level flood (not a bathtub). Coast segments with a
crest are rasterised as barriers that hold the water back until it overtops them, or until they are breached.

The key quantity is each cell's *spill level*: the lowest sea level at which water from the sea reaches it, i.e. the
minimum over all paths from the sea of the highest point on the path (morphological reconstruction by erosion, a
priority flood). It is computed once per barrier configuration; every time step of a surge curve is then a comparison
``spill < level``. ``connected_flood`` is the direct per-level answer with ``scipy.ndimage.label``: the baseline, and
the cross-check in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from scipy import ndimage
from shapely import contains_xy
from shapely.geometry import LineString, Polygon
from shapely.geometry.base import BaseGeometry
from skimage.morphology import reconstruction

FOUR = ndimage.generate_binary_structure(2, 1)  # water moves between cells that share an edge
MAX_CELLS = 25_000_000  # larger rasters are refused: about 200 MB per float64 layer


class FloodInputError(ValueError):
    """A scenario input is out of bounds; the message says which and what is allowed."""


@dataclass(frozen=True)
class Grid:
    """A north-up raster: row 0 is the north edge; coordinates in a metric CRS."""

    heights: np.ndarray  # metres above mean water level; NaN = no data (treated as high ground)
    origin_x: float
    origin_y: float
    cell: float
    crs: str = "EPSG:25832"

    @property
    def shape(self) -> tuple[int, int]:
        return self.heights.shape  # type: ignore[return-value]

    def centres(self, window: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        r0, r1, c0, c1 = window or (0, self.shape[0], 0, self.shape[1])
        xs = self.origin_x + (np.arange(c0, c1) + 0.5) * self.cell
        ys = self.origin_y - (np.arange(r0, r1) + 0.5) * self.cell
        return np.meshgrid(xs, ys)

    def window(self, geom: BaseGeometry) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = geom.bounds
        c0 = max(0, int((x0 - self.origin_x) // self.cell))
        c1 = min(self.shape[1], int((x1 - self.origin_x) // self.cell) + 1)
        r0 = max(0, int((self.origin_y - y1) // self.cell))
        r1 = min(self.shape[0], int((self.origin_y - y0) // self.cell) + 1)
        return r0, r1, c0, c1

    def cells_of(self, geom: BaseGeometry) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the cells whose centre lies in *geom* (a line: within half a cell of it)."""
        if geom.geom_type in ("LineString", "MultiLineString"):
            geom = geom.buffer(self.cell * 0.75)
        r0, r1, c0, c1 = self.window(geom)
        if r1 <= r0 or c1 <= c0:
            return np.empty(0, int), np.empty(0, int)
        xx, yy = self.centres((r0, r1, c0, c1))
        inside = contains_xy(geom, xx, yy)
        if not inside.any():  # a footprint smaller than a cell still touches the cell under its centre
            c = geom.representative_point()
            r, k = int((self.origin_y - c.y) // self.cell), int((c.x - self.origin_x) // self.cell)
            if 0 <= r < self.shape[0] and 0 <= k < self.shape[1]:
                return np.array([r]), np.array([k])
            return np.empty(0, int), np.empty(0, int)
        rr, cc = np.nonzero(inside)
        return rr + r0, cc + c0


@dataclass(frozen=True)
class Barrier:
    """A coast segment as a barrier: its crest (m above mean water level), raised or breached by the scenario."""

    segment_id: str
    line: LineString  # in the grid's CRS
    crest_m: float
    breached_from: float | None = None  # hours after the start; None: never breached


def effective_heights(grid: Grid, barriers: Sequence[Barrier], at_hour: float) -> np.ndarray:
    eff = np.where(np.isnan(grid.heights), np.inf, grid.heights)
    for b in barriers:
        if b.breached_from is not None and at_hour >= b.breached_from:
            continue
        rr, cc = grid.cells_of(b.line)
        eff[rr, cc] = np.maximum(eff[rr, cc], b.crest_m)
    return eff


def spill_levels(eff: np.ndarray, sea: np.ndarray, max_level: float | None = None) -> np.ndarray:
    """The lowest sea level at which each cell is reached from the sea (priority flood by reconstruction).

    With *max_level*, only the cells that some level up to it can reach are worked out (the others get +inf): one
    ``ndimage.label`` finds them, and the reconstruction runs on their bounding box alone. A path that reaches a cell
    below *max_level* only crosses cells lower than that, all of which are in that set, so their values are exact."""
    if eff.size > MAX_CELLS:
        raise FloodInputError(f"raster of {eff.size:,} cells is above the limit of {MAX_CELLS:,}; use a coarser cell size")
    if max_level is None:
        return _reconstruct(eff, sea)
    reach = connected_flood(eff, sea, max_level)
    out = np.full(eff.shape, np.inf)
    if not reach.any():
        return out
    rows, cols = np.flatnonzero(reach.any(axis=1)), np.flatnonzero(reach.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    window = reach[r0:r1, c0:c1]
    sub = np.where(window, eff[r0:r1, c0:c1], np.inf)
    out[r0:r1, c0:c1] = np.where(window, _reconstruct(sub, sea[r0:r1, c0:c1] & window), np.inf)
    return out


def _reconstruct(eff: np.ndarray, sea: np.ndarray) -> np.ndarray:
    finite = np.where(np.isinf(eff), np.nanmax(eff[np.isfinite(eff)], initial=0.0) + 1e6, eff)
    top = finite.max() + 1.0
    seed = np.where(sea, finite, top)
    return reconstruction(seed, finite, method="erosion", footprint=FOUR)  # type: ignore[no-any-return]


def connected_flood(eff: np.ndarray, sea: np.ndarray, level: float) -> np.ndarray:
    """Cells under water at *level*: below it and connected to the sea (baseline with scipy.ndimage.label)."""
    low = eff < level
    labels, _ = ndimage.label(low, structure=FOUR)
    wet_labels = np.unique(labels[sea & low])
    wet_labels = wet_labels[wet_labels > 0]
    return np.isin(labels, wet_labels)


@dataclass
class FloodResult:
    times: list[datetime]
    levels: list[float]
    extent_cells: list[int]
    first_wet_step: np.ndarray  # -1: never wet
    max_depth: np.ndarray  # metres, 0 where dry
    wet_steps: np.ndarray  # number of steps wet
    step_hours: float

    @property
    def duration_h(self) -> np.ndarray:
        return self.wet_steps * self.step_hours


def simulate(grid: Grid, sea: np.ndarray, barriers: Sequence[Barrier], start: datetime, step: timedelta,
             levels: Sequence[float], on_step: Callable[[int, int, np.ndarray], bool | None] | None = None) -> FloodResult:
    """Run a surge curve (one level per step, metres above mean water level) over the grid.

    Water that got behind a barrier or into a basin stays there when the sea falls, down to the level at which it can
    drain back to the sea (the cell's spill level). *on_step(i, n, depth)* is called after each step with that step's
    depth raster; returning False cancels (a FloodInputError is raised)."""
    if not len(levels):
        raise FloodInputError("the water-level curve is empty")
    if step <= timedelta(0):
        raise FloodInputError(f"the time step must be positive, got {step}")
    if sea.shape != grid.shape or not sea.any():
        raise FloodInputError("the sea mask must match the grid and contain at least one sea cell")
    hours = step.total_seconds() / 3600
    breach_hours = sorted({b.breached_from for b in barriers if b.breached_from is not None})
    cache: dict[float, np.ndarray] = {}

    def spill_for(hour: float) -> np.ndarray:
        key = max([h for h in breach_hours if h <= hour], default=-1.0)
        if key not in cache:
            cache[key] = spill_levels(effective_heights(grid, barriers, hour), sea, max(levels))
        return cache[key]

    ground = np.where(np.isnan(grid.heights), np.inf, grid.heights)
    first = np.full(grid.shape, -1, dtype=np.int32)
    max_depth = np.zeros(grid.shape, dtype=np.float32)
    wet_steps = np.zeros(grid.shape, dtype=np.int32)
    surface = np.full(grid.shape, -np.inf)
    extent: list[int] = []
    land = ~sea

    for i, level in enumerate(levels):
        spill = spill_for(i * hours)
        surface = np.where(spill < level, level, np.minimum(surface, spill))
        d = np.where(land, np.maximum(surface - ground, 0.0), 0.0).astype(np.float32)
        wet = d > 0
        first[(first < 0) & wet] = i
        np.maximum(max_depth, d, out=max_depth)
        wet_steps += wet
        extent.append(int(wet.sum()))
        if on_step is not None and on_step(i, len(levels), d) is False:
            raise FloodInputError("cancelled")
    return FloodResult([start + i * step for i in range(len(levels))], [float(x) for x in levels], extent, first,
                       max_depth, wet_steps, hours)


def rasterise_sea(grid: Grid, water: Polygon) -> np.ndarray:
    """Sea cells: cell centres inside the water polygon (grid CRS)."""
    xx, yy = grid.centres()
    return np.asarray(contains_xy(water, xx, yy))


def extent_polygons(mask: np.ndarray, grid: Grid) -> BaseGeometry:
    """The cells of *mask* as (multi)polygons in the grid's CRS: row runs merged, then simplified to half a cell."""
    from shapely.geometry import box as shp_box
    from shapely.ops import unary_union

    boxes = []
    for r in np.nonzero(mask.any(axis=1))[0]:
        row = np.concatenate(([False], mask[r], [False]))
        edges = np.flatnonzero(row[1:] != row[:-1])
        y1 = grid.origin_y - r * grid.cell
        for c0, c1 in zip(edges[::2], edges[1::2], strict=True):
            boxes.append(shp_box(grid.origin_x + c0 * grid.cell, y1 - grid.cell, grid.origin_x + c1 * grid.cell, y1))
    return unary_union(boxes).simplify(grid.cell / 2) if boxes else Polygon()
