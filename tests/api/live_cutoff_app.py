"""A bare ASGI app for ``test_live_cutoff.py``: every request gets an endless live stream through the API's
``LiveResponse`` (half a megabyte a second, write timeout ``CUTOFF_WRITE_TIMEOUT_S``), and what happens to each stream
(``cut <path>``, ``closed <path>``) is appended to the file ``CUTOFF_LOG``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from api.routes.live import LiveResponse, quiet_cut_offs

LOG = os.environ.get("CUTOFF_LOG", "cutoff.log")
WRITE_TIMEOUT_S = float(os.environ.get("CUTOFF_WRITE_TIMEOUT_S", "2"))


def note(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                quiet_cut_offs()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]

    async def frames() -> AsyncIterator[bytes]:
        try:
            n = 0
            while True:
                yield b"".join(f"id: {n + i}\nevent: entity\ndata: {'x' * 480}\n\n".encode() for i in range(100))
                n += 100
                await asyncio.sleep(0.1)
        finally:
            note(f"closed {path}")

    await LiveResponse(frames(), WRITE_TIMEOUT_S, lambda: note(f"cut {path}"), headers={})(scope, receive, send)
