"""Coastline state, alerts, aggregates and the public summary for the Info-Cube."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from shapely.geometry import box, mapping
from shapely.geometry.polygon import orient

from api import privacy
from api.auth.access import stream_caller
from api.deps import PackDep, ReadModelDep
from api.routes.entities import feature

router = APIRouter(tags=["coast"])
PUBLIC_PUSH_S = 2.0  # the public feed looks for a change this often (the kiosk needs no more)
HEARTBEAT_S = 10.0


@router.get("/coast", operation_id="list_coast_segments", summary="Coast segments with level, freeboard and surge class")
def coast(pack: PackDep, rm: ReadModelDep) -> dict[str, Any]:
    return {"type": "FeatureCollection", "synthetic_layers": pack.synthetic_layers(),
            "features": [feature(c, rm.get(c.id)) for c in sorted(pack.coast.values(), key=lambda c: c.id)]}


@router.get("/regions/{region_id}/surface", operation_id="get_surface", summary="Land and sea polygons from the shoreline")
def surface(region_id: str, pack: PackDep) -> dict[str, Any]:
    if region_id != pack.id:
        raise HTTPException(404, f"no region {region_id!r}; this API serves {pack.id!r}")
    sea = pack.water_polygon()
    if sea is None:
        raise HTTPException(404, f"region {region_id!r} has no shoreline in its pack")
    land = box(*pack.manifest.bbox).difference(sea)
    features = []
    for kind, geom in (("water", sea), ("land", land)):
        geom = geom.simplify(0.0002, preserve_topology=True).buffer(0)
        parts = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
        for part in parts:
            if part.area > 1e-7:
                features.append({"type": "Feature", "geometry": mapping(orient(part)),
                                 "properties": {"kind": kind, "source": "GSHHG 2.3.7 shoreline (real)"}})
    return {"type": "FeatureCollection", "features": features}


@router.get("/regions/{region_id}/districts", operation_id="get_districts",
            summary="The region's official districts (real data): name, number, population, source and licence")
def districts(region_id: str, pack: PackDep) -> dict[str, Any]:
    if region_id != pack.id:
        raise HTTPException(404, f"no region {region_id!r}; this API serves {pack.id!r}")
    info = pack.manifest.layers.get("districts")
    features = [{"type": "Feature", "id": d.id,
                 "geometry": mapping(d.polygon().simplify(0.00005, preserve_topology=True)),
                 "properties": d.model_dump(exclude={"geometry"})} for d in pack.districts.values()]
    return {"type": "FeatureCollection", "features": features,
            "source": info.source if info else "", "licence": info.licence if info else ""}


@router.get("/alerts", operation_id="list_alerts", summary="Active alerts")
def alerts(rm: ReadModelDep, public: Annotated[bool | None, Query(description="only alerts safe for public screens")] = None,
           category: str | None = None) -> list[dict[str, Any]]:
    return [a for a in rm.active_alerts() if (public is None or a["public"] == public)
            and (category is None or a["category"] == category)]


@router.get("/aggregates", operation_id="list_aggregates", summary="Windowed aggregates, shards combined")
def aggregates(rm: ReadModelDep, metric: str | None = None, group: str | None = None,
               latest: Annotated[bool, Query(description="only the newest window per metric and group")] = False) -> list[dict[str, Any]]:
    """Windows within the aggregate horizon (PLIETSCH_AGGREGATE_HORIZON_H, default 48 h of event time behind the
    newest); older ones are answered from history."""
    return rm.aggregates(metric, group, latest)


@router.get("/public/summary", operation_id="public_summary", summary="Figures safe for public screens: aggregates only")
def public_summary(pack: PackDep, rm: ReadModelDep) -> dict[str, Any]:
    """The rules per sensor kind are in ``api/privacy.py``: aggregates only, counts under 5 as "<5", no free text."""
    return privacy.public_summary(pack, rm)


@router.get("/public/stream", operation_id="public_stream", response_class=StreamingResponse,
            summary="Public live feed (SSE): the public summary (aggregates, public alerts) whenever it changes")
async def public_stream(request: Request, pack: PackDep, rm: ReadModelDep) -> StreamingResponse:
    release = request.app.state.stream_slots.acquire(stream_caller(request))  # 429 over the caps

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in _public_events(request, pack, rm):
                yield chunk
        finally:
            release()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _public_events(request: Request, pack: Any, rm: Any) -> AsyncIterator[bytes]:
    """The summary when it changed (looked at every PUBLIC_PUSH_S), a keep-alive at least every HEARTBEAT_S."""
    last_seq, last_doc, idle = -1, "", 0.0
    while not await request.is_disconnected():
        if rm.seq != last_seq or idle >= HEARTBEAT_S:
            last_seq, idle = rm.seq, 0.0
            doc = json.dumps(privacy.public_summary(pack, rm), separators=(",", ":"), default=str)
            if doc != last_doc:
                last_doc = doc
                yield f"event: summary\ndata: {doc}\n\n".encode()
            else:
                yield b": keep-alive\n\n"
        await asyncio.sleep(PUBLIC_PUSH_S)
        idle += PUBLIC_PUSH_S
