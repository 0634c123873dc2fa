"""Security headers on every response (a Content-Security-Policy CesiumJS works under) and an access log that keeps
no client IP address in clear."""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Every response gets CSP: no eval, no inline script, nothing from elsewhere. Measured with the real Chromium
# (tests/viewer): the CesiumJS Viewer cannot start under it. Its widgets (info box, selection indicator) bind their DOM
# with Knockout, which compiles each data-bind with `new Function` ('unsafe-eval'), and its workers instantiate
# WebAssembly ('wasm-unsafe-eval'); the workers start as blob: scripts that importScripts() blob: URLs (script-src
# blob:, since a blob worker inherits the page's policy). So the two Cesium pages (/ and /scene) get CESIUM_CSP and Cesium's own files
# (/cesium/*, its workers) WORKER_CSP; the kiosk and all else keep the strict one. Styles: Cesium's widgets and the
# legend set style attributes, so style-src keeps 'unsafe-inline' (a style cannot run code). No inline scripts anywhere
# (the cesiumpy page /scene carries a nonce per response).
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
CESIUM_CSP = CSP.replace("script-src 'self'", "script-src 'self' blob: 'unsafe-eval' 'wasm-unsafe-eval'")
WORKER_CSP = CSP.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'")
CESIUM_PAGES = ("/", "/scene")
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
        self.cesium_headers = [*base, (b"content-security-policy", CESIUM_CSP.encode())]
        self.worker_headers = [*base, (b"content-security-policy", WORKER_CSP.encode())]

    def _for(self, path: str) -> list[tuple[bytes, bytes]]:
        if path in CESIUM_PAGES:
            return self.cesium_headers
        if path.startswith("/cesium/"):
            return self.worker_headers
        return self.docs_headers if path in ("/docs", "/redoc") else self.headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._for(scope.get("path", ""))

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
