"""Errors as NGSI-LD ProblemDetails (ETSI GS CIM 009, 5.5.2 and 5.5.3; IETF RFC 7807): ``type`` one of the standard's
error types, ``title``, ``status`` and a ``detail`` that says what was wrong, with what value. Every error on a
``/ngsi-ld/`` path is answered this way, including the app-wide ones (login, role, rate limit, validation)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
TITLES = {"BadRequestData": "Bad request data", "InvalidRequest": "Invalid request", "ResourceNotFound":
          "Resource not found", "AlreadyExists": "Already exists", "OperationNotSupported": "Operation not supported",
          "InternalError": "Internal error", "TooManyResults": "Too many results"}
# statuses the NGSI-LD error types do not cover (login, role, rate limit, availability): RFC 7807 'about:blank'
HTTP_TITLES = {401: "Unauthorized", 403: "Forbidden", 405: "Method Not Allowed", 406: "Not Acceptable",
               413: "Content Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
               503: "Service Unavailable"}
BY_STATUS = {400: "BadRequestData", 404: "ResourceNotFound", 409: "AlreadyExists", 422: "BadRequestData",
             500: "InternalError"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["type", "title", "status", "detail"],
    "properties": {"type": {"type": "string", "format": "uri"}, "title": {"type": "string"},
                   "status": {"type": "integer"}, "detail": {"type": "string"}},
    "description": "NGSI-LD ProblemDetails (ETSI GS CIM 009, 5.5.3)"}


class NgsiError(StarletteHTTPException):
    def __init__(self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail, headers)
        self.kind = kind


def problem(status: int, kind: str | None, detail: str, headers: Any = None) -> JSONResponse:
    if kind is None and status in BY_STATUS and status not in HTTP_TITLES:
        kind = BY_STATUS[status]
    body = ({"type": ERRORS + kind, "title": TITLES.get(kind, kind), "status": status, "detail": detail} if kind
            else {"type": "about:blank", "title": HTTP_TITLES.get(status, "Error"), "status": status, "detail": detail})
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _brief(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body"))
        parts.append(f"{where or 'request'}: {e.get('msg')} (got {str(e.get('input'))[:80]!r})")
    return "; ".join(parts)


def install_handlers(app: FastAPI) -> None:
    """ProblemDetails for /ngsi-ld/ paths; every other path keeps the app's own error answers."""
    http_default = app.exception_handlers[StarletteHTTPException]
    validation_default = app.exception_handlers[RequestValidationError]

    async def on_http(request: Request, exc: Exception) -> Any:
        if not request.url.path.startswith("/ngsi-ld/") or not isinstance(exc, StarletteHTTPException):
            return await http_default(request, exc)  # type: ignore[misc]
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and not isinstance(exc, NgsiError):
            detail = f"no such resource: {request.url.path}" if detail == "Not Found" else detail
        return problem(exc.status_code, getattr(exc, "kind", None), detail, exc.headers)

    async def on_validation(request: Request, exc: Exception) -> Any:
        if not request.url.path.startswith("/ngsi-ld/") or not isinstance(exc, RequestValidationError):
            return await validation_default(request, exc)  # type: ignore[misc]
        return problem(400, "BadRequestData", _brief(exc))

    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
