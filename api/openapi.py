"""Every error a route can answer is in the OpenAPI document (issue 11 item 8): the codes that come from the app-wide
rules (login, role, limits, validation, an unreachable broker or issuer) are added to each route here, from the same
table that enforces them (api/auth/access.py RULES); codes a route gives itself (404, 409, 410, ...) are declared on
the route. tests/api/test_fuzz.py holds the document to what the API answers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from api.auth.access import all_routes, rule


class Problem(BaseModel):
    """What went wrong: a sentence that names the value and what to do, or (422 from validation) the list of errors."""

    detail: str | list[dict[str, Any]] = Field(description="the reason, or the validation errors")


PROBLEM = Problem.model_json_schema()
WHY = {
    400: "a body that is not JSON at all",
    401: "no login, or credentials that are wrong, expired or deleted",
    403: "a login whose role is below what the route needs (or the run is another planner's)",
    413: "a request body above PLIETSCH_MAX_BODY_BYTES",
    422: "a parameter or body that breaks the rules (the reason names it)",
    429: "too many requests a second without a login (PLIETSCH_PUBLIC_RATE)",
    503: "Kafka or the OIDC issuer cannot be reached now; try again",
}
RESULTS = {404: "no such scenario (or result file)", 409: "the run has not completed (yet)",
           410: "the results expired (PLIETSCH_SCENARIO_RESULT_TTL_H) or went for disk space (PLIETSCH_SCENARIO_DISK_MB)"}
# What routes answer themselves, beyond the app-wide codes.
OWN: dict[tuple[str, str], dict[int, str]] = {
    ("GET", "/regions/{region_id}/surface"): {404: "no such region"},
    ("GET", "/regions/{region_id}/districts"): {404: "no such region"},
    ("GET", "/entities"): {404: "no such neighbourhood in the region"},
    ("GET", "/entities/{entity_id}"): {404: "no such entity"},
    ("GET", "/history/entities/{entity_id}"): {404: "no such entity in the region"},
    ("GET", "/history/state"): {404: "no archive yet (the archive sink writes it)"},
    ("GET", "/scenarios/{sid}"): {404: "no such scenario (yet)"},
    ("POST", "/scenarios/{sid}/share"): {404: "no such scenario (yet)"},
    ("DELETE", "/scenarios/{sid}"): {404: "no such scenario (yet)", 409: "the run has ended already"},
    **{("GET", f"/scenarios/{{sid}}/{tail}"): RESULTS
       for tail in ("summary", "assets", "flooded", "depth/{step}.tif", "rasters/{name}.tif", "compare/{other}",
                    "traffic/links", "traffic/zones")},
    ("POST", "/scenarios"): {404: "a breach or raised crest names no coast segment of the region"},
    ("POST", "/scenarios/traffic"): {404: "closures_from_flood names no such scenario (yet)",
                                     409: "the storm-surge run of closures_from_flood has not completed (yet), or "
                                          "live_counts is asked for and the twin has no traffic count yet",
                                     410: "the results of closures_from_flood expired"},
    ("POST", "/auth/users"): {409: "a user of that name exists"},
    ("DELETE", "/auth/users/{name}"): {404: "no such user", 409: "you cannot delete yourself"},
    ("DELETE", "/auth/keys/{key_id}"): {404: "no such key"},
}


def allow_all_methods(app: FastAPI) -> None:
    """A 405 names in ``Allow`` every method the path has (Starlette names only those of the first route matching it,
    so OPTIONS /scenarios/{sid} would omit DELETE)."""
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request
    from starlette.responses import Response

    default = app.exception_handlers[StarletteHTTPException]

    async def handler(request: Request, exc: Exception) -> Response:
        response = await default(request, exc)  # type: ignore[misc]
        if getattr(exc, "status_code", None) == 405:
            methods = {m for r in app.routes if isinstance(r, APIRoute) and r.path_regex.match(request.url.path)
                       for m in r.methods or ()}
            response.headers["Allow"] = ", ".join(sorted(methods))
        return response  # type: ignore[no-any-return]

    app.add_exception_handler(StarletteHTTPException, handler)


def document_errors(app: FastAPI) -> None:
    """Adds the app-wide error answers to every API route; call before the document is first built."""
    for route in all_routes(app.routes):
        if not isinstance(route, APIRoute):
            continue
        methods = route.methods or set()
        needs = {rule(m, route.path) for m in methods}
        codes = {401, 503}
        if needs - {"public"}:
            codes.add(403)
        if "public" in needs:
            codes.add(429)
        if route.dependant.query_params or route.dependant.path_params or route.body_field is not None:
            codes.add(422)
        if methods & {"POST", "PUT", "PATCH"}:
            codes.add(413)
        if route.body_field is not None:
            codes.add(400)
        for code in sorted(codes):
            route.responses.setdefault(code, {"description": WHY[code]})
        for m in methods:
            for code, why in OWN.get((m, route.path), {}).items():
                route.responses.setdefault(code, {"description": why})
        for key, doc in route.responses.items():
            if int(key) >= 400 and "model" not in doc and "content" not in doc:  # inline: routes made before this call
                doc["content"] = {"application/json": {"schema": PROBLEM}}  # have fixed their response models


def _param(doc: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    for p in doc["paths"][path][method]["parameters"]:
        if p["name"] == name:
            return p["schema"]  # type: ignore[no-any-return]
    raise KeyError(f"{method.upper()} {path} has no parameter {name!r}")


def _feedback(app: FastAPI, schema: dict[str, Any]) -> None:
    """POST /feedback as api/routes/feedback.py checks it: a rating has 1-5 stars, an idea or a problem a few words and no
    stars; a pin has both coordinates, inside the region; the text at most PLIETSCH_FEEDBACK_MAX_TEXT characters."""
    from api.feedback import FeedbackSettings
    from api.routes.feedback import WORDS_PATTERN

    props = schema["properties"]
    props["text"]["maxLength"] = (getattr(app.state, "feedback_settings", None) or FeedbackSettings()).max_text
    w, s, e, n = app.state.pack.manifest.bbox
    for name, low, high in (("lon", w, e), ("lat", s, n)):
        props[name] = {**props[name], "anyOf": [{"type": "number", "minimum": low, "maximum": high}, {"type": "null"}]}
    schema["allOf"] = [
        {"oneOf": [{"properties": {"kind": {"const": "rating"}, "rating": {"type": "integer", "minimum": 1, "maximum": 5}},
                    "required": ["kind", "rating"]},
                   {"properties": {"kind": {"enum": ["idea", "problem"]}, "rating": {"type": "null"},
                                   "text": {"type": "string", "pattern": WORDS_PATTERN}},
                    "required": ["kind", "text"]}]},
        {"anyOf": [{"properties": {"lon": {"type": "number"}, "lat": {"type": "number"}}, "required": ["lon", "lat"]},
                   {"properties": {"lon": {"type": "null"}, "lat": {"type": "null"}}}]}]


def document_contract(app: FastAPI, max_page_size: int) -> None:
    """Rules that depend on this app's settings or on a model the API does not own, written into the document so that
    it promises exactly what the routes accept: the page-size maximum of GET /entities and GET /stops (PLIETSCH_MAX_PAGE_SIZE), and
    for a storm-surge request (api/routes/scenarios.py SurgeRequest) one of 'preset' (a preset of the app's region pack) or 'curve' (2 or
    more points), as its validator checks; for a traffic request 'road_works_applied' stays empty (the API sets it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()
        for path in ("/entities", "/stops"):
            _param(doc, path, "get", "limit")["maximum"] = max_page_size
        schemas = doc["components"]["schemas"]
        surge = schemas["SurgeRequest"]["properties"]
        preset, curve = surge["preset"], surge["curve"]
        presets = sorted(app.state.pack.manifest.surge_presets)  # the region pack's (its region.json)
        preset["anyOf"] = [{"type": "string", "enum": presets}, {"type": "null"}] if presets else [{"type": "null"}]
        for alt in curve["anyOf"]:
            if alt.get("type") == "array":
                alt["minItems"] = 2
        schemas["SurgeRequest"]["oneOf"] = [  # exactly one of them given and not null, as its validator checks
            {"required": ["preset"], "properties": {"preset": {"type": "string"}, "curve": {"type": "null"}}},
            {"required": ["curve"], "properties": {"curve": {"type": "array"}, "preset": {"type": "null"}}}]
        traffic = schemas["TrafficRequest"]["properties"]
        traffic["road_works_applied"] = {**traffic["road_works_applied"], "maxItems": 0,
                                         "description": "set by the API (ask for live_road_works); must stay empty"}
        _feedback(app, schemas["FeedbackIn"])
        # where a new feedback can be read and decided (schemathesis' stateful checks follow these links)
        code = {"code": "$response.body#/code"}
        doc["paths"]["/feedback"]["post"]["responses"]["201"]["links"] = {
            "receipt": {"operationId": "feedback_receipt", "parameters": code,
                        "description": "what became of it (pending until an operator decides)"},
            "moderate": {"operationId": "moderate_feedback", "parameters": code,
                         "description": "approve or reject it (operators)"}}
        doc["paths"]["/auth/keys"]["post"]["responses"]["201"]["links"] = {
            "delete": {"operationId": "delete_key", "parameters": {"key_id": "$response.body#/id"}}}
        doc["paths"]["/auth/users"]["post"]["responses"]["201"]["links"] = {
            "delete": {"operationId": "delete_user", "parameters": {"name": "$response.body#/name"}}}
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
