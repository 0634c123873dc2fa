"""PEGELONLINE (WSV) water levels into ``WaterLevelMeasured`` events.

PEGELONLINE REST API v2 gives ``stations.json?includeTimeseries=true&includeCurrentMeasurement=true`` and
``stations/{uuid}/W/measurements.json?start=P31D`` as ``[{"timestamp": ..., "value": ...}]`` in centimetres above gauge
zero (31 days back at most). The twin speaks metres above mean water level: level_m = (value - mean_cm) / 100, with the
station's mean water level (Kiel-Holtenau: about 504 cm, 2010-2020).
"""

from __future__ import annotations

import json
import math
import urllib.request
from dataclasses import dataclass
from datetime import datetime

from twin.events import WaterLevelMeasured

BASE_URL = "https://www.pegelonline.wsv.de/webservices/rest-api/v2"
STATIONS = {  # WSV number -> (sensor id in the Kiel pack, mean water level in cm above gauge zero)
    "9610066": ("kiel:_:sensor:gauge-holtenau", 504.0),
}
SOURCE = "PEGELONLINE (WSV), dl-de/zero-2-0"


class PegelonlineError(ValueError):
    pass


@dataclass(frozen=True)
class Station:
    uuid: str
    number: str
    name: str
    lon: float | None
    lat: float | None


def find_station(stations_json: str | bytes, number: str) -> Station:
    try:
        stations = json.loads(stations_json)
    except json.JSONDecodeError as exc:
        raise PegelonlineError(f"stations list is not JSON: {exc}") from None
    for s in stations if isinstance(stations, list) else []:
        if str(s.get("number")) == number:
            return Station(s["uuid"], number, s.get("longname", s.get("shortname", number)), s.get("longitude"), s.get("latitude"))
    raise PegelonlineError(f"no station with number {number} in the stations list")


def parse_measurements(data: str | bytes, sensor_id: str, mean_cm: float, region: str = "kiel"
                       ) -> tuple[list[WaterLevelMeasured], list[str]]:
    """Events for the valid measurements, and a line per entry that was refused (index, value, reason)."""
    try:
        rows = json.loads(data)
    except json.JSONDecodeError as exc:
        raise PegelonlineError(f"measurements are not JSON: {exc}") from None
    if not isinstance(rows, list):
        raise PegelonlineError(f"measurements must be a JSON list of {{timestamp, value}}, got {type(rows).__name__}")
    events: list[WaterLevelMeasured] = []
    problems: list[str] = []
    for i, row in enumerate(rows):
        try:
            t = datetime.fromisoformat(str(row["timestamp"]))
            value = float(row["value"])
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"entry {i}: {row!r}: {type(exc).__name__}: {exc}")
            continue
        if t.tzinfo is None:
            problems.append(f"entry {i}: timestamp {row['timestamp']!r} has no UTC offset")
            continue
        if not math.isfinite(value):
            problems.append(f"entry {i}: value {row['value']!r} is not a number")
            continue
        try:
            events.append(WaterLevelMeasured(entity_id=sensor_id, region=region, occurred_at=t, source=SOURCE,
                                             level_m=round((value - mean_cm) / 100.0, 3),
                                             event_id=f"pegelonline-{sensor_id.split(':')[-1]}-{t.isoformat()}"))
        except ValueError as exc:
            problems.append(f"entry {i}: {exc}".replace("\n", " ")[:300])
    return events, problems


def fetch(url: str, timeout: float = 20.0) -> bytes:  # pragma: no cover - needs the internet
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()  # type: ignore[no-any-return]


def measurements_url(station_uuid: str, days: int = 1) -> str:
    return f"{BASE_URL}/stations/{station_uuid}/W/measurements.json?start=P{days}D"


