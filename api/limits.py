"""Limits for everyone (issue 11 item 4): request bodies, push-channel subscribers per caller and in total, and a rate
limit for callers without a login. Every refusal names the limit and the setting that moves it."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from cachetools import TTLCache
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Pure ASGI: a request body above *max_bytes* gets 413 before the route reads it (Content-Length or counted)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, int(declared))
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._why(seen))
            return message

        await self.app(scope, counted, send)

    def _why(self, size: int) -> str:
        return (f"the request body has {size:,} bytes, above the limit of {self.max_bytes:,} bytes "
                "(PLIETSCH_MAX_BODY_BYTES); send less")

    async def _refuse(self, send: Send, size: int) -> None:
        body = ('{"detail":"' + self._why(size) + '"}').encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class StreamSlots:
    """Open push-channel connections, per caller and in total; a connection over either cap gets 429."""

    def __init__(self, per_caller: int, total: int) -> None:
        self.per_caller, self.total = per_caller, total
        self.open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> Callable[[], None]:
        """Takes a slot for *caller* (429 when none is free); returns the function that gives it back (call it once)."""
        with self._lock:
            if sum(self.open.values()) >= self.total:
                raise HTTPException(429, f"{self.total} live streams are open, the limit of this API (PLIETSCH_SSE_TOTAL); "
                                         "try again later", headers={"Retry-After": "30"})
            if self.open.get(caller, 0) >= self.per_caller:
                raise HTTPException(429, f"you have {self.per_caller} live streams open, the limit per caller "
                                         "(PLIETSCH_SSE_PER_CALLER); close one first", headers={"Retry-After": "10"})
            self.open[caller] = self.open.get(caller, 0) + 1
        done = threading.Event()

        def release() -> None:
            if done.is_set():
                return
            done.set()
            with self._lock:
                self.open[caller] -= 1
                if not self.open[caller]:
                    del self.open[caller]

        return release


class RateLimit:
    """A token bucket per client: *rate* requests a second, bursts up to *burst*. Memory is bounded (at most
    *clients* buckets, each forgotten after a minute unused)."""

    def __init__(self, rate: float, burst: int, clients: int = 100_000) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: TTLCache[str, tuple[float, float]] = TTLCache(maxsize=clients, ttl=60)
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, at = self.buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self.buckets[client] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise HTTPException(429, f"more than {self.rate:g} requests a second (bursts of {self.burst}) without a "
                                         "login (PLIETSCH_PUBLIC_RATE); slow down or log in", headers={"Retry-After": str(wait)})
            self.buckets[client] = (tokens - 1.0, now)
