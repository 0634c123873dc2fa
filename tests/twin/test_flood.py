"""Flood model on terrains whose answer is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from shapely.geometry import LineString

from twin.flood import Barrier, FloodInputError, Grid, connected_flood, effective_heights, simulate, spill_levels

T0 = datetime(2023, 10, 20, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


def grid(h: np.ndarray, cell: float = 10.0) -> Grid:
    return Grid(h.astype(float), origin_x=0.0, origin_y=h.shape[0] * cell, cell=cell)


def sea_left(shape: tuple[int, int], cols: int = 3) -> np.ndarray:
    sea = np.zeros(shape, bool)
    sea[:, :cols] = True
    return sea


def test_basin_behind_a_wall_floods_only_after_overtopping() -> None:
    h = np.full((20, 30), 0.5)
    h[:, :3] = -3.0  # sea
    wall_x = 10 * 10 + 5.0  # the wall runs north-south through column 10
    g = grid(h)
    wall = Barrier("kiel:_:coast:w", LineString([(wall_x, 0), (wall_x, 200)]), crest_m=2.0)
    res = simulate(g, sea_left(h.shape), [wall], T0, HOUR, [1.0, 1.9, 2.1, 1.0])
    behind = np.zeros(h.shape, bool)
    behind[:, 12:] = True
    assert res.extent_cells[0] == res.extent_cells[1] == 7 * 20  # only the strip in front of the wall (cols 3-9)
    assert (res.first_wet_step[behind] == 2).all()  # overtopped at 2.1 m
    assert res.max_depth[5, 20] == pytest.approx(2.1 - 0.5)
    # after the peak the water that came over stays behind the wall, up to its crest
    assert (res.wet_steps[behind] == 2).all() and res.duration_h[5, 20] == 2.0
    assert res.extent_cells[3] == 27 * 20  # columns 3-29; the wall column counts by the ground under it


def test_isolated_depression_below_sea_level_stays_dry() -> None:
    h = np.full((15, 15), 3.0)
    h[:, :3] = -3.0
    h[6:9, 8:11] = -1.0  # below sea level, but enclosed by 3 m ground
    g = grid(h)
    res = simulate(g, sea_left(h.shape), [], T0, HOUR, [1.5])
    assert res.extent_cells == [0]
    assert not res.max_depth[6:9, 8:11].any()
    bathtub = (h < 1.5) & ~sea_left(h.shape)
    assert bathtub.sum() == 9  # a bathtub model would have flooded it


def test_slope_area_by_hand() -> None:
    # ground rises 0.1 m per 10 m cell from column 3: h = 0.1 * (c - 2) for c >= 3
    cols = np.arange(40)
    h = np.tile(np.where(cols < 3, -2.0, 0.1 * (cols - 2)), (10, 1))
    g = grid(h)
    res = simulate(g, sea_left(h.shape), [], T0, HOUR, [1.05])
    # wet where 0.1 * (c - 2) < 1.05, i.e. c <= 12: columns 3..12 = 10 columns x 10 rows x 100 m2
    assert res.extent_cells == [100]
    assert res.extent_cells[0] * g.cell**2 == 10_000.0
    assert res.max_depth[0, 3] == pytest.approx(0.95) and res.max_depth[0, 12] == pytest.approx(0.05)


def test_breach_lets_water_in_from_its_hour() -> None:
    h = np.full((20, 30), 0.5)
    h[:, :3] = -3.0
    wall = Barrier("kiel:_:coast:w", LineString([(105.0, 0), (105.0, 200)]), crest_m=2.5, breached_from=2.0)
    res = simulate(grid(h), sea_left(h.shape), [wall], T0, HOUR, [1.5] * 5)
    assert res.first_wet_step[10, 20] == 2
    assert res.extent_cells[:2] == [140, 140] and res.extent_cells[2] == 27 * 20


def test_spill_levels_agree_with_the_label_baseline() -> None:
    rng = np.random.default_rng(4)
    h = ndimage_smooth(rng.random((80, 90)) * 4 - 1)
    sea = sea_left(h.shape)
    h[sea] = -3
    wall = Barrier("kiel:_:coast:w", LineString([(300.0, 0), (300.0, 500)]), crest_m=2.2)
    eff = effective_heights(grid(h), [wall], 0.0)
    spill = spill_levels(eff, sea)
    for level in (0.2, 0.9, 1.5, 2.3, 2.8):
        assert ((spill < level) == connected_flood(eff, sea, level)).all(), level
        bounded = spill_levels(eff, sea, max_level=level)  # worked out only where a level up to this one reaches
        assert ((bounded < level) == (spill < level)).all(), level
        assert np.allclose(bounded[bounded < level], spill[bounded < level])


def ndimage_smooth(a: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.uniform_filter(a, 5)


def test_bad_inputs() -> None:
    h = np.zeros((5, 5))
    with pytest.raises(FloodInputError, match="time step must be positive"):
        simulate(grid(h), sea_left(h.shape, 1), [], T0, -HOUR, [1.0])
    with pytest.raises(FloodInputError, match="curve is empty"):
        simulate(grid(h), sea_left(h.shape, 1), [], T0, HOUR, [])
    with pytest.raises(FloodInputError, match="at least one sea cell"):
        simulate(grid(h), np.zeros(h.shape, bool), [], T0, HOUR, [1.0])
    with pytest.raises(FloodInputError, match="cancelled"):
        simulate(grid(h), sea_left(h.shape, 1), [], T0, HOUR, [1.0, 2.0], on_step=lambda i, n, d: False)
