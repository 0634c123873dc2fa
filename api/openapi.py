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
    ("GET", "/scenarios/{sid}"): {404: "no such scenario (yet)"},
    ("POST", "/scenarios/{sid}/share"): {404: "no such scenario (yet)"},
    ("DELETE", "/scenarios/{sid}"): {404: "no such scenario (yet)", 409: "the run has ended already"},
    **{("GET", f"/scenarios/{{sid}}/{tail}"): RESULTS
       for tail in ("summary", "assets", "flooded", "depth/{step}.tif", "rasters/{name}.tif", "compare/{other}",
                    "traffic/links", "traffic/zones")},
    ("POST", "/scenarios/traffic"): {404: "closures_from_flood names no such scenario (yet)",
                                     409: "the storm-surge run of closures_from_flood has not completed (yet)",
                                     410: "the results of closures_from_flood expired"},
    ("POST", "/auth/users"): {409: "a user of that name exists"},
    ("DELETE", "/auth/users/{name}"): {404: "no such user", 409: "you cannot delete yourself"},
    ("DELETE", "/auth/keys/{key_id}"): {404: "no such key"},
}


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
