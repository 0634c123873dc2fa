"""Server-sent events: a snapshot, then deltas in order; a reconnect with ``Last-Event-ID`` resumes without gaps."""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from api.auth.access import stream_caller
from api.deps import PackDep, ReadModelDep
from api.filters import BBOX, parse_bbox
from api.readmodel import Delta, Subscriber
from twin.ids import EntityKind

router = APIRouter(tags=["live"])
HEARTBEAT_S = 10.0


BATCH = 256  # frames written to a client at once when it has fallen behind a little
DISCONNECT_CHECK_S = 1.0
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
    hoods = {n.id.scope for n in pack.neighbourhoods.values()}
    if neighbourhood is not None and neighbourhood not in hoods:
        raise HTTPException(404, f"no neighbourhood {neighbourhood!r}; known: {', '.join(sorted(hoods))}")
    box = parse_bbox(bbox) if bbox is not None else None
    if last_event_id is not None:
        try:
            after = int(last_event_id)
        except ValueError:
            raise HTTPException(422, f"Last-Event-ID {last_event_id!r} must be a sequence number") from None
    places = request.app.state.places
    accept = _filter(places, neighbourhood, type, box)
    release = request.app.state.stream_slots.acquire(stream_caller(request))  # 429 over the caps
    sub = Subscriber(asyncio.get_running_loop(), accept, rm.subscriber_queue)
    backlog = rm.subscribe(sub, after)
    frames = rm.frames

    async def events() -> AsyncIterator[bytes]:
        try:
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
            while True:
                if time.monotonic() - checked >= DISCONNECT_CHECK_S:  # asking the server costs: once a second
                    if await request.is_disconnected():
                        return
                    checked = time.monotonic()
                if sub.overflowed and sub.queue.empty():
                    return  # it fell behind and deltas were dropped: end here, the client resumes from its last id
                try:
                    item = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    continue
                batch = []
                while True:  # what else is waiting goes in the same write
                    if item.seq > last:
                        batch.append(_live_frame(frames, item))
                        last = item.seq
                    if len(batch) >= BATCH or sub.queue.empty():
                        break
                    item = sub.queue.get_nowait()
                if batch:
                    yield b"".join(batch)
        finally:
            rm.unsubscribe(sub)
            release()

    return StreamingResponse(events(), media_type="text/event-stream",
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
