"""Security headers on every response (a Content-Security-Policy CesiumJS works under) and an access log that keeps
no client IP address in clear."""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Measured with the real Chromium (tests/viewer/test_safe_pages.py): CesiumJS 1.x runs its workers from its own files
# ('self') and builds some from blob: URLs; it loads no remote code and needs no eval. Styles: Cesium's widgets set
# style attributes, so style-src keeps 'unsafe-inline' (styles cannot run code). No inline scripts anywhere.
CSP = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "worker-src 'self' blob:",
    "child-src 'self' blob:",
    "img-src 'self' data: blob:",
    "style-src 'self' 'unsafe-inline'",
    "font-src 'self' data:",
    "connect-src 'self' data: blob:",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))
DOCS_CSP = CSP.replace("script-src 'self'", "script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'").replace(
    "style-src 'self' 'unsafe-inline'", "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net").replace(
    "img-src 'self' data: blob:", "img-src 'self' data: blob: https://fastapi.tiangolo.com")


class SecurityHeaders:
    """Pure ASGI (streams such as SSE pass through untouched): adds the headers to every HTTP response."""

    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        base = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                (b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-resource-policy", b"same-origin"),
                (b"permissions-policy", b"geolocation=(), camera=(), microphone=(), payment=()")]
        if hsts:
            base.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        self.headers = [*base, (b"content-security-policy", CSP.encode())]
        self.docs_headers = [*base, (b"content-security-policy", DOCS_CSP.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs_headers if scope.get("path") in ("/docs", "/redoc") else self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *((k, v) for k, v in extra if k not in have)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HashClientAddress(logging.Filter):
    """uvicorn's access log names the client as 'ip:port': it becomes 'client-<hash>' (salted per process, so the same
    client is recognisable within one log but the address cannot be recovered by trying all of them)."""

    def __init__(self) -> None:
        super().__init__()
        self.salt = secrets.token_bytes(16)

    def pseudonym(self, addr: str) -> str:
        host = addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr.rsplit(":", 1)[0] if addr.startswith("[") else addr
        return "client-" + hashlib.blake2b(host.encode(), key=self.salt, digest_size=6).hexdigest()

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if isinstance(args, tuple) and args and isinstance(args[0], str):
            record.args = (self.pseudonym(args[0]), *args[1:])
        return True


def hide_client_addresses() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HashClientAddress) for f in logger.filters):
        logger.addFilter(HashClientAddress())
