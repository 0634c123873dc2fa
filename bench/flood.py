"""Benchmark: the connected-flood step, against scipy.ndimage.label on the same raster, and a 24-hour hourly surge on
the bundled region.

Run: ``.venv/bin/python -m bench.flood``. Rasters of 10^6 and 10^7 cells (smooth synthetic terrain, sea on the west
edge, a wall with a crest). Per raster: one level with ndimage.label (baseline) and with the spill levels
(reconstruction once, then one comparison), then a 24-level curve both ways; the answers are checked equal.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime

import numpy as np
from scipy import ndimage

from twin.flood import connected_flood, spill_levels
from twin.region import bundled_pack
from twin.scenario import ScenarioRequest, run


def terrain(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    small = ndimage.gaussian_filter(rng.normal(0, 1, (n // 10 + 1, n // 10 + 1)), 3)
    h = ndimage.zoom(small, 10, order=1)[:n, :n] * 3 + np.linspace(-1, 4, n)[None, :]
    sea = np.zeros((n, n), bool)
    sea[:, : n // 20] = True
    h[sea] = -3
    h[:, n // 10] = np.maximum(h[:, n // 10], 2.2)  # a wall
    return h, sea


def timed(fn, *a):  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn(*a)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,3163", help="raster side lengths (1000 -> 10^6 cells, 3163 -> 10^7)")
    args = ap.parse_args()
    print(f"{platform.machine()} Python {platform.python_version()}")
    curve = list(np.linspace(0.2, 2.6, 12)) + list(np.linspace(2.6, 0.4, 12))
    for n in (int(x) for x in args.sizes.split(",")):
        h, sea = terrain(n)
        label_one, t_label = timed(connected_flood, h, sea, 1.5)
        spill, t_spill = timed(spill_levels, h, sea, 1.5)
        mine_one, t_cmp = timed(np.less, spill, 1.5)
        assert (label_one == mine_one).all()
        t0 = time.perf_counter()
        base = [connected_flood(h, sea, lv) for lv in curve]
        t_label_curve = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = spill_levels(h, sea, max(curve))
        mine = [s < lv for lv in curve]
        t_mine_curve = time.perf_counter() - t0
        assert all((a == b).all() for a, b in zip(base, mine, strict=True))
        print(f"{n * n:>11,} cells  one level: ndimage.label {t_label * 1000:7.0f} ms | spill levels {t_spill * 1000:7.0f} ms "
              f"+ compare {t_cmp * 1000:5.1f} ms   24 levels: label {t_label_curve:6.2f} s | spill {t_mine_curve:6.2f} s")
        del h, sea, spill, base, mine
    pack = bundled_pack()
    req = ScenarioRequest(preset="kiel-2023-10-20", duration_h=23, step_minutes=60,
                          start=datetime(2023, 10, 20, 8, tzinfo=UTC))
    res, t = timed(run, pack, req)
    print(f"24-hour hourly surge (20 Oct 2023 preset) on the bundled Kiel pack ({res.grid.heights.size:,} cells of "
          f"{res.grid.cell:g} m, with its baseline run and impacts on {len(pack.buildings)} buildings): {t:.2f} s")


if __name__ == "__main__":
    main()
