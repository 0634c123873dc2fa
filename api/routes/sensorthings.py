"""OGC SensorThings API 1.1 (OGC 18-088), read side, at ``/sta/v1.1``: the service root document, every entity set,
an entity by id (``Things('kiel:_:sensor:gauge-holtenau')``; ids are strings, so quoted), and its navigation
(``Things(<id>)/Datastreams``, ``Datastreams(<id>)/Observations``, ...), with the query options of
``api.sensorthings.odata``. What each role sees: ``api.sensorthings.model`` (the public: aggregates only).
Errors: 400 (a query option that breaks the grammar, naming it and its value) and 404 (no such entity)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from api.auth.access import allowed, identify
from api.privacy import public_summary
from api.routes.history import history_engine
from api.sensorthings import model
from api.sensorthings.model import NAVIGATION, SETS, SINGULAR, Ent, Graph
from api.sensorthings.observations import Observations
from api.sensorthings.odata import (
    FILTER_PATTERN,
    ORDER_PATTERN,
    SELECT_PATTERN,
    ODataError,
    Options,
    expand_pattern,
    options,
)
from api.sensorthings.views import View, unkey

BASE = "/sta/v1.1"
DEFAULT_TOP = 100
ID_PATTERN = r"^(?:'(?:[A-Za-z0-9:_.@-]|'')+'|\d{1,18})$"
CONFORMANCE = ["http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
               "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
               "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data"]
ENTITY = {"type": "object", "properties": {"@iot.id": {"type": "string"}, "@iot.selfLink": {"type": "string"}},
          "title": "SensorThingsEntity"}
COLLECTION = {"type": "object", "required": ["value"],
              "properties": {"value": {"type": "array", "items": ENTITY}, "@iot.count": {"type": "integer"},
                             "@iot.nextLink": {"type": "string"}}, "title": "SensorThingsCollection"}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "a query option that breaks the grammar (the reason names the option and its value), or a "
                         "time range with too many readings to filter in one request"}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such entity (in what your role may see)"}}

router = APIRouter(tags=["sensorthings"])
Filter = Annotated[str | None, Query(alias="$filter", description="OData filter (api/sensorthings/odata.py)")]
OrderBy = Annotated[str | None, Query(alias="$orderby", description="e.g. phenomenonTime desc,id")]
Select = Annotated[str | None, Query(alias="$select")]
Expand = Annotated[str | None, Query(alias="$expand", description="e.g. Datastreams($top=1;$expand=Observations)")]
Top = Annotated[int | None, Query(alias="$top", ge=0, description="at most PLIETSCH_MAX_PAGE_SIZE (more is capped)")]
Skip = Annotated[int | None, Query(alias="$skip", ge=0)]
Count = Annotated[bool | None, Query(alias="$count")]


def _graph(request: Request) -> Graph:
    app = request.app
    if allowed(identify(request), "planner"):
        start = history_engine(request).range()["start"]
        begin = datetime.fromisoformat(start).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") \
            if start else None
        return model.sensor_graph(app.state.pack, app.state.read_model, begin)
    return model.public_graph(app.state.pack, public_summary(app.state.pack, app.state.read_model), datetime.now(UTC))


def _view(request: Request) -> View:
    graph = _graph(request)
    max_top = request.app.state.settings.max_page_size
    view = View(graph, str(request.base_url).rstrip("/") + BASE, min(DEFAULT_TOP, max_top), max_top)
    view.obs = Observations(graph, request.app.state.read_model, history_engine(request), view.resolve)
    return view


def _cap(o: Options, most: int) -> Options:
    if o.top is not None:
        o.top = min(o.top, most)
    for inner in o.expand.values():
        _cap(inner, most)
    return o


def _options(request: Request, most: int) -> tuple[Options, dict[str, str]]:
    raw = {k: v for k, v in request.query_params.items() if k.startswith("$")}
    try:
        return _cap(options({k: raw.get(k) for k in ("$filter", "$orderby", "$select", "$expand", "$top", "$skip",
                                                      "$count")}, model.ALL_NAVIGATIONS), most), raw
    except ODataError as exc:
        raise HTTPException(400, str(exc)) from None


EXPAND_PATTERN = expand_pattern(model.ALL_NAVIGATIONS)
EXPAND = re.compile(EXPAND_PATTERN)


def _check_expand(set_name: str, request: Request) -> None:
    """$expand as the document states it (api.sensorthings.odata.expand_pattern)."""
    raw = request.query_params.get("$expand")
    if raw is None or EXPAND.fullmatch(raw):
        return
    raise HTTPException(400, f"$expand {raw!r} is not one this service reads: navigation paths (for a "
                             f"{SINGULAR[set_name]}: {', '.join(NAVIGATION[set_name])}, and paths like "
                             "Datastreams/Observations), comma-separated, each with options in parentheses separated "
                             "by ';' ($filter of one comparison, $orderby, $select, $top, $skip, $count, $expand of "
                             "navigation paths), e.g. Datastreams/Observations($orderby=phenomenonTime desc;$top=1)")


def _one(view: View, set_name: str, raw_id: str) -> Ent:
    eid = unkey(raw_id)
    e = view.entity(set_name, eid) if eid is not None else None
    if e is None:
        raise HTTPException(404, f"no {SINGULAR[set_name]} {raw_id} (ids are quoted strings, e.g. "
                                 f"{set_name}('kiel:_:sensor:gauge-holtenau')); list them with GET {BASE}/{set_name}")
    return e


SetName = Enum("SetName", {s: s for s in SETS}, type=str)  # type: ignore[misc]
NavName = Enum("NavName", {n: n for n in sorted(model.ALL_NAVIGATIONS)}, type=str)  # type: ignore[misc]


def _set(entity_set: Any) -> str:
    return str(entity_set.value)


def _answer(request: Request, view: View, set_name: str, ent: Ent | None, nav: str | None) -> JSONResponse:
    """A collection (of a set, or of an entity's plural navigation) or one entity, with the request's options."""
    o, raw = _options(request, view.max_top)
    try:
        if ent is None:
            if set_name == "Observations" and view.obs is not None:
                total, page = view.obs.query(list(view.graph.streams), o, view.page)
            else:
                total, page = view.collection(list(view.graph.sets[set_name].values()), o)
            return JSONResponse(view.answer(total, page, o, f"{view.base}/{set_name}", raw))
        if nav is None:
            return JSONResponse(view.render(ent, o))
        got = view.related(ent, nav, o)
        if isinstance(got, tuple):
            return JSONResponse(view.answer(*got, o, f"{view.self_link(ent)}/{nav}", raw))
    except ODataError as exc:
        raise HTTPException(400, str(exc)) from None
    if got is None:
        raise HTTPException(404, f"{SINGULAR[set_name]} {ent.id!r} has no {nav}")
    return JSONResponse(view.render(got, o))


@router.get(f"{BASE}/{{entitySet}}({{id}})/{{navigation}}", operation_id="sta_navigation", response_class=JSONResponse,
            summary="SensorThings: what an entity's navigation property leads to (a collection or one entity)",
            responses={**{200: {"content": {"application/json": {"schema": {"anyOf": [COLLECTION, ENTITY]}}}}}, **ERRORS,
                       404: {"description": "no such entity, or no such navigation property of its type "
                                            "(Things(<id>)/Datastreams, Datastreams(<id>)/Observations, ...)"}})
def navigation_route(request: Request, entitySet: SetName, id: str, navigation: NavName,  # type: ignore[valid-type]
                     filter_: Filter = None, orderby: OrderBy = None, select: Select = None, expand: Expand = None,
                     top: Top = None, skip: Skip = None, count: Count = None) -> JSONResponse:
    set_name, nav = _set(entitySet), str(navigation.value)  # type: ignore[attr-defined]
    if nav not in NAVIGATION[set_name]:
        raise HTTPException(404, f"a {SINGULAR[set_name]} has no navigation property {nav!r}; it has "
                                 f"{', '.join(NAVIGATION[set_name])}")
    view = _view(request)
    _check_expand(NAVIGATION[set_name][nav], request)
    return _answer(request, view, set_name, _one(view, set_name, id), nav)


@router.get(f"{BASE}/{{entitySet}}({{id}})", operation_id="sta_entity", response_class=JSONResponse,
            summary="SensorThings: one entity by id (a quoted string: Things('kiel:_:sensor:gauge-holtenau'))",
            responses={**{200: {"content": {"application/json": {"schema": ENTITY}}}}, **ERRORS, **NOT_FOUND})
def entity_route(request: Request, entitySet: SetName, id: str,  # type: ignore[valid-type]
                 select: Select = None, expand: Expand = None) -> JSONResponse:
    set_name = _set(entitySet)
    view = _view(request)
    _check_expand(set_name, request)
    return _answer(request, view, set_name, _one(view, set_name, id), None)


@router.get(f"{BASE}/{{entitySet}}", operation_id="sta_collection", response_class=JSONResponse,
            summary="SensorThings: an entity set (Things, Locations, HistoricalLocations, Datastreams, Sensors, "
                    "ObservedProperties, Observations, FeaturesOfInterest)",
            responses={**{200: {"content": {"application/json": {"schema": COLLECTION}}}}, **ERRORS})
def collection_route(request: Request, entitySet: SetName,  # type: ignore[valid-type]
                     filter_: Filter = None, orderby: OrderBy = None, select: Select = None, expand: Expand = None,
                     top: Top = None, skip: Skip = None, count: Count = None) -> JSONResponse:
    set_name = _set(entitySet)
    view = _view(request)
    _check_expand(set_name, request)
    return _answer(request, view, set_name, None, None)


@router.get(BASE, operation_id="sta_root", summary="SensorThings: the service root (entity sets, conformance)",
            response_class=JSONResponse,
            responses={200: {"content": {"application/json": {"schema": {
                "type": "object", "required": ["value", "serverSettings"],
                "properties": {"value": {"type": "array"}, "serverSettings": {"type": "object"}}}}}}})
def root(request: Request) -> JSONResponse:
    base = str(request.base_url).rstrip("/") + BASE
    return JSONResponse({"value": [{"name": s, "url": f"{base}/{s}"} for s in SETS],
                         "serverSettings": {"conformance": CONFORMANCE}})


def document(doc: dict[str, Any]) -> None:
    """The query options and the id as the routes check them (patterns) in the OpenAPI document."""
    patterns = {"$filter": FILTER_PATTERN, "$orderby": ORDER_PATTERN, "$select": SELECT_PATTERN,
                "$expand": EXPAND_PATTERN, "id": ID_PATTERN}
    for path, item in doc["paths"].items():
        if not path.startswith(BASE + "/"):
            continue
        for p in item["get"].get("parameters", []):
            if p["name"] in patterns:
                s = {"type": "string", "pattern": patterns[p["name"]]}
                p["schema"] = s if p.get("required") else {"anyOf": [s, {"type": "null"}]}


def install(app: FastAPI) -> None:
    app.include_router(router)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()
        document(doc)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
