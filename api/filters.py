"""Query parameters shared by the routes, with errors a person can act on."""

from __future__ import annotations

from datetime import datetime

from fastapi import HTTPException

MAX_BBOX_DEG2 = 1.0  # a region is a few tenths of a degree across; larger boxes only cost


def parse_bbox(raw: str) -> tuple[float, float, float, float]:
    try:
        parts = tuple(float(x) for x in raw.split(","))
    except ValueError:
        raise HTTPException(422, f"bbox {raw!r} must be four numbers 'min_lon,min_lat,max_lon,max_lat'") from None
    if len(parts) != 4:
        raise HTTPException(422, f"bbox {raw!r} has {len(parts)} numbers, 4 are needed: 'min_lon,min_lat,max_lon,max_lat'")
    x0, y0, x1, y1 = parts
    if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
        raise HTTPException(422, f"bbox {raw!r} is not a WGS84 box with min < max (lon in -180..180, lat in -90..90)")
    if (x1 - x0) * (y1 - y0) > MAX_BBOX_DEG2:
        raise HTTPException(422, f"bbox {raw!r} covers {(x1 - x0) * (y1 - y0):.2f} square degrees, above the limit of "
                                 f"{MAX_BBOX_DEG2} (about 70 x 110 km at Kiel); ask for a smaller area")
    return x0, y0, x1, y1


def parse_time(name: str, raw: str) -> datetime:
    try:
        t = datetime.fromisoformat(raw)
    except ValueError:
        raise HTTPException(422, f"{name} {raw!r} is not an ISO 8601 time, e.g. 2023-10-20T21:33:00+02:00") from None
    if t.tzinfo is None:
        raise HTTPException(422, f"{name} {raw!r} has no UTC offset; add one, e.g. +01:00 or Z")
    return t


def parse_range(start: str, end: str) -> tuple[datetime, datetime]:
    t0, t1 = parse_time("start", start), parse_time("end", end)
    if t1 < t0:
        raise HTTPException(422, f"end {end!r} is before start {start!r}")
    return t0, t1
