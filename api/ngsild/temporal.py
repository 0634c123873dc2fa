"""The NGSI-LD temporal API (ETSI GS CIM 009, 5.7.3-5.7.4 and 4.5.7-4.5.9), answered from history: the archive's
readings through the history engine (``streams.history.engine``: DuckDB over the archive's Parquet files, pruned by
time range and entity ids; no file is opened here). Each archived reading of a sensor becomes one instance of each
attribute it sets, with the same mapping as the live entity (``api.ngsild.entities.reading_attributes``).

``timerel`` before / after / between with ``timeAt`` and ``endTimeAt`` (``before`` and ``between``'s end exclusive, as
the standard says), ``lastN`` (the newest N instances per entity, each attribute), ``options=temporalValues`` (the
simplified representation ``"values": [[value, observedAt], ...]``). At most ``MAX_INSTANCES`` readings per entity and
request, the oldest first unless lastN: narrow the time range or use lastN for more. Coast segments have no temporal
representation: their state is derived from their gauge, whose readings are the archive's (query the gauge's
WaterObserved)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from api.deps import PackDep
from api.filters import DATE_TIME, parse_time
from api.ngsild.entities import COAST_TYPE, SENSOR_TYPES, TYPES, candidates, reading_attributes, twin_id, urn
from api.ngsild.problems import PROBLEM_SCHEMA, NgsiError
from api.ngsild.web import ERRORS, ID_LIST_PATTERN, ID_REGEX_PATTERN, NAMES_PATTERN, URI_PATTERN, _names, _ok, answer, negotiate
from api.routes.history import history_engine
from twin.sensors import reading_values

router = APIRouter(tags=["ngsi-ld"])
BASE = "/ngsi-ld/v1/temporal/entities"
MAX_INSTANCES = 1000
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
TEMPORAL_OPTIONS = ("temporalValues", "normalized")
OPTIONS_PATTERN = rf"^(?:{'|'.join(TEMPORAL_OPTIONS)})(?:,(?:{'|'.join(TEMPORAL_OPTIONS)}))*$"
TIME_PARAMS = ("timerel", "timeAt", "endTimeAt")
INSTANCE = {"type": "object", "required": ["type"],
            "properties": {"type": {"type": "string"}, "observedAt": {"type": "string"}, "instanceId": {"type": "string"}}}
TEMPORAL_ENTITY: dict[str, Any] = {
    "type": "object", "required": ["id", "type"],
    "properties": {"id": {"type": "string"}, "type": {"type": "string"}, "@context": {}},
    "additionalProperties": {"anyOf": [{"type": "array", "items": INSTANCE},
                                       {"type": "object", "required": ["type", "values"],
                                        "properties": {"type": {"type": "string"}, "values": {"type": "array"}}}]},
    "description": "an entity's temporal representation (or, with options=temporalValues, the simplified one)",
    "title": "NgsiLdTemporalEntity"}


def window(timerel: str | None, time_at: str | None, end_at: str | None) -> tuple[datetime, datetime]:
    """The closed interval the history engine is asked for (engine bounds are inclusive)."""
    given = {k: v for k, v in (("timerel", timerel), ("timeAt", time_at), ("endTimeAt", end_at)) if v is not None}
    if not given:
        return EARLIEST, LATEST
    if timerel is None or time_at is None:
        raise NgsiError(400, "BadRequestData", "a temporal query needs timerel and timeAt together (and endTimeAt with "
                                               f"timerel=between); given: {given}")
    try:
        t = parse_time("timeAt", time_at)
        end = parse_time("endTimeAt", end_at) if end_at is not None else None
    except Exception as exc:  # parse_time answers with an HTTPException whose detail says what is wrong
        raise NgsiError(400, "BadRequestData", str(getattr(exc, "detail", exc))) from None
    tick = timedelta(microseconds=1)
    if timerel == "before":
        if end is not None:
            raise NgsiError(400, "BadRequestData", f"endTimeAt {end_at!r} is only for timerel=between")
        return EARLIEST, t - tick
    if timerel == "after":
        if end is not None:
            raise NgsiError(400, "BadRequestData", f"endTimeAt {end_at!r} is only for timerel=between")
        return t + tick, LATEST
    if timerel == "between":
        if end is None:
            raise NgsiError(400, "BadRequestData", "timerel=between needs endTimeAt (the end, exclusive)")
        return t, end - tick
    raise NgsiError(400, "BadRequestData", f"timerel {timerel!r} is not one of before, after, between")


def _instances(request: Request, tid: str, t0: datetime, t1: datetime, last_n: int | None) -> list[Any]:
    engine = history_engine(request)
    cap = min(last_n or MAX_INSTANCES, MAX_INSTANCES)
    if last_n is None:
        return engine.events(t0, t1, [tid], cap, 0).events
    total = engine.events(t0, t1, [tid], 1, 2**62).total  # a count only: the offset is past the end
    return engine.events(t0, t1, [tid], cap, max(total - cap, 0)).events


def temporal_entity(request: Request, ngsi_type: str, e: Any, t0: datetime, t1: datetime, last_n: int | None,
                    attrs: list[str] | None, simplified: bool) -> dict[str, Any]:
    kind = ngsi_type_kind(ngsi_type)
    series: dict[str, list[dict[str, Any]]] = {}
    for a in _instances(request, str(e.id), t0, t1, last_n):
        ev = a.event
        for name, inst in reading_attributes(kind, reading_values(ev), ev.occurred_at).items():
            if attrs is None or name in attrs:
                series.setdefault(name, []).append({**inst, "instanceId": f"urn:ngsi-ld:instance:{ev.event_id}"})
    out: dict[str, Any] = {"id": urn(ngsi_type, e.id), "type": ngsi_type}
    for name, insts in sorted(series.items()):
        out[name] = ({"type": "Property", "values": [[i["value"], i["observedAt"]] for i in insts]} if simplified
                     else insts)
    return out


def ngsi_type_kind(ngsi_type: str) -> str:
    return next(k for k, (t, _) in SENSOR_TYPES.items() if t == ngsi_type)


def _common(timerel: str | None, time_at: str | None, end_at: str | None, attrs: str | None,
            options: str | None) -> tuple[datetime, datetime, list[str] | None, bool]:
    t0, t1 = window(timerel, time_at, end_at)
    if options is not None and not re.fullmatch(OPTIONS_PATTERN, options):
        raise NgsiError(400, "BadRequestData", f"options {options!r}: the temporal API supports "
                                               f"{', '.join(TEMPORAL_OPTIONS)} (comma-separated)")
    return t0, t1, _names(attrs, "attrs", NAMES_PATTERN), options is not None and "temporalValues" in options


TimeRel = Annotated[str | None, Query()]
TimeAt = Annotated[str | None, Query(json_schema_extra=DATE_TIME)]
LastN = Annotated[int | None, Query(ge=1, le=MAX_INSTANCES, description="the newest N instances")]


def _responses(many: bool) -> dict[int | str, dict[str, Any]]:
    return {**_ok({"type": "array", "items": TEMPORAL_ENTITY} if many else TEMPORAL_ENTITY), **ERRORS}


@router.get(f"{BASE}/{{entityId}}", operation_id="ngsild_temporal_entity",
            summary="NGSI-LD temporal: the history of one entity", response_class=JSONResponse,
            responses={**_responses(False), 404: {"description": "ResourceNotFound: no such entity (or a coast segment)",
                                                      "content": {"application/json": {"schema": PROBLEM_SCHEMA}}}})
def temporal_one(request: Request, pack: PackDep, entityId: Annotated[str, Path()],
                 timerel: TimeRel = None, timeAt: TimeAt = None, endTimeAt: TimeAt = None, lastN: LastN = None,
                 attrs: Annotated[str | None, Query()] = None, options: Annotated[str | None, Query()] = None) -> JSONResponse:
    media = negotiate(request)
    if not re.fullmatch(URI_PATTERN, entityId):
        raise NgsiError(400, "BadRequestData", f"entity id {entityId!r} is not a URI, e.g. "
                                               "urn:ngsi-ld:WaterObserved:kiel:_:sensor:water-level-001")
    t0, t1, wanted, simplified = _common(timerel, timeAt, endTimeAt, attrs, options)
    found = twin_id(entityId)
    if found is not None and found[0] == COAST_TYPE and found[1] in pack.coast:
        gauge = pack.coast[found[1]].gauge
        raise NgsiError(404, "ResourceNotFound", f"{entityId!r} has no temporal representation: a coast segment's "
                                                 "state is derived from its gauge" + (
                                                     f"; ask for urn:ngsi-ld:WaterObserved:{gauge}" if gauge else ""))
    s = pack.sensors.get(found[1]) if found is not None else None
    if found is None or s is None or SENSOR_TYPES.get(s.sensor_kind, ("",))[0] != found[0]:
        raise NgsiError(404, "ResourceNotFound", f"no entity {entityId!r} with a history; types: "
                                                 f"{', '.join(t for t in TYPES if t != COAST_TYPE)}")
    return answer(request, temporal_entity(request, found[0], s, t0, t1, lastN, wanted, simplified), media)


@router.get(BASE, operation_id="ngsild_temporal_query", summary="NGSI-LD temporal: the history of entities",
            response_class=JSONResponse, responses=_responses(True))
def temporal_query(request: Request, pack: PackDep,
                   type: Annotated[str | None, Query()] = None, id: Annotated[str | None, Query()] = None,
                   idPattern: Annotated[str | None, Query()] = None,
                   timerel: TimeRel = None, timeAt: TimeAt = None, endTimeAt: TimeAt = None, lastN: LastN = None,
                   attrs: Annotated[str | None, Query()] = None, options: Annotated[str | None, Query()] = None,
                   limit: Annotated[int, Query(ge=0, le=100, description="entities per page")] = 20,
                   offset: Annotated[int, Query(ge=0)] = 0) -> JSONResponse:
    media = negotiate(request)
    t0, t1, wanted, simplified = _common(timerel, timeAt, endTimeAt, attrs, options)
    types = _names(type, "type", NAMES_PATTERN)
    if id is not None and not re.fullmatch(ID_LIST_PATTERN, id):
        raise NgsiError(400, "BadRequestData", f"id {id!r} must be URIs separated by commas")
    if idPattern is not None and not re.fullmatch(ID_REGEX_PATTERN, idPattern):
        raise NgsiError(400, "BadRequestData", f"idPattern {idPattern!r} may hold letters, digits, ':', '_', '-', "
                                               "'.', '.*', '.+', a leading '^' and a trailing '$'")
    ids = set(id.split(",")) if id is not None else None
    pattern = re.compile(idPattern) if idPattern is not None else None
    sensor_types = [t for t in (types or TYPES) if t in TYPES and t != COAST_TYPE]
    chosen = [(t, e) for t, e in candidates(pack, sensor_types)
              if (ids is None or urn(t, e.id) in ids) and (pattern is None or pattern.search(urn(t, e.id)))]
    body = [temporal_entity(request, t, e, t0, t1, lastN, wanted, simplified) for t, e in chosen[offset: offset + limit]]
    if wanted is not None:
        body = [b for b in body if any(a in b for a in wanted)]
    return answer(request, body, media)


def temporal_parameter() -> dict[str, Any]:
    """timerel, timeAt and endTimeAt as one form-exploded object parameter: they come together (api/routes/ngsild.py
    geo_parameter says why)."""
    time = {"type": "string", "format": "date-time"}
    none = {"not": {"anyOf": [{"required": [k]} for k in TIME_PARAMS]}}
    return {"name": "temporalQuery", "in": "query", "style": "form", "explode": True, "required": False,
            "description": "NGSI-LD temporal query (ETSI GS CIM 009, 4.11): timerel before|after with timeAt, or "
                           "between with timeAt and endTimeAt (end exclusive); absent: the whole history",
            "schema": {"type": "object", "additionalProperties": False,
                       "properties": {"timerel": {"type": "string", "enum": ["before", "after", "between"]},
                                      "timeAt": time, "endTimeAt": time},
                       "anyOf": [none,
                                 {"required": ["timerel", "timeAt"], "not": {"required": ["endTimeAt"]},
                                  "properties": {"timerel": {"enum": ["before", "after"]}}},
                                 {"required": ["timerel", "timeAt", "endTimeAt"],
                                  "properties": {"timerel": {"const": "between"}}}]}}


def document(doc: dict[str, Any]) -> None:
    """The temporal routes' parameters as the routes check them."""
    patterns = {"type": NAMES_PATTERN, "attrs": NAMES_PATTERN, "id": ID_LIST_PATTERN, "idPattern": ID_REGEX_PATTERN,
                "entityId": URI_PATTERN, "options": OPTIONS_PATTERN}
    for path in (BASE, f"{BASE}/{{entityId}}"):
        op = doc["paths"][path]["get"]
        params = [p for p in op["parameters"] if p["name"] not in TIME_PARAMS] + [temporal_parameter()]
        for p in params:
            if p["name"] in patterns:
                p["schema"] = {"type": "string", "pattern": patterns[p["name"]]} if p.get("required") else \
                    {"anyOf": [{"type": "string", "pattern": patterns[p["name"]]}, {"type": "null"}]}
        op["parameters"] = params
