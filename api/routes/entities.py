from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from shapely import STRtree
from shapely.geometry import box, shape

from api.deps import PackDep, ReadModelDep, SettingsDep
from api.filters import BBOX, ENTITY_ID, check_neighbourhood, parse_bbox
from twin.entities import Building, CoastSegment, Entity, Neighbourhood, RoadSegment, Sensor
from twin.ids import EntityId, EntityKind, InvalidEntityId

router = APIRouter(tags=["entities"])


def entity_geometry(e: Entity) -> dict[str, Any] | None:
    if isinstance(e, Building):
        return {"type": "Polygon", "coordinates": [list(map(list, e.footprint))]}
    if isinstance(e, Neighbourhood):
        return {"type": "Polygon", "coordinates": [list(map(list, e.polygon))]}
    if isinstance(e, RoadSegment | CoastSegment):
        return {"type": "LineString", "coordinates": list(map(list, e.line))}
    if isinstance(e, Sensor):
        return {"type": "Point", "coordinates": [e.lon, e.lat]}
    return None


class EntityIndex:
    """STRtree over every entity's geometry, built once per API process."""

    def __init__(self, entities: dict[str, Entity]) -> None:
        items = [(eid, entity_geometry(e)) for eid, e in entities.items()]
        items = [(eid, g) for eid, g in items if g is not None]
        self.ids = [eid for eid, _ in items]
        self.tree = STRtree([shape(g) for _, g in items])


def live_only_feature(rec: dict[str, Any]) -> dict[str, Any]:
    """An entity that events created (a defect report, a public event): not in the region pack, only in the twin."""
    st = rec["state"]
    geom = {"type": "Point", "coordinates": [st["lon"], st["lat"]]} if "lon" in st else None
    return {"type": "Feature", "id": rec["entity_id"], "geometry": geom,
            "properties": {"id": rec["entity_id"], "kind": rec["entity_type"], "synthetic": False, "reported": st,
                           "revision": rec["revision"], "updated_at": rec["occurred_at"]}}


LIVE_ONLY_KINDS = (EntityKind.REPORT, EntityKind.EVENT)


def feature(e: Entity, live: dict[str, Any] | None) -> dict[str, Any]:
    props = e.model_dump(mode="json", exclude={"footprint", "polygon", "line", "reported"})
    props["kind"] = e.id.kind.value
    if live is not None:
        props["reported"] = live["state"]
        props["revision"] = live["revision"]
        props["updated_at"] = live["occurred_at"]
    return {"type": "Feature", "id": e.id, "geometry": entity_geometry(e), "properties": props}


@router.get("/entities", operation_id="list_entities", summary="Entities as GeoJSON, filtered and paged")
def list_entities(
    request: Request, pack: PackDep, rm: ReadModelDep, settings: SettingsDep,
    type: Annotated[EntityKind | None, Query(description="entity kind")] = None,
    neighbourhood: Annotated[str | None, Query(description="neighbourhood slug, e.g. 'gaarden'")] = None,
    bbox: Annotated[str | None, Query(json_schema_extra=BBOX)] = None,
    limit: Annotated[int, Query(ge=1, description="at most PLIETSCH_MAX_PAGE_SIZE (the maximum below)")] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    if limit > settings.max_page_size:
        raise HTTPException(422, f"limit {limit} is above the maximum page size {settings.max_page_size}; page with offset")
    check_neighbourhood(pack, neighbourhood)
    if type in LIVE_ONLY_KINDS:  # created by events, not in the pack: listed from the read model alone
        live = sorted((r for r in rm.state.copy().values() if r["entity_type"] == type.value), key=lambda r: r["entity_id"])
        feats = [live_only_feature(r) for r in live]
        if neighbourhood is not None:
            feats = [f for f in feats if f["id"].split(":")[1] == neighbourhood]
        if bbox is not None:
            x0, y0, x1, y1 = parse_bbox(bbox)
            feats = [f for f in feats if f["geometry"] and x0 <= f["geometry"]["coordinates"][0] <= x1
                     and y0 <= f["geometry"]["coordinates"][1] <= y1]
        return {"type": "FeatureCollection", "total": len(feats), "offset": offset, "limit": limit,
                "synthetic_layers": pack.synthetic_layers(), "features": feats[offset: offset + limit]}
    candidates: list[Entity] = list(pack.entities().values())
    if bbox is not None:
        index = request.app.state.entity_index
        hits = index.tree.query(box(*parse_bbox(bbox)), predicate="intersects")
        everything = pack.entities()
        candidates = [everything[index.ids[int(i)]] for i in hits]
    items = []
    for e in candidates:
        if type is not None and e.id.kind is not type:
            continue
        if neighbourhood is not None and e.id.scope != neighbourhood and getattr(e, "neighbourhood", None) != \
                f"{pack.id}:{neighbourhood}:neighbourhood:{neighbourhood}":
            continue
        items.append(e)
    items.sort(key=lambda e: e.id)
    page = items[offset: offset + limit]
    return {"type": "FeatureCollection", "total": len(items), "offset": offset, "limit": limit,
            "synthetic_layers": pack.synthetic_layers(),
            "features": [feature(e, rm.get(e.id)) for e in page]}


@router.get("/entities/{entity_id}", operation_id="get_entity", summary="One entity with its live state")
def get_entity(entity_id: Annotated[str, Path(json_schema_extra=ENTITY_ID)], pack: PackDep, rm: ReadModelDep) -> dict[str, Any]:
    try:
        eid = EntityId.parse(entity_id)
    except InvalidEntityId as exc:
        raise HTTPException(422, str(exc)) from None
    e = pack.entities().get(eid)
    if e is None and eid.kind in LIVE_ONLY_KINDS and (rec := rm.get(eid)) is not None:
        return live_only_feature(rec)
    if e is None:
        raise HTTPException(404, f"no entity {entity_id!r} in region {pack.id!r}; list them with GET /entities?type={eid.kind.value}")
    return feature(e, rm.get(eid))


