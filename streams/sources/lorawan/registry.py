"""The device registry: which LoRaWAN device (DevEUI) is which twin sensor, and how its payload becomes a reading.

A JSON file (setting ``PLIETSCH_LORAWAN_REGISTRY``)::

    {"devices": [
      {"dev_eui": "70B3D57ED0001001",                 16 hex digits (case does not matter)
       "sensor": "kiel:_:sensor:gauge-holtenau",     a sensor of the region pack; its kind picks the reading event
       "profile": "water-level-mm",                   cayenne-lpp | water-level-mm | network-server (decoders.py)
       "f_ports": [2],                                uplink ports that carry measurements (others: dead letter)
       "fields": {"level_m": {"from": "level_mm", "scale": 0.001, "offset": -5.04}},
       "constants": {}}
    ]}

``fields`` maps each field of the reading event (``WaterLevelMeasured.level_m``, ``ParkingOccupancyReported.occupied``,
...) to a key of the decoded payload (the network server's, else the profile's decoder), as ``"key"`` or
``{"from": key, "scale": 1, "offset": 0}`` (value = decoded * scale + offset); a reading field not named there is
taken from the decoded key of the same name. ``constants`` gives fixed values (a car park's ``capacity``, a counter's
``interval_s``). A missing decoded key, or a value the event refuses, is a dead letter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.sources.lorawan.decoders import DECODERS
from twin.events import READING_BY_SENSOR_KIND, Reading
from twin.region import RegionPack

ENVELOPE = {"event_id", "entity_id", "region", "occurred_at", "source"}


class RegistryError(ValueError):
    pass


class FieldMap(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    from_: str = Field(alias="from", min_length=1)
    scale: float = 1.0
    offset: float = 0.0


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dev_eui: str = Field(pattern=r"^[0-9A-Fa-f]{16}$")
    sensor: str
    profile: str
    f_ports: tuple[int, ...] = Field(min_length=1)
    fields: dict[str, str | FieldMap] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)

    @field_validator("dev_eui")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, v: str) -> str:
        if v not in DECODERS:
            raise ValueError(f"unknown profile {v!r}; known: {', '.join(sorted(DECODERS))}")
        return v

    def mapping(self) -> dict[str, FieldMap]:
        return {k: (FieldMap.model_validate({"from": v}) if isinstance(v, str) else v) for k, v in self.fields.items()}


class RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    devices: list[Device]


class Entry:
    """A registered device, checked against the region pack: its reading type and field mapping."""

    def __init__(self, device: Device, reading: type[Reading], region: str) -> None:
        self.device = device
        self.reading = reading
        self.region = region
        self.mapping = device.mapping()
        measured = [f for f in reading.model_fields if f not in ENVELOPE and f not in device.constants]
        self.measured = {f: self.mapping.get(f, FieldMap.model_validate({"from": f})) for f in measured}
        self.optional = {f for f in measured if not reading.model_fields[f].is_required()}

    def values(self, decoded: dict[str, Any]) -> dict[str, Any]:
        """The reading's fields from a decoded payload; KeyError/TypeError name what is missing or wrong."""
        out = dict(self.device.constants)
        for field_name, fm in self.measured.items():
            if fm.from_ not in decoded:
                if field_name in self.optional:
                    continue
                raise KeyError(f"decoded payload has no {fm.from_!r} for {self.reading.__name__}.{field_name} "
                               f"(keys: {', '.join(sorted(decoded)) or 'none'})")
            raw = decoded[fm.from_]
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise TypeError(f"decoded {fm.from_!r} = {raw!r} is not a number ({self.reading.__name__}.{field_name})")
            value = raw * fm.scale + fm.offset if (fm.scale != 1.0 or fm.offset != 0.0) else raw
            out[field_name] = round(value, 6) if isinstance(value, float) else value
        return out


def load_registry(path: Path, pack: RegionPack) -> dict[str, Entry]:
    """DevEUI -> Entry. Errors name the file, the device and what to change."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"LoRaWAN device registry {path} does not exist; set PLIETSCH_LORAWAN_REGISTRY to a JSON "
                            "file (format: README, section LoRaWAN)") from None
    except json.JSONDecodeError as exc:
        raise RegistryError(f"LoRaWAN device registry {path} is not JSON: {exc}") from None
    try:
        reg = RegistryFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RegistryError(f"LoRaWAN device registry {path}: {problems}") from None
    out: dict[str, Entry] = {}
    for i, dev in enumerate(reg.devices):
        where = f"{path} device #{i} ({dev.dev_eui})"
        if dev.dev_eui in out:
            raise RegistryError(f"{where}: DevEUI listed twice")
        sensor = pack.sensors.get(dev.sensor)  # type: ignore[call-overload]
        if sensor is None:
            raise RegistryError(f"{where}: sensor {dev.sensor!r} is not in region pack {pack.id!r}; use an id from its "
                                "sensors.geojson ('plietsch region info')")
        reading = READING_BY_SENSOR_KIND.get(sensor.sensor_kind)
        if reading is None:
            raise RegistryError(f"{where}: sensor {dev.sensor} has kind {sensor.sensor_kind!r}, which has no reading event")
        unknown = [f for f in (*dev.fields, *dev.constants) if f not in reading.model_fields or f in ENVELOPE]
        if unknown:
            measured = [f for f in reading.model_fields if f not in ENVELOPE]
            raise RegistryError(f"{where}: {', '.join(unknown)} not a field of {reading.__name__} (fields: {', '.join(measured)})")
        out[dev.dev_eui] = Entry(dev, reading, pack.id)
    return out
