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


def event_id(sensor_id: str, t: datetime) -> str:
    """Stable per sensor and measurement time: a re-import or a second poll gives the same id."""
    return f"pegelonline-{sensor_id.split(':')[-1]}-{t.isoformat()}"


def parse_entry(row: object, sensor_id: str, mean_cm: float, region: str = "kiel", source: str = SOURCE
                ) -> WaterLevelMeasured | tuple[str, str]:
    """One ``{timestamp, value}`` entry as an event, or ``(kind, reason)`` why not. Kinds: ``missing`` (no timestamp
    or value), ``bad_timestamp``, ``no_offset`` (a time without UTC offset), ``not_a_number``, ``out_of_range``."""
    if not isinstance(row, dict) or "timestamp" not in row or "value" not in row:
        return "missing", f"{row!r}: an entry needs 'timestamp' and 'value'"
    try:
        t = datetime.fromisoformat(str(row["timestamp"]))
    except ValueError as exc:
        return "bad_timestamp", f"{row!r}: timestamp is not ISO 8601: {exc}"
    if t.tzinfo is None:
        return "no_offset", f"timestamp {row['timestamp']!r} has no UTC offset"
    try:
        value = float(row["value"])
    except (TypeError, ValueError):
        return "not_a_number", f"value {row['value']!r} is not a number"
    if not math.isfinite(value):
        return "not_a_number", f"value {row['value']!r} is not a number"
    try:
        return WaterLevelMeasured(entity_id=sensor_id, region=region, occurred_at=t, source=source,
                                  level_m=round((value - mean_cm) / 100.0, 3), event_id=event_id(sensor_id, t))
    except ValueError as exc:
        return "out_of_range", (f"value {row['value']!r} cm at {row['timestamp']}: " + str(exc).replace("\n", " "))[:300]


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
        got = parse_entry(row, sensor_id, mean_cm, region)
        if isinstance(got, WaterLevelMeasured):
            events.append(got)
        else:
            problems.append(f"entry {i}: {got[1]}")
    return events, problems


def fetch(url: str, timeout: float = 20.0) -> bytes:  # pragma: no cover - needs the internet
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()  # type: ignore[no-any-return]


def measurements_url(station_uuid: str, days: int = 1) -> str:
    return f"{BASE_URL}/stations/{station_uuid}/W/measurements.json?start=P{days}D"


