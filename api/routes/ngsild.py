"""The twin as NGSI-LD (ETSI GS CIM 009, v1.6+ API), read side: ``/ngsi-ld/v1/entities`` (query with type, id,
idPattern, q, attrs, geo-queries, limit/offset/count, options=keyValues), ``/ngsi-ld/v1/entities/{entityId}``, the
served @context, the temporal API (``api.ngsild.temporal``) and subscriptions (``api.ngsild.subscriptions``).
``install(app)`` adds the routes, the ProblemDetails errors and the document's geo-query parameter.

Content negotiation: ``Accept: application/ld+json`` answers carry ``@context`` in the body; ``application/json`` (and
``*/*``, or no Accept) answers name the context in a ``Link`` header; anything else is 406."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse

from api.deps import PackDep, ReadModelDep, SettingsDep
from api.ngsild import context as ctx
from api.ngsild import subscriptions, temporal
from api.ngsild.entities import TYPES, candidates, entity, render, twin_id
from api.ngsild.problems import NgsiError, install_handlers
from api.ngsild.query import COORDINATES, GEOREL_PATTERN, NAME, Q_PATTERN, QueryError, parse_geo, parse_q
from api.ngsild.web import (
    BASE,
    ENTITY_SCHEMA,
    ERRORS,
    ID_LIST_PATTERN,
    ID_REGEX_PATTERN,
    LD,
    NAMES_PATTERN,
    NOT_FOUND,
    OPTIONS_PATTERN,
    URI_PATTERN,
    _names,
    _ok,
    _options,
    answer,
    negotiate,
    shape,
)

router = APIRouter(tags=["ngsi-ld"])
@router.get(f"{BASE}/jsonldContexts/plietsch.jsonld", operation_id="ngsild_context",
            summary="The JSON-LD @context of the twin's NGSI-LD entities",
            responses={200: {"content": {LD: {"schema": {"type": "object", "required": ["@context"]}}}}})
def context_document() -> JSONResponse:
    return JSONResponse(ctx.document(), media_type=LD)


@router.get(f"{BASE}/entities", operation_id="ngsild_query_entities", summary="NGSI-LD: query entities",
            response_class=JSONResponse,
            responses={**_ok({"type": "array", "items": ENTITY_SCHEMA},
                             {"NGSILD-Results-Count": {"description": "with count=true: how many match in all",
                                                       "schema": {"type": "string", "pattern": r"^\d+$"}}}), **ERRORS})
def query_entities(
    request: Request, pack: PackDep, rm: ReadModelDep, settings: SettingsDep,
    id: Annotated[str | None, Query(description="entity ids (URIs), comma-separated",
                                    json_schema_extra={"pattern": ID_LIST_PATTERN})] = None,
    idPattern: Annotated[str | None, Query(description="a regular expression the ids match (letters, digits, ':', "
                                                       "'_', '-', '.', '.*', '.+', '^', '$')",
                                           json_schema_extra={"pattern": ID_REGEX_PATTERN})] = None,
    type: Annotated[str | None, Query(description=f"entity types, comma-separated: {', '.join(TYPES)}",
                                      json_schema_extra={"pattern": NAMES_PATTERN})] = None,
    attrs: Annotated[str | None, Query(description="attributes to return, comma-separated; entities with none of "
                                                   "them are left out", json_schema_extra={"pattern": NAMES_PATTERN})] = None,
    q: Annotated[str | None, Query(description="NGSI-LD query language (ETSI GS CIM 009, 4.9)",
                                   json_schema_extra={"pattern": Q_PATTERN})] = None,
    georel: Annotated[str | None, Query()] = None, geometry: Annotated[str | None, Query()] = None,
    coordinates: Annotated[str | None, Query()] = None, geoproperty: Annotated[str | None, Query()] = None,
    options: Annotated[str | None, Query(json_schema_extra={"pattern": OPTIONS_PATTERN})] = None,
    count: Annotated[bool, Query(description="the number of matches in the NGSILD-Results-Count header")] = False,
    limit: Annotated[int, Query(ge=0, description="at most PLIETSCH_MAX_PAGE_SIZE")] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JSONResponse:
    media = negotiate(request)
    if limit > settings.max_page_size:
        raise NgsiError(400, "BadRequestData", f"limit {limit} is above the maximum page size {settings.max_page_size}; "
                                               "page with offset")
    types = _names(type, "type", NAMES_PATTERN)
    wanted = _names(attrs, "attrs", NAMES_PATTERN)
    opts = _options(options)
    ids = None
    if id is not None:
        if not re.fullmatch(ID_LIST_PATTERN, id):
            raise NgsiError(400, "BadRequestData", f"id {id!r} must be URIs separated by commas, e.g. "
                                                   "urn:ngsi-ld:WaterObserved:kiel:_:sensor:water-level-001")
        ids = set(id.split(","))
    pattern = None
    if idPattern is not None:
        if not re.fullmatch(ID_REGEX_PATTERN, idPattern):
            raise NgsiError(400, "BadRequestData", f"idPattern {idPattern!r} may hold letters, digits, ':', '_', '-', "
                                                   "'.', '.*', '.+', a leading '^' and a trailing '$'")
        pattern = re.compile(idPattern)
    try:
        pred = parse_q(q) if q is not None else None
        geo = parse_geo(georel, geometry, coordinates, geoproperty)
    except QueryError as exc:
        raise NgsiError(400, "BadRequestData", str(exc)) from None
    if types is not None:
        types = [t for t in types if t in TYPES]  # an unknown type matches nothing (it is not an error)
    matches = []
    for t, e in candidates(pack, types):
        ent = render(t, e, rm)
        if ids is not None and ent["id"] not in ids:
            continue
        if pattern is not None and not pattern.search(ent["id"]):
            continue
        if wanted is not None and not any(a in ent for a in wanted):
            continue
        if pred is not None and not pred(ent):
            continue
        if geo is not None and not geo.matches(ent):
            continue
        matches.append((ent, str(e.id)))
    page = [shape(ent, wanted, opts, rm.get(tid)) for ent, tid in matches[offset: offset + limit]]
    return answer(request, page, media, {"NGSILD-Results-Count": str(len(matches))} if count else None)


@router.get(f"{BASE}/entities/{{entityId}}", operation_id="ngsild_retrieve_entity", summary="NGSI-LD: one entity",
            response_class=JSONResponse, responses={**_ok(ENTITY_SCHEMA), **ERRORS, **NOT_FOUND})
def retrieve_entity(
    request: Request, pack: PackDep, rm: ReadModelDep,
    entityId: Annotated[str, Path(description="urn:ngsi-ld:<Type>:<twin id>", json_schema_extra={"pattern": URI_PATTERN})],
    attrs: Annotated[str | None, Query(json_schema_extra={"pattern": NAMES_PATTERN})] = None,
    options: Annotated[str | None, Query(json_schema_extra={"pattern": OPTIONS_PATTERN})] = None,
) -> JSONResponse:
    media = negotiate(request)
    if not re.fullmatch(URI_PATTERN, entityId):
        raise NgsiError(400, "BadRequestData", f"entity id {entityId!r} is not a URI, e.g. "
                                               "urn:ngsi-ld:WaterObserved:kiel:_:sensor:water-level-001")
    wanted = _names(attrs, "attrs", NAMES_PATTERN)
    opts = _options(options)
    found = twin_id(entityId)
    ent = entity(pack, rm, *found) if found is not None else None
    if ent is None or found is None:
        raise NgsiError(404, "ResourceNotFound", f"no entity {entityId!r}: ids are urn:ngsi-ld:<Type>:<twin id> with a "
                                                 f"type of {', '.join(TYPES)}; query them with GET {BASE}/entities?type=...")
    return answer(request, shape(ent, wanted, opts, rm.get(found[1])), media)


GEO_PARAMS = ("georel", "geometry", "coordinates", "geoproperty")


def geo_parameter() -> dict[str, Any]:
    """The geo-query as one form-exploded object parameter (its members are the plain query parameters georel,
    geometry, coordinates and geoproperty): the only way OpenAPI can say that they come together and that the
    coordinates' shape follows the geometry."""
    none = {"not": {"anyOf": [{"required": ["georel"]}, {"required": ["geometry"]}, {"required": ["coordinates"]}]}}
    each = [{"required": ["georel", "geometry", "coordinates"],
             "properties": {"geometry": {"const": g}, "coordinates": {"type": "string", "pattern": p}}}
            for g, p in COORDINATES.items()]
    return {"name": "geoQuery", "in": "query", "style": "form", "explode": True, "required": False,
            "description": "NGSI-LD geo-query (ETSI GS CIM 009, 4.10): georel, geometry and coordinates together "
                           "(WGS84 lon,lat; near distances in metres), geoproperty defaults to location",
            "schema": {"type": "object", "additionalProperties": False,
                       "properties": {"georel": {"type": "string", "pattern": GEOREL_PATTERN},
                                      "geometry": {"type": "string", "enum": list(COORDINATES)},
                                      "coordinates": {"type": "string"},
                                      "geoproperty": {"type": "string", "pattern": rf"^{NAME}$"}},
                       "anyOf": [none, *each]}}


NAMED = ("NgsiLdEntity", "NgsiLdTemporalEntity")


def _named(node: Any, components: dict[str, Any]) -> None:
    """The NGSI-LD entity schemas as named components: schemathesis' stateful phase infers links between operations
    from resource names, and would otherwise take an NGSI-LD entity (a URN) for a twin entity of GET /entities/{id}
    (the path says 'entities' in both)."""
    if isinstance(node, dict):
        for k, v in list(node.items()):
            if isinstance(v, dict) and v.get("title") in NAMED:
                components[v["title"]] = v
                node[k] = {"$ref": f"#/components/schemas/{v['title']}"}
            else:
                _named(v, components)
    elif isinstance(node, list):
        for v in node:
            _named(v, components)


def install(app: FastAPI) -> None:
    """The NGSI-LD routes, their ProblemDetails errors, and the geo-query parameter in the OpenAPI document."""
    app.include_router(router)
    app.include_router(temporal.router)
    app.include_router(subscriptions.router)
    subscriptions.attach(app)
    install_handlers(app)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()
        op = doc["paths"][f"{BASE}/entities"]["get"]
        op["parameters"] = [p for p in op["parameters"] if p["name"] not in GEO_PARAMS] + [geo_parameter()]
        for p in op["parameters"]:
            if p["name"] == "limit":
                p["schema"]["maximum"] = app.state.settings.max_page_size
        temporal.document(doc)
        for path, item in doc["paths"].items():
            if path.startswith("/ngsi-ld/"):
                _named(item, doc["components"]["schemas"])
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
