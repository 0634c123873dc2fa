"""The JSON-LD @context of the twin's NGSI-LD entities: the NGSI-LD core context plus the terms of the Smart Data
Models the twin uses (their IRIs as the models' own contexts define them, e.g.
https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld) and the twin's own
terms where no model fits (``PLIETSCH``). Served at ``CONTEXT_PATH``; ``application/json`` answers name it in a
``Link`` header, ``application/ld+json`` answers carry it as ``@context``."""

from __future__ import annotations

from typing import Any

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.6.jsonld"
CONTEXT_PATH = "/ngsi-ld/v1/jsonldContexts/plietsch.jsonld"
LINK_REL = "http://www.w3.org/ns/json-ld#context"
PLIETSCH = "urn:plietsch:vocab:"  # the twin's own terms, where no Smart Data Model fits
SDM = "https://smartdatamodels.org/"

TERMS: dict[str, str] = {
    # types
    "WaterObserved": SDM + "dataModel.Environment/WaterObserved",
    "AirQualityObserved": SDM + "dataModel.Environment/AirQualityObserved",
    "TrafficFlowObserved": SDM + "dataModel.Transportation/TrafficFlowObserved",
    "OffStreetParking": SDM + "dataModel.Parking/OffStreetParking",
    "WeatherObserved": SDM + "dataModel.Weather/WeatherObserved",
    "BikeHireDockingStation": SDM + "dataModel.Transportation/BikeHireDockingStation",
    "CoastSegment": PLIETSCH + "CoastSegment",
    # attributes
    "name": "https://schema.org/name",
    "dateObserved": SDM + "dateObserved",
    "dateObservedFrom": SDM + "dataModel.Transportation/dateObservedFrom",
    "dateObservedTo": SDM + "dataModel.Transportation/dateObservedTo",
    "height": SDM + "dataModel.Environment/height",
    "no2": SDM + "dataModel.Environment/no2",
    "pm10": SDM + "dataModel.Environment/pm10",
    "pm25": SDM + "dataModel.Environment/pm25",
    "intensity": SDM + "dataModel.Transportation/intensity",
    "averageVehicleSpeed": SDM + "dataModel.Transportation/averageVehicleSpeed",
    "availableSpotNumber": SDM + "dataModel.Parking/availableSpotNumber",
    "occupiedSpotNumber": SDM + "dataModel.Parking/occupiedSpotNumber",
    "totalSpotNumber": SDM + "dataModel.Parking/totalSpotNumber",
    "occupancy": SDM + "dataModel.Parking/occupancy",
    "temperature": SDM + "dataModel.Weather/temperature",
    "windSpeed": SDM + "dataModel.Weather/windSpeed",
    "windDirection": SDM + "dataModel.Weather/windDirection",
    "precipitation": SDM + "dataModel.Weather/precipitation",
    "availableBikeNumber": SDM + "dataModel.Transportation/availableBikeNumber",
    "freeSlotNumber": SDM + "dataModel.Transportation/freeSlotNumber",
    "refRoadSegment": SDM + "dataModel.Transportation/refRoadSegment",
    "synthetic": PLIETSCH + "synthetic",
    "coastType": PLIETSCH + "coastType",
    "crestHeight": PLIETSCH + "crestHeight",
    "waterLevel": PLIETSCH + "waterLevel",
    "freeboard": PLIETSCH + "freeboard",
    "surgeClass": PLIETSCH + "surgeClass",
    "overtopped": PLIETSCH + "overtopped",
    "refWaterObserved": PLIETSCH + "refWaterObserved",
}
EXPANDED: dict[str, str] = {iri: term for term, iri in TERMS.items()}


def document() -> dict[str, Any]:
    """The context document served at CONTEXT_PATH."""
    return {"@context": [CORE_CONTEXT, dict(TERMS)]}


def context_url(base_url: str) -> str:
    return base_url.rstrip("/") + CONTEXT_PATH


def link_header(base_url: str) -> str:
    return f'<{context_url(base_url)}>; rel="{LINK_REL}"; type="application/ld+json"'


def compact(term: str) -> str:
    """A type or attribute name as the context's short term (a full IRI of a known term is accepted too)."""
    return EXPANDED.get(term, term)
