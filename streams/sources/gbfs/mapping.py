"""Which GBFS station is which twin sensor: a mapping file, like the LoRaWAN device registry.

``PLIETSCH_GBFS_STATIONS`` points at a JSON file::

    {"system": "donkey_kielsmile",                         a name for logs and dead letters (the feed's system_id)
     "stations": {
       "<station_id>": "kiel:gaarden:sensor:bike-share-001",   GBFS station_id -> a bike_share sensor of the pack
       ...}}

Every sensor must be a ``bike_share`` sensor of the region pack, and at most one station per sensor (two stations folded
into one sensor would overwrite each other's counts). GBFS station ids are opaque strings (the spec promises nothing
about their form), so no rule over ids can place them; an explicit list also keeps a new station of the operator out of
the twin until someone has placed it. A station of the feed that is not in the file is an *unknown station*: counted
(``plietsch_gbfs_unknown_stations``) and dead-lettered once per station with its name and position from
``station_information.json``, so that whoever keeps the file sees what to add.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twin.region import RegionPack


class MappingError(ValueError):
    """The mapping file cannot work: the message names the file, the entry and what to change."""


class MappingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str = Field(default="gbfs", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    stations: dict[str, str]


@dataclass(frozen=True)
class Mapping:
    system: str
    region: str
    sensors: dict[str, str]  # station_id -> sensor id

    def __len__(self) -> int:
        return len(self.sensors)


def load_mapping(path: Path, pack: RegionPack) -> Mapping:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"GBFS station mapping {path} does not exist; set PLIETSCH_GBFS_STATIONS to a JSON file "
                           "(format: docs/gbfs.md)") from None
    except json.JSONDecodeError as exc:
        raise MappingError(f"GBFS station mapping {path} is not JSON: {exc}") from None
    try:
        m = MappingFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise MappingError(f"GBFS station mapping {path}: {problems}") from None
    if not m.stations:
        raise MappingError(f"GBFS station mapping {path} maps no station; add '\"<station_id>\": \"<sensor id>\"' pairs")
    known = {str(k): s for k, s in pack.sensors.items()}
    by_sensor: dict[str, str] = {}
    for station, sensor in m.stations.items():
        where = f"GBFS station mapping {path}, station {station!r}"
        s = known.get(sensor)
        if s is None:
            raise MappingError(f"{where}: sensor {sensor!r} is not in region pack {pack.id!r}; use a bike_share sensor id "
                               "from its sensors.geojson ('plietsch region info')")
        if s.sensor_kind != "bike_share":
            raise MappingError(f"{where}: sensor {sensor} has kind {s.sensor_kind!r}; a GBFS station needs a bike_share sensor")
        if sensor in by_sensor:
            raise MappingError(f"{where}: sensor {sensor} is already the sensor of station {by_sensor[sensor]!r}; one "
                               "station per sensor")
        by_sensor[sensor] = station
    return Mapping(m.system, pack.id, dict(m.stations))
