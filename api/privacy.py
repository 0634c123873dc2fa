"""What the public (no login: the kiosk, ``/public/*``, the public live feed) may see. Aggregates only, never a
sensor's own reading where it could tell about a person, never free text, and every count under 5 shown as "<5".

The rule per sensor kind (also in the README):

| kind | public | why |
|---|---|---|
| traffic count | vehicles per neighbourhood per 15 min (sum over its roads), "<5" under 5 | one road's count at night tells who drove |
| parking | occupancy in % per neighbourhood, only where the neighbourhood has at least 20 spaces | a small car park tells who is parked |
| air quality (NO2, PM10, PM2.5) | hourly mean per neighbourhood | says nothing about a person |
| water level, coast | highest level and surge class over all segments | says nothing about a person |
| weather, bike share | not public yet | no rule decided; bike stations are sensor-level |
| citizen reports, public events | never | free text and the reporter's place |
| alerts | public ones only: category, severity, segment name from the pack, a fixed text per category | the message is free text |
"""

from __future__ import annotations

from typing import Any

from twin.region import RegionPack

MIN_COUNT = 5
MIN_PARKING_SPACES = 20
PUBLIC_METRICS = ("parking_occupancy", "traffic_vehicles", "air_no2_ugm3", "air_pm10_ugm3", "air_pm25_ugm3")
ALERT_TEXT = {"storm_surge": "Storm surge warning", "freeboard": "Low freeboard at the shore",
              "overtopping": "Water over the crest"}
SEVERITY_TEXT = {"info": "information", "warning": "warning", "severe": "severe", "extreme": "extreme"}


def small(n: int | float) -> int | str:
    """A count as the public sees it: "<5" under 5."""
    return "<5" if n < MIN_COUNT else int(n)


def public_alert(a: dict[str, Any], pack: RegionPack) -> dict[str, Any]:
    seg = pack.coast.get(a.get("entity_id", ""))
    where = seg.name if seg is not None and seg.name else None
    text = ALERT_TEXT.get(a["category"], "Warning")
    return {"category": a["category"], "severity": a["severity"], "where": where,
            "text": f"{text} ({SEVERITY_TEXT.get(a['severity'], 'warning')})" + (f": {where}" if where else "")}


def public_summary(pack: RegionPack, rm: Any) -> dict[str, Any]:
    road_hood = {r.id: r.neighbourhood for r in pack.roads.values()}
    hoods: dict[str, dict[str, Any]] = {n.id: {"id": n.id, "name": n.name} for n in pack.neighbourhoods.values()}
    traffic: dict[str, float] = {}
    for a in rm.aggregates(latest=True):
        if a["metric"] not in PUBLIC_METRICS:
            continue
        hood = road_hood.get(a["group"]) if a["metric"] == "traffic_vehicles" else a["group"]
        if hood not in hoods:
            continue
        h = hoods[hood]
        if a["metric"] == "parking_occupancy":
            ok = a["ratio"] is not None and (a.get("capacity") or 0) >= MIN_PARKING_SPACES
            h["parking_occupancy_pct"] = round(100 * a["ratio"]) if ok else None
        elif a["metric"] == "traffic_vehicles":
            traffic[hood] = traffic.get(hood, 0) + float(a["sum"])
        else:
            h[a["metric"] + "_hourly_mean"] = None if a["mean"] is None else round(a["mean"], 1)
    for hood, n in traffic.items():
        hoods[hood]["traffic_vehicles_15min"] = small(n)
    segments = [rm.get(c) for c in pack.coast]
    levels = [s["state"]["level_m"] for s in segments if s]
    classes = [s["state"]["surge_class"] for s in segments if s and s["state"]["surge_class"]]
    return {"region": pack.manifest.name, "synthetic_layers": pack.synthetic_layers(),
            "neighbourhoods": list(hoods.values()),
            "coast": {"water_level_m": max(levels) if levels else None, "surge_class": max(classes) if classes else None,
                      "segments": len(pack.coast)},
            "alerts": [public_alert(a, pack) for a in rm.active_alerts() if a["public"]]}
