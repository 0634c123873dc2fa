"""Server-sent events: a snapshot, then deltas in order; a reconnect with ``Last-Event-ID`` resumes without gaps.

A client that cannot keep up is cut off, so that it never slows the others: one whose queue of deltas overflowed gets a
``resume`` event naming the last sequence it has and its stream ends; one whose connection takes no bytes for
``sse_write_timeout_s`` has its connection closed. Either way the browser's EventSource reconnects by itself after the
``retry`` interval the stream sets, with ``Last-Event-ID``, and gets what it missed from the read model's buffer (or a
``resync`` and a fresh snapshot when it is too far behind)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Send

from api.auth.access import stream_caller
from api.deps import PackDep, ReadModelDep
from api.filters import BBOX, check_neighbourhood, parse_bbox
from api.readmodel import Delta, Subscriber
from twin.ids import EntityKind

router = APIRouter(tags=["live"])
log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0
RETRY_MS = 3000  # the EventSource's reconnect delay after its stream ended
CUT_LOG_S = 60.0  # cut-offs are logged at most once a minute, with their count


BATCH = 256  # frames written to a client at once when it has fallen behind a little
DISCONNECT_CHECK_S = 1.0
# A client's task wakes at most this often to write: with 200 clients and 400 deltas a second, waking each client for
# each delta was 80,000 task switches a second on the API's event loop, and the read model's thread lost the GIL to
# them (the read model's rate fell by a fifth). The delay it adds is small beside the reading-to-delta path (~0.4 s).
# 100 ms rather than 50: at 200 clients each write through Starlette, the HTTP writer and the socket was most of the event loop's
# work, and the CPU it took slowed the worker on the same 2 cores (BENCHMARKS.md, session 11).
COALESCE_S = 0.1
FRAME_CACHE = 4096


def _frame(d: Delta, event: str | None = None) -> bytes:
    return f"id: {d.seq}\nevent: {event or d.kind}\ndata: {json.dumps(d.to_json(), separators=(',', ':'), default=str)}\n\n".encode()


def _live_frame(frames: OrderedDict[int, bytes], d: Delta) -> bytes:
    """The frame of a live delta, encoded once however many clients take it (a JSON dump per client and delta was most
    of the fan-out's cost); *frames* is the read model's cache by sequence (used from its API's event loop only)."""
    frame = frames.get(d.seq)
    if frame is None:
        frame = frames[d.seq] = _frame(d)
        if len(frames) > FRAME_CACHE:
            frames.popitem(last=False)
    return frame


class LiveResponse(StreamingResponse):
    """A streaming response that stops writing to a connection which takes nothing for *write_timeout* seconds: the
    write is abandoned, the body generator closed (its subscription released) and the connection closed."""

    def __init__(self, content: AsyncGenerator[bytes, None], write_timeout: float, on_cut: Callable[[], None],
                 headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.write_timeout = write_timeout
        self.on_cut = on_cut
        self.content = content  # typed as a generator (``body_iterator`` is not): closed when a write is abandoned

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.content:
                with anyio.move_on_after(self.write_timeout) as scope:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if scope.cancelled_caught:
                    self.on_cut()
                    return  # the response stays incomplete: the server closes the connection
        finally:
            await self.content.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _UncompletedStream(logging.Filter):
    """Drops uvicorn's error line for a response that ended incomplete: the live stream does that on purpose when it
    cuts off a client, and says so itself (``plietsch_sse_cut_off`` and one log line a minute)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


def quiet_cut_offs() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _UncompletedStream) for f in logger.filters):
        logger.addFilter(_UncompletedStream())


_last_cut_log = [0.0]


def _cut(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1
    now = time.monotonic()
    if now - _last_cut_log[0] >= CUT_LOG_S:
        _last_cut_log[0] = now
        log.warning("live clients cut off so far: %s (fell_behind: more deltas queued than sse subscriber_queue; "
                    "not_reading: the connection took nothing for sse_write_timeout_s); they resume with Last-Event-ID",
                    ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@router.get("/stream", operation_id="stream_deltas", summary="Live deltas (SSE): snapshot first, then changes in order",
            response_class=StreamingResponse, responses={429: {"description": "too many live streams (per caller or in total)"}})
async def stream(
    request: Request, pack: PackDep, rm: ReadModelDep,
    region: Annotated[str | None, Query(description="region id")] = None,
    neighbourhood: Annotated[str | None, Query(description="neighbourhood slug")] = None,
    type: Annotated[EntityKind | None, Query(description="entity kind, e.g. sensor or coast")] = None,
    bbox: Annotated[str | None, Query(json_schema_extra=BBOX)] = None,
    after: Annotated[int | None, Query(description="resume after this sequence (as Last-Event-ID)")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    if region is not None and region != pack.id:
        raise HTTPException(404, f"no region {region!r}; this API serves {pack.id!r}")
    check_neighbourhood(pack, neighbourhood)
    box = parse_bbox(bbox) if bbox is not None else None
    if last_event_id is not None:
        try:
            after = int(last_event_id)
        except ValueError:
            raise HTTPException(422, f"Last-Event-ID {last_event_id!r} must be a sequence number") from None
    places = request.app.state.places
    accept = _filter(places, neighbourhood, type, box)
    release = request.app.state.stream_slots.acquire(stream_caller(request))  # 429 over the caps
    sub = Subscriber(asyncio.get_running_loop(), accept, rm.subscriber_queue, key=(neighbourhood, type, box))
    backlog = rm.subscribe(sub, after)
    frames = rm.frames

    async def events() -> AsyncGenerator[bytes, None]:
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            if backlog is None or after is None:
                if backlog is None:
                    yield b"event: resync\ndata: {\"reason\": \"the deltas after your last id are no longer buffered\"}\n\n"
                at, snap = rm.snapshot(accept)
                for i in range(0, len(snap), BATCH):  # a few large writes, not one per entity
                    yield b"".join(_frame(d, "snapshot") for d in snap[i:i + BATCH])
                yield f"id: {at}\nevent: snapshot_end\ndata: {{\"seq\": {at}}}\n\n".encode()
                last = at
            else:
                for i in range(0, len(backlog), BATCH):
                    yield b"".join(_live_frame(frames, d) for d in backlog[i:i + BATCH])
                last = backlog[-1].seq if backlog else after
            checked = time.monotonic()
            wrote = 0.0  # when the last batch of deltas was written
            while True:
                if time.monotonic() - checked >= DISCONNECT_CHECK_S:  # asking the server costs: once a second
                    if await request.is_disconnected():
                        return
                    checked = time.monotonic()
                if sub.overflowed:  # it fell behind and deltas were dropped: it resumes from the last one it has
                    _cut(rm.sse_cut, "fell_behind")
                    told = {"after": last, "reason": f"zu langsam: bitte mit Last-Event-ID {last} neu verbinden "
                                                      f"(too slow: reconnect with Last-Event-ID {last})"}
                    yield f"event: resume\ndata: {json.dumps(told, ensure_ascii=False)}\n\n".encode()
                    return
                if not await sub.wait(HEARTBEAT_S):
                    if await request.is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    continue
                # at most one write per COALESCE_S: what comes until then goes out in the same write; the first delta
                # after a quiet spell (a sparse filter, the public feed) goes at once
                wait = COALESCE_S - (time.monotonic() - wrote)
                if len(sub) < BATCH and wait > 0:
                    await asyncio.sleep(wait)
                    if sub.overflowed:
                        continue
                batch = []
                for item in sub.take(BATCH):  # what is waiting goes in the same write
                    if item.seq > last:
                        batch.append(_live_frame(frames, item))
                        last = item.seq
                if batch:
                    wrote = time.monotonic()
                    yield b"".join(batch)
        finally:
            rm.unsubscribe(sub)
            release()

    return LiveResponse(events(), request.app.state.settings.sse_write_timeout_s,
                        lambda: _cut(rm.sse_cut, "not_reading"),
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _filter(places: dict, neighbourhood: str | None, kind: EntityKind | None,
            box: tuple[float, float, float, float] | None) -> Callable[[Delta], bool]:
    def accept(d: Delta) -> bool:
        if kind is not None and d.entity_id.split(":")[2] != kind.value:
            return False
        if neighbourhood is None and box is None:
            return True
        p = places.get(d.entity_id)
        if p is None:
            return False
        if neighbourhood is not None and p.neighbourhood != neighbourhood:
            return False
        return box is None or (box[0] <= p.lon <= box[2] and box[1] <= p.lat <= box[3])

    return accept
