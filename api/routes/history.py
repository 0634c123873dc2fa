"""History from the archive: the events of an entity or an area between two times."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from api.deps import PackDep, SettingsDep
from api.filters import parse_bbox, parse_range
from streams.archive import read_events
from twin.ids import EntityId, InvalidEntityId

router = APIRouter(tags=["history"])


def _events(request: Request, start: str, end: str, keep: Any, limit: int, offset: int) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of archived events (each at its entity's place), oldest first, paged."""
    settings = request.app.state.settings
    places = request.app.state.places
    t0, t1 = parse_range(start, end)
    matched = [] if not settings.archive_dir.is_dir() else [
        (topic, e) for topic, e in read_events(settings.archive_dir, until=t1) if t0 <= e.occurred_at <= t1 and keep(e)]
    features = []
    for topic, e in matched[offset: offset + limit]:
        p = places.get(e.entity_id)
        features.append({"type": "Feature", "id": e.event_id,
                         "geometry": None if p is None else {"type": "Point", "coordinates": [p.lon, p.lat]},
                         "properties": {"topic": topic, "type": type(e).__name__, **e.model_dump(mode="json")}})
    return {"type": "FeatureCollection", "total": len(matched), "offset": offset, "limit": limit, "features": features}


@router.get("/history/entities/{entity_id}", operation_id="entity_history", summary="Events of one entity between two times")
def entity_history(request: Request, entity_id: str, pack: PackDep, start: str, end: str,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 1000, offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    try:
        eid = EntityId.parse(entity_id)
    except InvalidEntityId as exc:
        raise HTTPException(422, str(exc)) from None
    if eid not in pack.entities():
        raise HTTPException(404, f"no entity {entity_id!r} in region {pack.id!r}")
    return _events(request, start, end, lambda e: e.entity_id == eid, limit, offset)


@router.get("/history/area", operation_id="area_history", summary="Events in a bounding box between two times")
def area_history(request: Request, bbox: str, start: str, end: str,
                 limit: Annotated[int, Query(ge=1, le=10_000)] = 1000, offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    x0, y0, x1, y1 = parse_bbox(bbox)
    places = request.app.state.places

    def inside(e: Any) -> bool:
        p = places.get(e.entity_id)
        return p is not None and x0 <= p.lon <= x1 and y0 <= p.lat <= y1

    return _events(request, start, end, inside, limit, offset)


@router.get("/history/range", operation_id="history_range", summary="First and last occurrence time in the archive")
def history_range(settings: SettingsDep) -> dict[str, Any]:
    if not settings.archive_dir.is_dir():
        return {"start": None, "end": None, "events": 0}
    times = [e.occurred_at for _, e in read_events(settings.archive_dir)]
    if not times:
        return {"start": None, "end": None, "events": 0}
    return {"start": min(times).isoformat(), "end": max(times).isoformat(), "events": len(times)}


@router.get("/history/state", operation_id="state_at", summary="The twin as it stood at a time, rebuilt from the archive")
def state_at(pack: PackDep, settings: SettingsDep, time: str) -> dict[str, Any]:
    from api.filters import parse_time
    from streams.archive import rebuild

    at = parse_time("time", time)
    if not settings.archive_dir.is_dir():
        raise HTTPException(404, f"no archive at {settings.archive_dir}; the archive sink ('plietsch archive') writes it")
    state = rebuild(settings.archive_dir, pack, at)
    return {"time": at.isoformat(), "as_of": state.as_of.isoformat() if state.as_of else None,
            "events_applied": state.events_applied,
            "sensors": {k: v.to_json() for k, v in state.sensors.items()},
            "coast": {k: v.to_json() for k, v in state.coast.items()},
            "active_alerts": [a.model_dump(mode="json") for a in state.alerts.values()]}
