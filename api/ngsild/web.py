"""What the NGSI-LD routes share: parameter patterns, content negotiation, the answer with its @context, the
documented responses."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from api.negotiation import accepted
from api.ngsild import context as ctx
from api.ngsild.entities import key_values, select_attrs
from api.ngsild.problems import PROBLEM_SCHEMA, NgsiError
from api.ngsild.query import NAME

BASE = "/ngsi-ld/v1"
URI_CHARS = r"[A-Za-z0-9:._~!$&'()*+;=@%-]"
URI_PATTERN = rf"^[A-Za-z][A-Za-z0-9+.-]*:{URI_CHARS}+$"
ID_LIST_PATTERN = r"^[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9:._~!$&'()*+;=@%-]+(?:,[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9:._~!$&'()*+;=@%-]+)*$"
NAMES_PATTERN = rf"^{NAME}(?:,{NAME})*$"
ID_REGEX_PATTERN = r"^\^?(?:[A-Za-z0-9:_-]|\.\*|\.\+|\.)*\$?$"
OPTIONS = ("keyValues", "normalized", "sysAttrs")
OPTIONS_PATTERN = rf"^(?:{'|'.join(OPTIONS)})(?:,(?:{'|'.join(OPTIONS)}))*$"
LD = "application/ld+json"
ENTITY_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["id", "type"],
    "properties": {"id": {"type": "string"}, "type": {"type": "string"},
                   "@context": {"description": "present in application/ld+json answers"}},
    "description": "an NGSI-LD entity, normalized or (options=keyValues) simplified", "title": "NgsiLdEntity"}
LINK = {"Link": {"description": "the @context, in application/json answers", "schema": {"type": "string"}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": why, "content": {"application/json": {"schema": PROBLEM_SCHEMA}}}
    for code, why in ((400, "BadRequestData: a parameter breaks its rule (the detail names it and its value)"),
                      (401, "no login, or wrong credentials"), (403, "a role below what the route needs"),
                      (406, "Accept names neither application/json nor application/ld+json"),
                      (503, "Kafka or the OIDC issuer cannot be reached now; try again"))}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "ResourceNotFound: no such entity",
                   "content": {"application/json": {"schema": PROBLEM_SCHEMA}}}}


def _ok(schema: dict[str, Any], extra_headers: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": "the answer", "headers": {**LINK, **(extra_headers or {})},
                  "content": {"application/json": {"schema": schema}, LD: {"schema": schema}}}}


def negotiate(request: Request) -> str:
    """application/ld+json or application/json after the Accept header (RFC 9110 q-values), else 406."""
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return "application/json"
    best, best_q = None, 0.0
    for media, q in accepted(accept):
        got = LD if media == LD else "application/json" if media in ("application/json", "*/*", "application/*") else None
        if got is not None and (q > best_q or (q == best_q and got == LD and best != LD and media == LD)):
            best, best_q = got, q
    if best is None:
        raise NgsiError(406, "", f"Accept {accept!r} names no media type this API answers with; "
                                 "use application/json or application/ld+json")
    return best


def answer(request: Request, body: Any, media: str, headers: dict[str, str] | None = None) -> JSONResponse:
    base = str(request.base_url)
    out = dict(headers or {})
    if media == LD:
        url = ctx.context_url(base)
        body = [{**e, "@context": url} for e in body] if isinstance(body, list) else {**body, "@context": url}
    else:
        out["Link"] = ctx.link_header(base)
    return JSONResponse(body, media_type=media, headers=out)


def _names(raw: str | None, what: str, pattern: str) -> list[str] | None:
    if raw is None:
        return None
    if not re.fullmatch(pattern, raw):
        raise NgsiError(400, "BadRequestData", f"{what} {raw!r} must be a comma-separated list of names, e.g. "
                                               + ("WaterObserved,OffStreetParking" if what == "type" else "height,observedAt"))
    return [ctx.compact(n) for n in raw.split(",")]


def _options(raw: str | None) -> set[str]:
    if raw is None:
        return set()
    if not re.fullmatch(OPTIONS_PATTERN, raw):
        raise NgsiError(400, "BadRequestData", f"options {raw!r}: this operation supports {', '.join(OPTIONS)} "
                                               "(comma-separated)")
    return set(raw.split(","))


def shape(e: dict[str, Any], attrs: list[str] | None, options: set[str], rec: dict[str, Any] | None) -> dict[str, Any]:
    e = select_attrs(e, attrs)
    if "sysAttrs" in options and rec is not None and "keyValues" not in options:
        e["modifiedAt"] = rec.get("occurred_at")
    return key_values(e) if "keyValues" in options else e


