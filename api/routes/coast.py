"""Coastline state, alerts, aggregates and the public summary for the Info-Cube."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from shapely.geometry import box, mapping
from shapely.geometry.polygon import orient

from api.deps import PackDep, ReadModelDep
from api.routes.entities import feature

router = APIRouter(tags=["coast"])
PUBLIC_METRICS = ("parking_occupancy", "traffic_vehicles", "air_no2_ugm3", "air_pm10_ugm3", "air_pm25_ugm3")


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
    aggs = rm.aggregates(latest=True)
    road_hood = {r.id: r.neighbourhood for r in pack.roads.values()}
    hoods: dict[str, dict[str, Any]] = {n.id: {"id": n.id, "name": n.name} for n in pack.neighbourhoods.values()}
    for a in aggs:
        if a["metric"] not in PUBLIC_METRICS:
            continue
        hood = road_hood.get(a["group"]) if a["metric"] == "traffic_vehicles" else a["group"]
        if hood not in hoods:
            continue
        h = hoods[hood]
        if a["metric"] == "parking_occupancy":
            h["parking_occupancy_pct"] = None if a["ratio"] is None else round(100 * a["ratio"])
        elif a["metric"] == "traffic_vehicles":
            h["traffic_vehicles_15min"] = h.get("traffic_vehicles_15min", 0) + int(a["sum"])
        else:
            h[a["metric"] + "_hourly_mean"] = None if a["mean"] is None else round(a["mean"], 1)
    segments = [rm.get(c) for c in pack.coast]
    levels = [s["state"]["level_m"] for s in segments if s]
    classes = [s["state"]["surge_class"] for s in segments if s and s["state"]["surge_class"]]
    public_alerts = [{"category": a["category"], "severity": a["severity"], "message": a["message"]}
                     for a in rm.active_alerts() if a["public"]]
    return {"region": pack.manifest.name, "synthetic_layers": pack.synthetic_layers(),
            "neighbourhoods": list(hoods.values()),
            "coast": {"water_level_m": max(levels) if levels else None, "surge_class": max(classes) if classes else None,
                      "segments": len(pack.coast)},
            "alerts": public_alerts}
