"""Query parameters shared by the routes, with errors a person can act on. Each parser accepts exactly what the
OpenAPI document promises for its parameter (api/openapi.py), so a request the document calls valid is answered."""

from __future__ import annotations

import re
from datetime import datetime

from fastapi import HTTPException

from twin.region import RegionPack

# RFC 3339 date-time (OpenAPI ``format: date-time``): date, 'T', time with seconds, optional fraction, 'Z' or offset.
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
DATE_TIME = {"format": "date-time"}
_LON = r"-?(?:180(?:\.0+)?|(?:1[0-7]\d|\d{1,2})(?:\.\d+)?)"
_LAT = r"-?(?:90(?:\.0+)?|[1-8]?\d(?:\.\d+)?)"
BBOX_PATTERN = rf"^{_LON},{_LAT},{_LON},{_LAT}$"
_BBOX = re.compile(BBOX_PATTERN)
BBOX = {"pattern": BBOX_PATTERN, "description": "min_lon,min_lat,max_lon,max_lat (WGS84 degrees; corners in either "
                                                "order, a box larger than the region is the whole region)"}


def check_neighbourhood(pack: RegionPack, neighbourhood: str | None, german: bool = False) -> None:
    """404 naming the known ones when *neighbourhood* is given and not one of *pack*'s (German on public routes)."""
    if neighbourhood is None:
        return
    hoods = sorted(n.id.scope for n in pack.neighbourhoods.values())
    if neighbourhood in hoods:
        return
    if german:
        raise HTTPException(404, f"kein Stadtteil {neighbourhood!r} in Region {pack.id!r}; bekannt: {', '.join(hoods)}")
    raise HTTPException(404, f"no neighbourhood {neighbourhood!r} in region {pack.id!r}; known: {', '.join(hoods)}")


def parse_bbox(raw: str) -> tuple[float, float, float, float]:
    try:
        parts = tuple(float(x) for x in raw.split(","))
    except ValueError:
        raise HTTPException(422, f"bbox {raw!r} must be four numbers 'min_lon,min_lat,max_lon,max_lat'") from None
    if len(parts) != 4:
        raise HTTPException(422, f"bbox {raw!r} has {len(parts)} numbers, 4 are needed: 'min_lon,min_lat,max_lon,max_lat'")
    if not _BBOX.fullmatch(raw):
        raise HTTPException(422, f"bbox {raw!r} is not a WGS84 box of plain decimals (lon in -180..180, lat in -90..90), "
                                 "e.g. 10.10,54.29,10.20,54.33")
    x0, y0, x1, y1 = parts
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def parse_time(name: str, raw: str) -> datetime:
    m = _RFC3339.fullmatch(raw)
    if m is None:
        try:
            if datetime.fromisoformat(raw).tzinfo is None:
                raise HTTPException(422, f"{name} {raw!r} has no UTC offset; add one, e.g. +01:00 or Z")
        except ValueError:
            pass
        raise HTTPException(422, f"{name} {raw!r} is not an ISO 8601 (RFC 3339) time, e.g. 2023-10-20T21:33:00+02:00")
    day, hm, sec, frac, off = m.groups()
    leap = sec == "60"  # a leap second is a valid RFC 3339 time: it counts as the last instant of its minute
    text = f"{day}T{hm}:{'59' if leap else sec}{(frac + '000000')[:7] if frac else ''}{off.upper()}"
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise HTTPException(422, f"{name} {raw!r} is not a valid time: {exc}") from None
    return t.replace(microsecond=999_999) if leap else t


def parse_range(start: str, end: str) -> tuple[datetime, datetime]:
    """Both ends; an end before the start is an empty range (nothing lies in it)."""
    return parse_time("start", start), parse_time("end", end)


def _entity_id_pattern() -> str:
    """twin/ids.py's rule as an ECMA regex: '<region>:<scope>:<kind>:<name>' with a known kind."""
    from twin.ids import EntityKind

    slug, name = r"[a-z0-9][a-z0-9-]{0,62}", r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
    return rf"^{slug}:(?:{slug}|_):(?:{'|'.join(k.value for k in EntityKind)}):{name}$"


ENTITY_ID_PATTERN = _entity_id_pattern()
ENTITY_ID = {"pattern": ENTITY_ID_PATTERN, "description": "<region>:<scope>:<kind>:<name>, e.g. kiel:gaarden:sensor:wl-001"}
