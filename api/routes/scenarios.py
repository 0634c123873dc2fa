"""Storm-surge and traffic scenarios: asked for by producing an event; status, results and files read back."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import model_validator
from shapely.geometry import mapping

from api.audit import outgoing, relay_now, who
from api.auth.access import allowed, identify
from api.deps import PackDep, ReadModelDep, SettingsDep
from streams.catalogue import SCENARIO_REQUESTS
from streams.scenarios import scenario_dir
from streams.serde import encode_event
from twin.events import ScenarioCancelRequested, ScenarioRequested
from twin.flood import FloodInputError, Grid, extent_polygons
from twin.geo import to_wgs84
from twin.importers import read_geotiff
from twin.region import RegionPack
from twin.scenario import MAX_STEPS, ScenarioRequest, compare
from twin.traffic.counts import Count
from twin.traffic.network import NetworkError
from twin.traffic.scenario import Context, TrafficRequest, apply_changes, road_works_closures

router = APIRouter(tags=["scenarios"])
FINISHED = ("completed", "failed", "cancelled")
MAX_CELL_STEPS = 50_000_000  # terrain cells x time steps one run may take (its step rasters, about 200 MB)


class SurgeRequest(ScenarioRequest):
    """A storm-surge request as the API takes it (twin/scenario.py ScenarioRequest; api/openapi.py writes its rules into
    the document): the points of a curve in any order (a curve is a set of (hour, level) points; they are sorted by
    hour before the twin's rules are checked), and a run of more than MAX_STEPS time steps is too large a run (413, as
    for too many terrain cells x steps), since JSON Schema cannot state a limit on duration_h / step_minutes."""

    @model_validator(mode="before")
    @classmethod
    def _as_the_api_takes_it(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        curve = data.get("curve")
        if isinstance(curve, list) and all(isinstance(p, dict) and _number(p.get("hour")) for p in curve):
            data = {**data, "curve": sorted(curve, key=lambda p: p["hour"])}
        duration, step = data.get("duration_h", 24.0), data.get("step_minutes", 60.0)
        if _number(duration) and _number(step) and 0 < duration <= 240 and 5 <= step <= 1440:
            steps = math.floor(duration * 60 / step) + 1
            if steps > MAX_STEPS:
                raise HTTPException(413, f"{steps} time steps is above the limit of {MAX_STEPS}; use a longer step_minutes")
        return data


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _produce(request: Request, topic: str, key: str, event: Any) -> None:
    producer = request.app.state.producer()
    producer.produce(topic, key=key.encode(), value=encode_event(request.app.state.read_model.codec, event))
    if producer.flush(10):
        raise HTTPException(503, "Kafka did not take the request within 10 s; is the broker up? Try again.")


@router.post("/scenarios", operation_id="request_scenario", status_code=202, summary="Ask for a storm-surge scenario",
             responses={413: {"description": "too large a run or body"}, 429: {"description": "your scenario quota is used up"}})
def request_scenario(body: SurgeRequest, request: Request, pack: PackDep) -> dict[str, Any]:
    unknown = sorted({b.segment for b in body.breaches} - set(pack.coast) | set(body.raised_crests) - set(pack.coast))
    if unknown:  # well-formed references to segments this region has not: not found, as for any id
        raise HTTPException(404, f"unknown coast segment(s): {', '.join(unknown)}; list them with GET /coast")
    try:
        body.check_against(pack)
    except FloodInputError as exc:
        raise HTTPException(422, str(exc)) from None
    cells = request.app.state.terrain_cells()
    if cells * body.steps > MAX_CELL_STEPS:
        raise HTTPException(413, f"{cells:,} terrain cells x {body.steps} steps is above the limit of {MAX_CELL_STEPS:,}; "
                                 "use fewer steps (longer step_minutes) or a coarser terrain")
    _check_quota(request)
    sid = f"{pack.id}:_:scenario:s-{uuid.uuid4().hex[:10]}"
    event = ScenarioRequested(entity_id=sid, region=pack.id, occurred_at=datetime.now(UTC), source="api",
                              request_json=body.model_dump_json(), **who(request))
    request.app.state.auth_store.own_scenario(sid, identify(request).subject)  # before the event: never an unowned run
    _produce(request, SCENARIO_REQUESTS.name, sid, event)  # the request is its own audit record (api.audit)
    return {"id": sid, "status": "requested", "steps": body.steps, "links": {"self": f"/scenarios/{sid}"}}


_traffic_lock = threading.Lock()
_traffic_contexts: dict[str, Context] = {}


def _traffic_context(pack: RegionPack) -> Context:
    """The pack's road network, zones and baseline demand, built on first use (under a second for the bundled pack)."""
    with _traffic_lock:
        if pack.id not in _traffic_contexts:
            _traffic_contexts[pack.id] = Context.of(pack)
        return _traffic_contexts[pack.id]


@router.post("/scenarios/traffic", operation_id="request_traffic_scenario", status_code=202,
             summary="Ask for a traffic what-if (closures, lanes closed, extra trips; or the roads a flood cuts)",
             responses={404: {"description": "unknown link, road, zone or flood scenario"},
                        429: {"description": "your scenario quota is used up"}})
def request_traffic_scenario(body: TrafficRequest, request: Request, pack: PackDep, rm: ReadModelDep,
                             settings: SettingsDep) -> dict[str, Any]:
    ctx = _traffic_context(pack)
    if body.road_works_applied:
        raise HTTPException(422, "road_works_applied is set by the API; ask for live_road_works instead")
    if body.live_road_works:
        roads = {r: rec["state"] for r in sorted(set(ctx.net.road) - {""}) if (rec := rm.get(r)) is not None}
        works = road_works_closures(roads, body.road_works_at or datetime.now(UTC))
        body = body.model_copy(update={"lane_closures": [*body.lane_closures, *works],
                                       "road_works_applied": [w.link for w in works]})
    if body.live_counts:
        body = body.model_copy(update={"counts": [*body.counts, *_live_counts(pack, rm, set(ctx.net.road))]})
    try:  # well-formed ids that name no link, road or zone here: not found
        ctx.net.links_of([*body.closures, *(lc.link for lc in body.lane_closures)])
    except NetworkError as exc:
        raise HTTPException(404, str(exc)) from None
    zones = {z.id for z in ctx.zones} | {z.neighbourhood for z in ctx.zones}
    if missing := sorted({ed.zone for ed in body.extra_demand} - zones):
        raise HTTPException(404, f"unknown zone or neighbourhood {missing[0]!r}; zones are listed by GET /traffic/network")
    try:
        apply_changes(ctx, body, [])  # what else the network cannot take: refused here, not in the worker
    except NetworkError as exc:
        raise HTTPException(422, str(exc)) from None
    if body.closures_from_flood is not None:
        out = _completed(rm, settings, body.closures_from_flood, request)
        if json.loads((out / "summary.json").read_text()).get("kind") == "traffic":
            raise HTTPException(422, f"{body.closures_from_flood} is a traffic scenario; closures_from_flood needs a storm-surge scenario")
    _check_quota(request)
    sid = f"{pack.id}:_:scenario:t-{uuid.uuid4().hex[:10]}"
    event = ScenarioRequested(entity_id=sid, region=pack.id, occurred_at=datetime.now(UTC), source="api",
                              request_json=body.model_dump_json(), **who(request))
    request.app.state.auth_store.own_scenario(sid, identify(request).subject)
    _produce(request, SCENARIO_REQUESTS.name, sid, event)  # the request is its own audit record (api.audit)
    return {"id": sid, "status": "requested", "kind": "traffic", "links": {"self": f"/scenarios/{sid}",
                                                                          "links": f"/scenarios/{sid}/traffic/links"}}


def _live_counts(pack: RegionPack, rm: Any, roads: set[str]) -> list[Count]:
    """The twin's latest reading of every traffic counter on a road of the network, as vehicles per hour."""
    out = []
    for s in sorted(pack.sensors.values(), key=lambda s: s.id):
        if s.sensor_kind != "traffic_count" or s.road not in roads or (rec := rm.get(s.id)) is None:
            continue
        values = (rec.get("state") or {}).get("values") or {}
        try:
            per_hour = float(values["vehicles"]) * 3600.0 / float(values["interval_s"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue
        out.append(Count(station=s.id, road=str(s.road), vehicles_per_hour=round(min(per_hour, 100_000.0), 1)))
    if not out:
        raise HTTPException(409, "live_counts: the twin has no traffic count on a road of the network yet; "
                                 "send counts (sensor.traffic-count) or give counts in the request")
    return out


@router.get("/traffic/network", operation_id="traffic_network", summary="The road network the traffic scenarios use")
def traffic_network(pack: PackDep) -> dict[str, Any]:
    ctx = _traffic_context(pack)
    net = ctx.net
    feats = [{"type": "Feature", "id": net.link_ids[i], "geometry": {"type": "LineString", "coordinates": net.geometry[i]},
              "properties": {"road": net.road[i], "road_class": net.road_class[i], "lanes": int(net.lanes[i]),
                             "capacity": float(net.capacity[i]), "speed_kmh": float(net.speed_kmh[i]),
                             "length_m": round(float(net.length_m[i]), 1)}}
             for i in range(net.n_links) if net.road_class[i] != "connector"]
    zones = [{"id": z.id, "neighbourhood": z.neighbourhood, "lon": z.lon, "lat": z.lat, "trips_from": round(float(ctx.demand[k].sum()), 1),
              "trips_to": round(float(ctx.demand[:, k].sum()), 1)} for k, z in enumerate(ctx.zones)]
    return {"type": "FeatureCollection", "features": feats, "zones": zones, "demand_preset": "gravity-floor-area-v1",
            "synthetic": True}


def _traffic_file(rm: Any, settings: Any, sid: str, request: Request, name: str) -> dict[str, Any]:
    path = _completed(rm, settings, sid, request) / name
    if not path.is_file():
        raise HTTPException(404, f"{sid} is not a traffic scenario (no {name}); its results are under /scenarios/{sid}/summary")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@router.get("/scenarios/{sid}/traffic/links", operation_id="traffic_scenario_links",
            summary="Per link: volume, v/c, travel time, before and after (GeoJSON)")
def traffic_links(sid: str, rm: ReadModelDep, settings: SettingsDep, request: Request) -> dict[str, Any]:
    return _traffic_file(rm, settings, sid, request, "links.geojson")


@router.get("/scenarios/{sid}/traffic/zones", operation_id="traffic_scenario_zones",
            summary="Zone-to-zone travel times before and after, minutes (null: no route)")
def traffic_zones(sid: str, rm: ReadModelDep, settings: SettingsDep, request: Request) -> dict[str, Any]:
    return _traffic_file(rm, settings, sid, request, "zone_times.json")


UNSEEN_S = 600.0  # a request the worker has not shown progress for after this long no longer counts against the quota


def _check_quota(request: Request) -> None:
    """At most PLIETSCH_SCENARIO_QUOTA scenarios per user queued or running (asked for and not yet finished)."""
    who, rm = identify(request), request.app.state.read_model
    quota = request.app.state.settings.scenario_quota
    now = time.time()
    busy = [sid for sid, at in request.app.state.auth_store.owned_since(who.subject, now - 7 * 86400)
            if (rec := rm.scenarios.get(sid)) is not None and rec["status"] not in FINISHED
            or rec is None and now - at < UNSEEN_S]
    if len(busy) >= quota:
        raise HTTPException(429, f"you have {len(busy)} scenarios queued or running, the limit per user "
                                 f"(PLIETSCH_SCENARIO_QUOTA={quota}); wait for one to finish or cancel one: {', '.join(sorted(busy))}")


def _visible(request: Request, sid: str, owners: dict[str, tuple[str, bool]] | None = None) -> bool:
    """A planner sees their own scenarios and shared ones; an operator sees all."""
    who = identify(request)
    if allowed(who, "operator"):
        return True
    own = owners.get(sid) if owners is not None else request.app.state.auth_store.scenario_owner(sid)
    return own is not None and (own[0] == who.subject or own[1])


def _may_change(request: Request, sid: str) -> None:
    """Cancel and share: only the owner or an operator."""
    who = identify(request)
    own = request.app.state.auth_store.scenario_owner(sid)
    if not allowed(who, "operator") and (own is None or own[0] != who.subject):
        raise HTTPException(403, f"scenario {sid} is not yours ({who.subject}); only its owner or an operator may change it")


def _status(rm: Any, sid: str, request: Request) -> dict[str, Any]:
    rec = rm.scenarios.get(sid)
    if rec is None:
        raise HTTPException(404, f"no scenario {sid!r} (yet); a new one shows within a second or two, once the scenario "
                                 "service has queued it (is `plietsch scenarios` running?): list them with GET /scenarios")
    if not _visible(request, sid):
        raise HTTPException(403, f"scenario {sid} belongs to another planner and is not shared")
    owner, shared = request.app.state.auth_store.scenario_owner(sid) or (None, False)
    return {**rec, "owner": owner, "shared": shared, **_expiry(request, sid, rec)}


def _expiry(request: Request, sid: str, rec: dict[str, Any]) -> dict[str, Any]:
    """When the results go (PLIETSCH_SCENARIO_RESULT_TTL_H after the run ended), and why they went if they did."""
    retention = request.app.state.retention
    until = retention.expires_at(rec)
    return {"expires_at": None if until is None else until.isoformat(), "expired": retention.expired(sid, rec)}


@router.get("/scenarios", operation_id="list_scenarios", summary="Your scenarios and shared ones (an operator: all)")
def list_scenarios(rm: ReadModelDep, request: Request) -> list[dict[str, Any]]:
    owners = request.app.state.auth_store.scenario_owners()
    return [{**{k: v for k, v in r.items() if k != "summary_json"}, "owner": owners.get(r["entity_id"], (None, False))[0],
             "shared": owners.get(r["entity_id"], (None, False))[1], **_expiry(request, r["entity_id"], r)}
            for r in sorted(list(rm.scenarios.values()), key=lambda r: r["_seq"]) if _visible(request, r["entity_id"], owners)]


@router.get("/scenarios/{sid}", operation_id="get_scenario")
def get_scenario(sid: str, rm: ReadModelDep, request: Request) -> dict[str, Any]:
    rec = _status(rm, sid, request)
    return {k: v for k, v in rec.items() if k != "summary_json"}


@router.post("/scenarios/{sid}/share", operation_id="share_scenario", summary="Share a scenario with every planner (owner or operator)")
def share_scenario(sid: str, request: Request, rm: ReadModelDep) -> dict[str, Any]:
    _status(rm, sid, request)
    _may_change(request, sid)
    request.app.state.auth_store.share_scenario(sid, audit=outgoing(request, "scenario.share", sid, entity=sid))
    relay_now(request)
    return {"id": sid, "shared": True}


@router.delete("/scenarios/{sid}", operation_id="cancel_scenario", status_code=202, summary="Cancel a scenario (owner or operator)")
def cancel_scenario(sid: str, request: Request, rm: ReadModelDep, pack: PackDep) -> dict[str, Any]:
    rec = _status(rm, sid, request)
    _may_change(request, sid)
    if rec["status"] in ("completed", "failed", "cancelled"):
        raise HTTPException(409, f"scenario {sid} is already {rec['status']}; nothing to cancel")
    _produce(request, SCENARIO_REQUESTS.name, sid, ScenarioCancelRequested(  # its own audit record (api.audit)
        entity_id=sid, region=pack.id, occurred_at=datetime.now(UTC), source="api", reason=f"cancelled by {identify(request).subject}",
        **who(request)))
    return {"id": sid, "status": "cancel requested"}


def _completed(rm: Any, settings: Any, sid: str, request: Request) -> Path:
    rec = _status(rm, sid, request)
    if rec["expired"] is not None:
        raise HTTPException(410, rec["expired"]["message"])
    if rec["status"] != "completed":
        raise HTTPException(409, f"scenario {sid} is {rec['status']} ({rec['step']}/{rec['steps']} steps); results come when it completes")
    out = scenario_dir(settings.data_dir, sid)
    if not (out / "summary.json").is_file():
        raise HTTPException(404, f"the results of {sid} are not on this API's disk ({out}); share the worker's data dir")
    return out


def _flood(rm: Any, settings: Any, sid: str, request: Request) -> Path:
    """A completed storm-surge run's folder; a traffic run has none of its files (404 that says where its results are)."""
    out = _completed(rm, settings, sid, request)
    if not (out / "assets.json").is_file():
        raise HTTPException(404, f"{sid} is a traffic scenario: its results are /scenarios/{sid}/summary, "
                                 f"/scenarios/{sid}/traffic/links and /scenarios/{sid}/traffic/zones")
    return out


@router.get("/scenarios/{sid}/summary", operation_id="scenario_summary")
def scenario_summary(sid: str, rm: ReadModelDep, settings: SettingsDep, request: Request) -> dict[str, Any]:
    return json.loads((_completed(rm, settings, sid, request) / "summary.json").read_text())  # type: ignore[no-any-return]


@router.get("/scenarios/{sid}/assets", operation_id="scenario_assets", summary="Affected assets as GeoJSON")
def scenario_assets(sid: str, rm: ReadModelDep, settings: SettingsDep, request: Request) -> dict[str, Any]:
    assets = json.loads((_flood(rm, settings, sid, request) / "assets.json").read_text())
    places = request.app.state.places
    feats = []
    for a in sorted(assets, key=lambda a: (-a["max_depth_m"], a["entity_id"])):
        p = places.get(a["entity_id"])
        feats.append({"type": "Feature", "id": a["entity_id"], "properties": a,
                      "geometry": None if p is None else {"type": "Point", "coordinates": [p.lon, p.lat]}})
    return {"type": "FeatureCollection", "features": feats}


def _raster(out: Path, name: str) -> tuple[Grid, np.ndarray]:
    path = out / name
    if not path.is_file():
        raise HTTPException(404, f"no raster {name} for this scenario")
    t = read_geotiff(path)
    return Grid(t.heights, t.origin_x, t.origin_y, t.pixel_x, t.crs), t.heights


@router.get("/scenarios/{sid}/flooded", operation_id="scenario_flooded", summary="Flooded area as GeoJSON (a step, or the maximum)")
def scenario_flooded(sid: str, rm: ReadModelDep, settings: SettingsDep, request: Request, step: int | None = None) -> dict[str, Any]:
    out = _flood(rm, settings, sid, request)
    summary = json.loads((out / "summary.json").read_text())
    if step is not None and not 0 <= step < summary["steps"]:
        raise HTTPException(422, f"step {step} is outside 0..{summary['steps'] - 1}")
    grid, depth = _raster(out, "max_depth.tif" if step is None else f"steps/depth_{step:03d}.tif")
    geom = to_wgs84(extent_polygons(np.nan_to_num(depth) > 0, grid), grid.crs)
    minutes = summary["request"]["step_minutes"]
    when = None if step is None else (datetime.fromisoformat(summary["start"]) + timedelta(minutes=minutes * step)).isoformat()
    props = {"step": step, "level_m": None if step is None else summary["levels_m"][step], "time": when,
             "cells": int((np.nan_to_num(depth) > 0).sum()), "cell_m": grid.cell}
    return {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": mapping(geom), "properties": props}]}


@router.get("/scenarios/{sid}/depth/{step}.tif", operation_id="scenario_depth_raster", summary="Depth raster of a step (GeoTIFF)")
def scenario_depth(sid: str, step: int, rm: ReadModelDep, settings: SettingsDep, request: Request) -> FileResponse:
    path = _flood(rm, settings, sid, request) / "steps" / f"depth_{step:03d}.tif"
    if not path.is_file():
        raise HTTPException(404, f"no step {step} for scenario {sid}")
    return FileResponse(path, media_type="image/tiff", filename=f"{sid.split(':')[-1]}_depth_{step:03d}.tif")


@router.get("/scenarios/{sid}/rasters/{name}.tif", operation_id="scenario_raster", summary="max_depth, duration_h or first_wet_step")
def scenario_raster(sid: str, name: str, rm: ReadModelDep, settings: SettingsDep, request: Request) -> FileResponse:
    if name not in ("max_depth", "duration_h", "first_wet_step"):
        raise HTTPException(404, f"no raster {name!r}; there are max_depth, duration_h and first_wet_step")
    path = _flood(rm, settings, sid, request) / f"{name}.tif"
    return FileResponse(path, media_type="image/tiff", filename=f"{sid.split(':')[-1]}_{name}.tif")


@router.get("/scenarios/{sid}/compare/{other}", operation_id="compare_scenarios")
def compare_scenarios(sid: str, other: str, rm: ReadModelDep, settings: SettingsDep, request: Request) -> dict[str, Any]:
    def load(s: str) -> dict[str, Any]:
        out = _flood(rm, settings, s, request)
        return {"summary": json.loads((out / "summary.json").read_text()), "assets": json.loads((out / "assets.json").read_text())}

    return {"first": sid, "second": other, **compare(load(sid), load(other))}
