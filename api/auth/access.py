"""Who may call what: one declarative table (method, route) -> role, enforced for every route by an app-wide
dependency, and checked for completeness when the app is made (a route without a rule stops the API from starting).

Roles are ordered: public (no login) < planner < operator; a role gets everything the roles below it get."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from api.auth.oidc import IssuerUnavailable, OidcVerifier, TokenError
from api.auth.store import KEY_PREFIX, AuthStore, Identity
from api.sensorthings.model import paths as sta_paths

LEVEL = {"public": 0, "planner": 1, "operator": 2}
SESSION_COOKIE = "plietsch_session"
PUBLIC = Identity("anonymous", "public")

# (method, route path) -> the least role that may call it. Push channels (SSE) are routes like any other.
RULES: dict[tuple[str, str], str] = {
    # public: the kiosk, /public/*, the public live feed, the login itself and the page shells (they hold no data)
    ("GET", "/"): "public",
    ("GET", "/kiosk"): "public",
    ("GET", "/public/summary"): "public",
    ("GET", "/stops/{stop_id}/departures"): "public",  # a bus stop's departure board (api/routes/transit.py)
    ("GET", "/stops"): "public",  # the region's bus stops of the GTFS schedule (api/routes/transit.py)
    ("GET", "/public/stream"): "public",
    ("GET", "/health"): "public",  # status and reason only; the read model's details for operators
    ("POST", "/auth/login"): "public",
    ("POST", "/auth/logout"): "public",
    ("GET", "/auth/me"): "public",
    ("GET", "/auth/config"): "public",
    ("GET", "/openapi.json"): "public",
    ("GET", "/docs"): "public",
    ("GET", "/docs/oauth2-redirect"): "public",
    ("GET", "/redoc"): "public",
    ("GET", "/cesium/{path:path}"): "public",  # only when CesiumJS is missing: says how to install it
    # planner: the twin, history, time travel, scenarios, exports
    ("GET", "/regions"): "planner",
    ("GET", "/regions/{region_id}/surface"): "planner",
    ("GET", "/regions/{region_id}/districts"): "planner",
    ("GET", "/entities"): "planner",
    ("GET", "/entities/{entity_id}"): "planner",
    ("GET", "/coast"): "planner",
    ("GET", "/alerts"): "planner",
    ("GET", "/aggregates"): "planner",
    ("GET", "/stream"): "planner",
    ("GET", "/scene"): "planner",
    ("GET", "/history/entities/{entity_id}"): "planner",
    ("GET", "/history/area"): "planner",
    ("GET", "/history/range"): "planner",
    ("GET", "/history/state"): "planner",
    ("POST", "/scenarios"): "planner",
    ("GET", "/scenarios"): "planner",
    ("GET", "/scenarios/{sid}"): "planner",
    ("DELETE", "/scenarios/{sid}"): "planner",  # and only by its owner or an operator
    ("POST", "/scenarios/{sid}/share"): "planner",  # owner or operator
    ("GET", "/scenarios/{sid}/summary"): "planner",
    ("GET", "/scenarios/{sid}/assets"): "planner",
    ("GET", "/scenarios/{sid}/flooded"): "planner",
    ("GET", "/scenarios/{sid}/depth/{step}.tif"): "planner",
    ("GET", "/scenarios/{sid}/rasters/{name}.tif"): "planner",
    ("GET", "/scenarios/{sid}/compare/{other}"): "planner",
    ("POST", "/scenarios/traffic"): "planner",
    ("GET", "/scenarios/{sid}/traffic/links"): "planner",
    ("GET", "/scenarios/{sid}/traffic/zones"): "planner",
    ("GET", "/traffic/network"): "planner",
    # operator: users and keys, the audit log, the processors' state
    ("GET", "/audit"): "operator",
    ("GET", "/metrics"): "operator",
    ("GET", "/auth/users"): "operator",
    ("POST", "/auth/users"): "operator",
    ("DELETE", "/auth/users/{name}"): "operator",
    ("GET", "/auth/keys"): "operator",
    ("POST", "/auth/keys"): "operator",
    ("DELETE", "/auth/keys/{key_id}"): "operator",
    # the public's feedback (issue 12): submit and look up a receipt without an account, published feedback and counts
    # for everyone, approved feedback with filters and export for planners, the queue and decisions for operators
    ("POST", "/feedback"): "public",
    ("GET", "/feedback/receipt/{code}"): "public",
    ("GET", "/public/feedback"): "public",
    ("GET", "/public/feedback/counts"): "public",
    ("GET", "/public/qr.svg"): "public",
    ("GET", "/public/kiosk"): "public",
    ("GET", "/feedback"): "planner",
    ("GET", "/feedback/queue"): "operator",
    ("POST", "/feedback/{code}/moderation"): "operator",
    # NGSI-LD (api/routes/ngsild.py): the @context for everyone; entities and their history are sensor-level, so
    # planners (issue 11 item 3)
    ("GET", "/ngsi-ld/v1/jsonldContexts/plietsch.jsonld"): "public",
    ("GET", "/ngsi-ld/v1/entities"): "planner",
    ("GET", "/ngsi-ld/v1/entities/{entityId}"): "planner",
    ("GET", "/ngsi-ld/v1/temporal/entities"): "planner",
    ("GET", "/ngsi-ld/v1/temporal/entities/{entityId}"): "planner",
    # subscriptions make the API call out to a URL of the subscriber's choosing: operators
    ("POST", "/ngsi-ld/v1/subscriptions"): "operator",
    ("GET", "/ngsi-ld/v1/subscriptions"): "operator",
    ("GET", "/ngsi-ld/v1/subscriptions/{subscriptionId}"): "operator",
    ("DELETE", "/ngsi-ld/v1/subscriptions/{subscriptionId}"): "operator",
    # the open data hub (api/routes/opendata.py): open to everyone; each dataset has its own least role, checked by the
    # route (the public's catalogue lists only public datasets, a non-public download answers 403)
    ("GET", "/opendata/catalog"): "public",
    ("GET", "/opendata/datasets/{dataset_id}"): "public",
    ("GET", "/opendata/datasets/{dataset_id}/distributions/{fmt}"): "public",
}
# OGC SensorThings API (api/routes/sensorthings.py): open to everyone, and what a caller sees depends on the role: the
# public gets the public aggregates of api/privacy.py only, planners and operators the sensors and their history
# (api/sensorthings/model.py). Every route under /sta/v1.1 is public.
RULES.update({("GET", path): "public" for path in sta_paths("/sta/v1.1")})
# Static files (mounted apps, outside the OpenAPI document): pages' code and styles, the CesiumJS library. No data.
MOUNTS: dict[str, str] = {"/static": "public", "/cesium": "public"}


def rule(method: str, path: str) -> str | None:
    return RULES.get(("GET" if method == "HEAD" else method, path))


def identify(request: Request) -> Identity:
    """The caller: an API key or an OIDC token in ``Authorization: Bearer``, else the session cookie, else public.
    Credentials that are given but wrong are refused (401), never treated as public."""
    cached: Identity | None = getattr(request.state, "identity", None)
    if cached is not None:
        return cached
    store: AuthStore = request.app.state.auth_store
    who: Identity | None = PUBLIC
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("the Authorization header must be 'Bearer <API key or OIDC token>'")
        if token.startswith(KEY_PREFIX) or token.count(".") != 2:
            who = store.check_key(token)
            if who is None:
                raise _unauthorized("the API key is unknown or was deleted; an operator creates keys with POST /auth/keys")
        else:
            verifier: OidcVerifier | None = request.app.state.oidc
            if verifier is None:
                raise _unauthorized("this API has no OIDC issuer configured (PLIETSCH_OIDC_ISSUER); use an API key or log in")
            try:
                who = verifier.verify(token)
            except IssuerUnavailable as exc:
                raise HTTPException(503, f"{exc}; the login cannot be checked now, try again") from None
            except TokenError as exc:
                raise _unauthorized(str(exc)) from None
    elif (sid := request.cookies.get(SESSION_COOKIE)) is not None:
        who = store.check_session(sid) or PUBLIC  # an expired session is simply no login (the page shows the form)
    request.state.identity = who
    return who  # type: ignore[return-value]


def _unauthorized(why: str) -> HTTPException:
    return HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"})


def allowed(who: Identity, need: str) -> bool:
    return LEVEL[who.role] >= LEVEL[need]


async def enforce(request: Request) -> None:
    """The app-wide dependency: looks the matched route up in RULES and refuses callers below its role."""
    route: Any = request.scope.get("route")
    need = rule(request.method, getattr(route, "path", ""))
    if need is None:  # create_app refuses to start with such a route; this is the second lock
        raise HTTPException(403, f"no access rule for {request.method} {getattr(route, 'path', '?')}; refused")
    who = identify(request)
    if need == "public" and who.role == "public":  # callers without a login share a rate limit per address
        request.app.state.public_rate.check(request.client.host if request.client else "?")
    if not allowed(who, need):
        if who.role == "public":
            raise _unauthorized(f"{request.method} {route.path} needs a login as {need}; log in at / or send an API key")
        raise HTTPException(403, f"{request.method} {route.path} needs the role {need}; you ({who.subject}) are {who.role}")


def all_routes(routes: list[Any]) -> list[Any]:
    """The routes of an app, with those of included routers (FastAPI >= 0.16x keeps an included router as one
    entry that holds its own routes)."""
    out: list[Any] = []
    for r in routes:
        inner = getattr(r, "original_router", None)
        out += all_routes(list(inner.routes)) if inner is not None else [r]
    return out


def check_coverage(app: FastAPI) -> None:
    """Every route has a rule; routes the dependency cannot guard (docs, mounts) must be public."""
    missing, unguarded = [], []
    for r in all_routes(app.routes):
        if isinstance(r, APIRoute):
            missing += [f"{m} {r.path}" for m in sorted(r.methods or ()) if rule(m, r.path) is None]
        elif isinstance(r, Mount):
            if MOUNTS.get(r.path) != "public":
                unguarded.append(f"mount {r.path}")
        elif isinstance(r, Route):
            for m in sorted(r.methods or ()):
                if rule(m, r.path) != "public":
                    unguarded.append(f"{m} {r.path}")
    if missing or unguarded:
        raise RuntimeError("routes without an access rule in api/auth/access.py RULES: "
                           f"{', '.join(missing) or '-'}; non-API routes that are not public: {', '.join(unguarded) or '-'}")


def stream_caller(request: Request) -> str:
    """Whose live stream this is, for the caps: the login, or the address of a caller without one."""
    who = identify(request)
    return who.subject if who.role != "public" else f"public:{request.client.host if request.client else '?'}"
