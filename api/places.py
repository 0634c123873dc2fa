"""Where each entity is, for filters on live streams and history: a representative point and its neighbourhood."""

from __future__ import annotations

from dataclasses import dataclass

from shapely.geometry import LineString, Polygon

from twin.entities import Building, CoastSegment, Neighbourhood, RoadSegment, Sensor
from twin.region import RegionPack


@dataclass(frozen=True)
class Place:
    lon: float
    lat: float
    neighbourhood: str | None  # slug
    kind: str


def places(pack: RegionPack) -> dict[str, Place]:
    out: dict[str, Place] = {}
    for e in pack.entities().values():
        hood = getattr(e, "neighbourhood", None)
        slug = hood.scope if hood else (e.id.scope if e.id.scope != "_" else None)
        if isinstance(e, Sensor):
            out[e.id] = Place(e.lon, e.lat, slug, "sensor")
        elif isinstance(e, RoadSegment | CoastSegment):
            p = LineString(e.line).interpolate(0.5, normalized=True)
            out[e.id] = Place(p.x, p.y, slug, e.id.kind.value)
        elif isinstance(e, Building):
            c = Polygon(e.footprint).centroid
            out[e.id] = Place(c.x, c.y, slug, "building")
        elif isinstance(e, Neighbourhood):
            c = Polygon(e.polygon).representative_point()
            out[e.id] = Place(c.x, c.y, e.id.scope, "neighbourhood")
    return out
