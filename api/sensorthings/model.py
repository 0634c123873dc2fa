"""The twin's sensors as SensorThings entities (OGC 18-088, section 8), per role.

Planners and operators (sensor-level, as on NGSI-LD): one **Thing** per sensor of the region pack (id: the twin id),
with one **Location** (its point; the same id) and one **FeatureOfInterest** (its point: a sensor observes its own
place; the same id); one **Sensor** per sensor kind (the procedure: id the kind, e.g. ``water_level``); one
**ObservedProperty** per measured quantity (id the NGSI-LD attribute name, definition its Smart Data Models IRI, the
same as ``api.ngsild.context.TERMS``); one **Datastream** per sensor and quantity (id ``<sensor id>:<quantity>``)
with its unit (UCUM symbol, QUDT unit IRI) and ``OM_Measurement``. Observations come from history and the read model
(``api.sensorthings.observations``).

The public (no login) gets what ``api.privacy.public_summary`` gives it and nothing else: one Thing per neighbourhood
(its polygon as Location and FeatureOfInterest) with a Datastream per public aggregate it has (parking occupancy in %,
traffic vehicles per 15 min with "<5", air quality hourly means), and one Thing for the coast (the highest water level
over all segments); each Datastream has one Observation, the current figure (the summary gives no history). Sensor-level
readings, weather and bike share, citizen reports and events are never in it.

HistoricalLocations are always empty: no sensor of the twin moves (the region pack gives each its one place), so there
is no location history to tell.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from api.ngsild.context import TERMS
from api.ngsild.entities import SENSOR_TYPES
from twin.region import RegionPack

SETS = ("Things", "Locations", "HistoricalLocations", "Datastreams", "Sensors", "ObservedProperties", "Observations",
        "FeaturesOfInterest")
SINGULAR = {"Things": "Thing", "Locations": "Location", "HistoricalLocations": "HistoricalLocation",
            "Datastreams": "Datastream", "Sensors": "Sensor", "ObservedProperties": "ObservedProperty",
            "Observations": "Observation", "FeaturesOfInterest": "FeatureOfInterest"}
SET_OF = {v: k for k, v in SINGULAR.items()}
# navigation properties per entity set (OGC 18-088 8.2): name -> the set it leads to; singular names lead to one
NAVIGATION: dict[str, dict[str, str]] = {
    "Things": {"Datastreams": "Datastreams", "Locations": "Locations", "HistoricalLocations": "HistoricalLocations"},
    "Locations": {"Things": "Things", "HistoricalLocations": "HistoricalLocations"},
    "HistoricalLocations": {"Thing": "Things", "Locations": "Locations"},
    "Datastreams": {"Thing": "Things", "Sensor": "Sensors", "ObservedProperty": "ObservedProperties",
                    "Observations": "Observations"},
    "Sensors": {"Datastreams": "Datastreams"},
    "ObservedProperties": {"Datastreams": "Datastreams"},
    "Observations": {"Datastream": "Datastreams", "FeatureOfInterest": "FeaturesOfInterest"},
    "FeaturesOfInterest": {"Observations": "Observations"},
}


def paths(base: str) -> list[str]:
    """Every route path of the SensorThings API under *base*: the root, a set, an entity, its navigation."""
    return [base, f"{base}/{{entitySet}}", f"{base}/{{entitySet}}({{id}})", f"{base}/{{entitySet}}({{id}})/{{navigation}}"]


ALL_NAVIGATIONS = frozenset(n for navs in NAVIGATION.values() for n in navs)
MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
COUNT_OBSERVATION = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_CountObservation"
ANY_OBSERVATION = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Observation"
GEOJSON = "application/geo+json"
QUDT = "http://qudt.org/vocab/unit/"


@dataclass(frozen=True)
class Unit:
    name: str
    symbol: str  # UCUM
    qudt: str

    def json(self) -> dict[str, str]:
        return {"name": self.name, "symbol": self.symbol, "definition": QUDT + self.qudt}


COUNT = Unit("count", "{count}", "NUM")
UNITS: dict[str, Unit] = {
    "height": Unit("metre", "m", "M"), "intensity": COUNT, "averageVehicleSpeed": Unit("kilometre per hour", "km/h", "KiloM-PER-HR"),
    "occupiedSpotNumber": COUNT, "totalSpotNumber": COUNT,
    "no2": Unit("microgram per cubic metre", "ug/m3", "MicroGM-PER-M3"),
    "pm10": Unit("microgram per cubic metre", "ug/m3", "MicroGM-PER-M3"),
    "pm25": Unit("microgram per cubic metre", "ug/m3", "MicroGM-PER-M3"),
    "temperature": Unit("degree Celsius", "Cel", "DEG_C"), "windSpeed": Unit("metre per second", "m/s", "M-PER-SEC"),
    "windDirection": Unit("degree", "deg", "DEG"), "precipitation": Unit("millimetre", "mm", "MilliM"),
    "availableBikeNumber": COUNT, "freeSlotNumber": COUNT,
}
KIND_TEXT = {"water_level": "water level gauge", "traffic_count": "traffic counter", "parking": "car park occupancy",
             "air_quality": "air quality station", "weather": "weather station", "bike_share": "bike hire docking station"}
# the public's aggregates (api.privacy.public_summary keys): key -> (name, unit, observation type, definition)
PUBLIC_METRICS: dict[str, tuple[str, Unit, str]] = {
    "parking_occupancy_pct": ("parking occupancy", Unit("percent", "%", "PERCENT"), MEASUREMENT),
    "traffic_vehicles_15min": ("vehicles per 15 minutes", COUNT, ANY_OBSERVATION),  # "<5" under 5: not a number
    "air_no2_ugm3_hourly_mean": ("NO2, hourly mean", UNITS["no2"], MEASUREMENT),
    "air_pm10_ugm3_hourly_mean": ("PM10, hourly mean", UNITS["pm10"], MEASUREMENT),
    "air_pm25_ugm3_hourly_mean": ("PM2.5, hourly mean", UNITS["pm25"], MEASUREMENT),
    "water_level_m": ("highest water level at the coast", UNITS["height"], MEASUREMENT),
}
PUBLIC_DEFINITION = "urn:plietsch:vocab:public:"


@dataclass
class Ent:
    """One entity: its set, id, properties (without the @iot ones) and navigation targets (a list of ids for a plural
    navigation, an id or None for a singular one)."""

    set: str
    id: str
    props: dict[str, Any]
    links: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stream:
    """What an Observation of a Datastream is made of: a sensor's reading value (planners), or a public figure."""

    sensor: str  # the twin id of the sensor (or of the Thing, public)
    kind: str  # the sensor kind ("" for public figures)
    twin_key: str  # the key in the reading's values (or in the public summary)
    foi: str


@dataclass
class Graph:
    """All entities but Observations, of one role's view."""

    public: bool
    sets: dict[str, dict[str, Ent]]
    streams: dict[str, Stream]  # Datastream id -> what its observations are
    public_values: dict[str, Any] = field(default_factory=dict)  # public Datastream id -> the current figure
    now: datetime | None = None

    def add(self, e: Ent) -> Ent:
        return self.sets[e.set].setdefault(e.id, e)

    def get(self, set_name: str, eid: str) -> Ent | None:
        return self.sets[set_name].get(eid)


def _utc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _empty() -> dict[str, dict[str, Ent]]:
    return {s: {} for s in SETS if s != "Observations"}


def observed_property(attr: str, label: str) -> Ent:
    return Ent("ObservedProperties", attr, {"name": attr, "definition": TERMS.get(attr, PUBLIC_DEFINITION + attr),
                                            "description": label}, {"Datastreams": []})


def sensor_graph(pack: RegionPack, rm: Any, archive_start: str | None) -> Graph:
    g = Graph(False, _empty(), {})
    for s in sorted(pack.sensors.values(), key=lambda s: str(s.id)):
        if s.sensor_kind not in SENSOR_TYPES:
            continue
        sid, ngsi_type = str(s.id), SENSOR_TYPES[s.sensor_kind][0]
        point = {"type": "Point", "coordinates": [s.lon, s.lat]}
        live = rm.get(sid)
        state = live["state"] if live is not None else {}
        latest = state.get("observed_at") if isinstance(state.get("observed_at"), str) else None
        props = {"kind": s.sensor_kind, "type": ngsi_type, "synthetic": s.synthetic,
                 "neighbourhood": str(s.neighbourhood) if s.neighbourhood else None}
        thing = g.add(Ent("Things", sid, {"name": s.name or sid, "description": f"{KIND_TEXT[s.sensor_kind]} {s.name or sid}",
                                          "properties": props},
                          {"Locations": [sid], "HistoricalLocations": [], "Datastreams": []}))
        g.add(Ent("Locations", sid, {"name": s.name or sid, "description": f"where {s.name or sid} stands",
                                     "encodingType": GEOJSON, "location": point}, {"Things": [sid], "HistoricalLocations": []}))
        g.add(Ent("FeaturesOfInterest", sid, {"name": s.name or sid, "description": f"the place {s.name or sid} observes",
                                              "encodingType": GEOJSON, "feature": point}, {"Observations": []}))
        kind_sensor = g.add(Ent("Sensors", s.sensor_kind, {
            "name": KIND_TEXT[s.sensor_kind], "description": f"the twin's {KIND_TEXT[s.sensor_kind]}s ({ngsi_type})",
            "encodingType": "text/html", "metadata": TERMS.get(ngsi_type, "")}, {"Datastreams": []}))
        for m in SENSOR_TYPES[s.sensor_kind][1]:
            op = g.add(observed_property(m.attr, m.attr))
            dsid = f"{sid}:{m.attr}"
            unit = UNITS[m.attr]
            start = archive_start or latest
            period = f"{start}/{_utc(datetime.fromisoformat(latest))}" if latest and start else None
            g.add(Ent("Datastreams", dsid, {
                "name": f"{s.name or sid}: {m.attr}", "description": f"{m.attr} of {s.name or sid} in {unit.name}",
                "unitOfMeasurement": unit.json(), "observationType": COUNT_OBSERVATION if unit is COUNT else MEASUREMENT,
                "observedArea": point, "phenomenonTime": period, "resultTime": period,
                "properties": {"twinKey": m.twin}},
                {"Thing": sid, "Sensor": s.sensor_kind, "ObservedProperty": m.attr, "Observations": []}))
            g.streams[dsid] = Stream(sid, s.sensor_kind, m.twin, sid)
            thing.links["Datastreams"].append(dsid)
            kind_sensor.links["Datastreams"].append(dsid)
            op.links["Datastreams"].append(dsid)
    return g


def _polygon(points: Iterable[tuple[float, float]]) -> dict[str, Any]:
    ring = [list(p) for p in points]
    if ring and ring[0] != ring[-1]:
        ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def public_graph(pack: RegionPack, summary: dict[str, Any], now: datetime) -> Graph:
    """The public's view, from ``api.privacy.public_summary`` only."""
    g = Graph(True, _empty(), {}, now=now)
    places: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []
    for h in summary["neighbourhoods"]:
        hood = pack.neighbourhoods.get(h["id"])
        if hood is not None:
            places.append((h["id"], h["name"] or h["id"], _polygon(hood.polygon), h))
    coast = [list(p) for c in pack.coast.values() for p in c.line]
    if coast:
        xs, ys = [p[0] for p in coast], [p[1] for p in coast]
        box = _polygon([(min(xs), min(ys)), (max(xs), min(ys)), (max(xs), max(ys)), (min(xs), max(ys))])
        places.append((f"{pack.id}:coast", "Coast", box, {"water_level_m": summary["coast"]["water_level_m"]}))
    for tid, name, geom, figures in places:
        thing = g.add(Ent("Things", tid, {"name": name, "description": f"public figures of {name} (aggregates)",
                                          "properties": {"aggregate": True}},
                          {"Locations": [tid], "HistoricalLocations": [], "Datastreams": []}))
        g.add(Ent("Locations", tid, {"name": name, "description": f"the area of {name}", "encodingType": GEOJSON,
                                     "location": geom}, {"Things": [tid], "HistoricalLocations": []}))
        g.add(Ent("FeaturesOfInterest", tid, {"name": name, "description": f"the area of {name}", "encodingType": GEOJSON,
                                              "feature": geom}, {"Observations": []}))
        for key, (label, unit, otype) in PUBLIC_METRICS.items():
            if key not in figures:
                continue
            sensor = g.add(Ent("Sensors", key, {"name": f"aggregate: {label}", "description":
                                                f"{label}, aggregated by the twin for the public (api/privacy.py)",
                                                "encodingType": "text/html", "metadata": "urn:plietsch:privacy"},
                               {"Datastreams": []}))
            op = g.add(observed_property(key, label))
            dsid = f"{tid}:{key}"
            g.add(Ent("Datastreams", dsid, {"name": f"{name}: {label}", "description": f"{label} in {name}",
                                            "unitOfMeasurement": unit.json(), "observationType": otype,
                                            "observedArea": geom, "phenomenonTime": None, "resultTime": None,
                                            "properties": {"aggregate": True}},
                      {"Thing": tid, "Sensor": key, "ObservedProperty": key, "Observations": []}))
            g.streams[dsid] = Stream(tid, "", key, tid)
            g.public_values[dsid] = figures[key]
            for e in (thing, sensor, op):
                e.links["Datastreams"].append(dsid)
    return g
