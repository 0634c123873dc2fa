"""Twin entities as NGSI-LD entities (normalized representation), after the Smart Data Models where one fits.

- sensor water_level: WaterObserved (dataModel.Environment): level_m -> height (MTR)
- sensor traffic_count: TrafficFlowObserved (dataModel.Transportation): vehicles -> intensity, mean_speed_kmh ->
  averageVehicleSpeed (KMH), the counting interval -> dateObservedFrom / dateObservedTo
- sensor parking: OffStreetParking (dataModel.Parking): occupied -> occupiedSpotNumber, capacity -> totalSpotNumber,
  availableSpotNumber, occupancy (C62, 0..1)
- sensor air_quality: AirQualityObserved (dataModel.Environment): no2, pm10, pm25 (GQ = microgram per cubic metre)
- sensor weather: WeatherObserved (dataModel.Weather): temperature (CEL), windSpeed (MTS), windDirection (DD),
  precipitation (MMT)
- sensor bike_share: BikeHireDockingStation (dataModel.Transportation): bikes_available -> availableBikeNumber,
  docks_available -> freeSlotNumber
- coast segment: CoastSegment, the twin's own term (urn:plietsch:vocab:CoastSegment): no Smart Data Model describes a
  stretch of shore with a crest, a freeboard and a storm-surge class (WaterObserved is the gauge's reading, which the
  segment names by refWaterObserved): waterLevel, freeboard, crestHeight (MTR), surgeClass, overtopped

Citizen reports and public events are not NGSI-LD entities: they carry free text and a reporter's place (issue 11), and
the twin has no role-independent rule for them yet. Entity ids are ``urn:ngsi-ld:<Type>:<twin id>``
(``urn:ngsi-ld:WaterObserved:kiel:_:sensor:water-level-001``); every measured value carries ``observedAt``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from twin.entities import CoastSegment, Sensor
from twin.region import RegionPack

URN = "urn:ngsi-ld:"


@dataclass(frozen=True)
class Measure:
    twin: str  # the key in the twin's reading values
    attr: str  # the NGSI-LD attribute
    unit: str | None  # UN/CEFACT common code


SENSOR_TYPES: dict[str, tuple[str, tuple[Measure, ...]]] = {
    "water_level": ("WaterObserved", (Measure("level_m", "height", "MTR"),)),
    "traffic_count": ("TrafficFlowObserved", (Measure("vehicles", "intensity", None),
                                              Measure("mean_speed_kmh", "averageVehicleSpeed", "KMH"))),
    "parking": ("OffStreetParking", (Measure("occupied", "occupiedSpotNumber", None),
                                     Measure("capacity", "totalSpotNumber", None))),
    "air_quality": ("AirQualityObserved", (Measure("no2_ugm3", "no2", "GQ"), Measure("pm10_ugm3", "pm10", "GQ"),
                                           Measure("pm25_ugm3", "pm25", "GQ"))),
    "weather": ("WeatherObserved", (Measure("temperature_c", "temperature", "CEL"),
                                    Measure("wind_speed_ms", "windSpeed", "MTS"),
                                    Measure("wind_dir_deg", "windDirection", "DD"),
                                    Measure("precipitation_mm", "precipitation", "MMT"))),
    "bike_share": ("BikeHireDockingStation", (Measure("bikes_available", "availableBikeNumber", None),
                                              Measure("docks_available", "freeSlotNumber", None))),
}
COAST_TYPE = "CoastSegment"
DATE_OBSERVED = frozenset({"water_level", "traffic_count", "air_quality", "weather"})
TYPES: tuple[str, ...] = (*(t for t, _ in SENSOR_TYPES.values()), COAST_TYPE)
KIND_OF_TYPE = {t: kind for kind, (t, _) in SENSOR_TYPES.items()}


def urn(ngsi_type: str, twin_id: str) -> str:
    return f"{URN}{ngsi_type}:{twin_id}"


def twin_id(entity_urn: str) -> tuple[str, str] | None:
    """(type, twin id) of one of the twin's URNs, else None."""
    if not entity_urn.startswith(URN):
        return None
    ngsi_type, _, rest = entity_urn[len(URN):].partition(":")
    return (ngsi_type, rest) if ngsi_type in TYPES and rest else None


def prop(value: Any, observed_at: str | None = None, unit: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "Property", "value": value}
    if observed_at is not None:
        out["observedAt"] = observed_at
    if unit is not None:
        out["unitCode"] = unit
    return out


def _utc(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def datetime_value(t: datetime) -> dict[str, str]:
    return {"@type": "DateTime", "@value": _utc(t)}


def reading_attributes(kind: str, values: dict[str, Any], observed: datetime) -> dict[str, dict[str, Any]]:
    """The attributes one reading of a sensor of *kind* sets (the same for the live state and for history)."""
    at = _utc(observed)
    out: dict[str, dict[str, Any]] = {}
    for m in SENSOR_TYPES[kind][1]:
        v = values.get(m.twin)
        if v is not None:
            out[m.attr] = prop(v, at, m.unit)
    if kind == "parking" and isinstance(values.get("capacity"), int) and isinstance(values.get("occupied"), int):
        cap, occ = values["capacity"], values["occupied"]
        out["availableSpotNumber"] = prop(max(cap - occ, 0), at)
        out["occupancy"] = prop(round(occ / cap, 4) if cap else 0.0, at, "C62")
    if kind == "traffic_count" and isinstance(values.get("interval_s"), int):
        out["dateObservedFrom"] = prop(datetime_value(observed - timedelta(seconds=values["interval_s"])), at)
        out["dateObservedTo"] = prop(datetime_value(observed), at)
    if kind in DATE_OBSERVED:  # the models that have it (OffStreetParking and BikeHireDockingStation do not)
        out["dateObserved"] = prop(datetime_value(observed), at)
    return out


def sensor_entity(s: Sensor, live: dict[str, Any] | None) -> dict[str, Any]:
    ngsi_type = SENSOR_TYPES[s.sensor_kind][0]
    e: dict[str, Any] = {"id": urn(ngsi_type, s.id), "type": ngsi_type,
                         "name": prop(s.name or str(s.id)),
                         "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [s.lon, s.lat]}},
                         "synthetic": prop(s.synthetic)}
    if s.road is not None and s.sensor_kind == "traffic_count":
        e["refRoadSegment"] = {"type": "Relationship", "object": urn("RoadSegment", s.road)}
    if live is not None:
        st = live["state"]
        if isinstance(st.get("values"), dict) and isinstance(st.get("observed_at"), str):
            e.update(reading_attributes(s.sensor_kind, st["values"], datetime.fromisoformat(st["observed_at"])))
    return e


def coast_entity(c: CoastSegment, live: dict[str, Any] | None) -> dict[str, Any]:
    e: dict[str, Any] = {"id": urn(COAST_TYPE, c.id), "type": COAST_TYPE, "name": prop(c.name or str(c.id)),
                         "location": {"type": "GeoProperty",
                                      "value": {"type": "LineString", "coordinates": [list(p) for p in c.line]}},
                         "synthetic": prop(c.synthetic), "coastType": prop(c.coast_type),
                         "crestHeight": prop(c.crest_m, unit="MTR")}
    if c.gauge is not None:
        e["refWaterObserved"] = {"type": "Relationship", "object": urn("WaterObserved", c.gauge)}
    if live is not None:
        st = live["state"]
        at = _utc(datetime.fromisoformat(st["observed_at"])) if isinstance(st.get("observed_at"), str) else None
        e["waterLevel"] = prop(st["level_m"], at, "MTR")
        e["freeboard"] = prop(st["freeboard_m"], at, "MTR")
        if st.get("surge_class") is not None:
            e["surgeClass"] = prop(st["surge_class"], at)
        if isinstance(st.get("overtopped"), bool):
            e["overtopped"] = prop(st["overtopped"], at)
    return e


def entity(pack: RegionPack, rm: Any, ngsi_type: str, tid: str) -> dict[str, Any] | None:
    """The entity of one URN's (type, twin id), or None when the twin has no such entity of that type."""
    if ngsi_type == COAST_TYPE:
        c = pack.coast.get(tid)  # type: ignore[call-overload]
        return None if c is None else coast_entity(c, rm.get(tid))
    s = pack.sensors.get(tid)  # type: ignore[call-overload]
    if s is None or SENSOR_TYPES.get(s.sensor_kind, ("",))[0] != ngsi_type:
        return None
    return sensor_entity(s, rm.get(tid))


def candidates(pack: RegionPack, types: Iterable[str] | None) -> Iterator[tuple[str, Any]]:
    """(type, pack entity) of every twin entity NGSI-LD shows, of the given types (all when None), in id order."""
    wanted = set(TYPES if types is None else types)
    out: list[tuple[str, str, Any]] = []
    for s in pack.sensors.values():
        t = SENSOR_TYPES.get(s.sensor_kind, ("",))[0]
        if t in wanted:
            out.append((urn(t, s.id), t, s))
    if COAST_TYPE in wanted:
        out += [(urn(COAST_TYPE, c.id), COAST_TYPE, c) for c in pack.coast.values()]
    out.sort(key=lambda x: x[0])
    for _, t, e in out:
        yield t, e


def render(ngsi_type: str, e: Any, rm: Any) -> dict[str, Any]:
    live = rm.get(str(e.id))
    return coast_entity(e, live) if ngsi_type == COAST_TYPE else sensor_entity(e, live)


def key_values(e: dict[str, Any]) -> dict[str, Any]:
    """The simplified (keyValues) representation of a normalized entity (ETSI GS CIM 009, 4.5.4): every attribute
    becomes its value (a Relationship its object), sub-attributes are dropped."""
    out: dict[str, Any] = {}
    for k, v in e.items():
        if k in ("id", "type", "@context") or not isinstance(v, dict) or "type" not in v:
            out[k] = v
        elif v["type"] == "Relationship":
            out[k] = v.get("object")
        elif v["type"] == "LanguageProperty":
            out[k] = v.get("languageMap")
        else:
            out[k] = v.get("value")
    return out


def select_attrs(e: dict[str, Any], attrs: list[str] | None) -> dict[str, Any]:
    if attrs is None:
        return e
    keep = set(attrs)
    return {k: v for k, v in e.items() if k in ("id", "type", "@context") or k in keep}
