"""Login (local users, a server-side session in an HttpOnly SameSite=Strict cookie), logout, who am I, and the
operator's users and API keys."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from api.audit import outgoing, record, relay_now
from api.auth.access import SESSION_COOKIE, identify
from api.auth.store import NAME, AuthError, AuthStore

router = APIRouter(tags=["auth"])


class Login(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=64, json_schema_extra={"pattern": NAME.pattern},
                      description="1-64 characters a-z 0-9 . _ @ - (lower case), starting with a letter or digit")
    role: Literal["planner", "operator"]
    password: str | None = Field(default=None, min_length=12, max_length=256, description="generated when left out")


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="which machine uses the key")
    role: Literal["planner", "operator"]


def _store(request: Request) -> AuthStore:
    return request.app.state.auth_store  # type: ignore[no-any-return]


@router.post("/auth/login", operation_id="login", summary="Log in with a local user; sets the session cookie",
             responses={401: {"description": "wrong name or password"}})
def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
    who = _store(request).check_password(body.name, body.password)
    if who is None:
        # the name tried, when it is a user's; anything else (a password typed into the name field) only hashed
        known = any(u["name"] == body.name for u in _store(request).users())
        tried = body.name if known else "unknown:" + hashlib.sha256(body.name.encode()).hexdigest()[:12]
        record(request, "login.failed", tried, outcome="refused", actor=tried, detail="wrong user name or password")
        raise HTTPException(401, "wrong user name or password")
    s = request.app.state.settings
    sid = _store(request).new_session(who, s.session_ttl_h * 3600)
    response.set_cookie(SESSION_COOKIE, sid, max_age=int(s.session_ttl_h * 3600), httponly=True, samesite="strict",
                        secure=s.cookie_secure, path="/")
    record(request, "login", who.subject, actor=who.subject, role=who.role)
    return {"name": who.subject, "role": who.role}


@router.post("/auth/logout", operation_id="logout", summary="End the session and drop its cookie")
def logout(request: Request, response: Response) -> dict[str, Any]:
    if (sid := request.cookies.get(SESSION_COOKIE)) is not None:
        if (who := _store(request).check_session(sid)) is not None:
            record(request, "logout", who.subject, actor=who.subject, role=who.role)
        _store(request).end_session(sid)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=request.app.state.settings.cookie_secure)
    return {"role": "public"}


@router.get("/auth/me", operation_id="whoami", summary="Who the caller is (role public without a login)")
def me(request: Request) -> dict[str, Any]:
    who = identify(request)
    return {"name": None if who.role == "public" else who.subject, "role": who.role}


@router.get("/auth/config", operation_id="auth_config", summary="How to log in here: local users and/or an OIDC issuer")
def config(request: Request) -> dict[str, Any]:
    s = request.app.state.settings
    return {"local_users": True, "oidc_issuer": s.oidc_issuer or None, "oidc_audience": s.oidc_audience or None}


@router.get("/auth/users", operation_id="list_users")
def list_users(request: Request) -> list[dict[str, Any]]:
    return _store(request).users()


@router.post("/auth/users", operation_id="create_user", status_code=201,
             summary="Create a local user; the password is shown once when generated")
def create_user(body: NewUser, request: Request) -> dict[str, Any]:
    if not NAME.fullmatch(body.name):  # the store's rule, without the line break its '$' would let through
        raise HTTPException(422, f"user name {body.name!r} must be 1-64 characters a-z 0-9 . _ @ - (lower case)")
    try:
        password = _store(request).add_user(body.name, body.role, body.password,
                                            audit=outgoing(request, "user.create", body.name, detail=f"role {body.role}"))
    except AuthError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 422, str(exc)) from None
    relay_now(request)
    return {"name": body.name, "role": body.role, "password": None if body.password else password}


@router.delete("/auth/users/{name}", operation_id="delete_user", status_code=204)
def delete_user(name: str, request: Request) -> Response:
    if identify(request).subject == name:
        raise HTTPException(409, "you cannot delete yourself; another operator can")
    if not _store(request).delete_user(name, audit=outgoing(request, "user.delete", name)):
        raise HTTPException(404, f"no user {name!r}")
    relay_now(request)
    return Response(status_code=204)


@router.get("/auth/keys", operation_id="list_keys", summary="API keys (never their secrets)")
def list_keys(request: Request) -> list[dict[str, Any]]:
    return _store(request).keys()


@router.post("/auth/keys", operation_id="create_key", status_code=201,
             summary="Create an API key for a machine; the secret is shown once (send it as 'Authorization: Bearer')")
def create_key(body: NewKey, request: Request) -> dict[str, Any]:
    store = _store(request)
    kid = store.new_key_id()
    try:
        kid, secret = store.add_key(body.name, body.role, identify(request).subject, kid,
                                    audit=outgoing(request, "key.create", kid, detail=f"{body.name}, role {body.role}"))
    except AuthError as exc:
        raise HTTPException(422, str(exc)) from None
    relay_now(request)
    return {"id": kid, "name": body.name, "role": body.role, "key": secret}


@router.delete("/auth/keys/{key_id}", operation_id="delete_key", status_code=204)
def delete_key(key_id: str, request: Request) -> Response:
    if not _store(request).delete_key(key_id, audit=outgoing(request, "key.delete", key_id)):
        raise HTTPException(404, f"no API key {key_id!r}; list them with GET /auth/keys")
    relay_now(request)
    return Response(status_code=204)
