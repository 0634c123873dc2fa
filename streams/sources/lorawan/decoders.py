"""Payload decoders per device profile: bytes of ``frm_payload`` into a flat dict of named values.

Used only when the network server did not decode the payload itself (TTS ``decoded_payload``, ChirpStack ``object``).

``cayenne-lpp``: Cayenne Low Power Payload (myDevices, "Cayenne LPP" documentation; the format TTS and ChirpStack
decode as well): a sequence of ``channel (1 byte), type (1 byte), value`` with big-endian values. Keys are
``<type name>_<channel>`` as TTS's own Cayenne decoder names them, e.g. ``temperature_3``. Types:

=====  ==================  =====  ===================================
 type  name                bytes  value
=====  ==================  =====  ===================================
   0   digital_in          1      unsigned
   1   digital_out         1      unsigned
   2   analog_in           2      signed, 0.01
   3   analog_out          2      signed, 0.01
 101   luminosity          2      unsigned lux
 102   presence            1      unsigned
 103   temperature         2      signed, 0.1 degrees Celsius
 104   relative_humidity   1      unsigned, 0.5 %
 113   accelerometer       6      3 x signed, 0.001 g  (``_x``, ``_y``, ``_z``)
 115   barometric_pressure 2      unsigned, 0.1 hPa
 134   gyrometer           6      3 x signed, 0.01 deg/s (``_x``, ``_y``, ``_z``)
 136   gps                 9      lat, lon 3 bytes signed 0.0001 deg; alt 3 bytes signed 0.01 m
=====  ==================  =====  ===================================

``water-level-mm``: a custom profile for a simple ultrasonic/pressure gauge: two bytes, unsigned big-endian, the level
in millimetres above the gauge's zero -> ``{"level_mm": n}`` (0xFFFF means "no valid measurement" and is refused).

``network-server``: no local decoder; the network server's decoded payload is required.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DecodeError(ValueError):
    pass


def _signed(b: bytes) -> int:
    return int.from_bytes(b, "big", signed=True)


def _unsigned(b: bytes) -> int:
    return int.from_bytes(b, "big", signed=False)


# type -> (name, size, value from bytes)
LPP_TYPES: dict[int, tuple[str, int, Callable[[bytes], Any]]] = {
    0: ("digital_in", 1, _unsigned),
    1: ("digital_out", 1, _unsigned),
    2: ("analog_in", 2, lambda b: _signed(b) / 100),
    3: ("analog_out", 2, lambda b: _signed(b) / 100),
    101: ("luminosity", 2, _unsigned),
    102: ("presence", 1, _unsigned),
    103: ("temperature", 2, lambda b: _signed(b) / 10),
    104: ("relative_humidity", 1, lambda b: _unsigned(b) / 2),
    113: ("accelerometer", 6, lambda b: {"x": _signed(b[0:2]) / 1000, "y": _signed(b[2:4]) / 1000, "z": _signed(b[4:6]) / 1000}),
    115: ("barometric_pressure", 2, lambda b: _unsigned(b) / 10),
    134: ("gyrometer", 6, lambda b: {"x": _signed(b[0:2]) / 100, "y": _signed(b[2:4]) / 100, "z": _signed(b[4:6]) / 100}),
    136: ("gps", 9, lambda b: {"latitude": _signed(b[0:3]) / 10000, "longitude": _signed(b[3:6]) / 10000,
                               "altitude": _signed(b[6:9]) / 100}),
}


def cayenne_lpp(payload: bytes) -> dict[str, Any]:
    if not payload:
        raise DecodeError("Cayenne LPP payload is empty")
    out: dict[str, Any] = {}
    i = 0
    while i < len(payload):
        if i + 2 > len(payload):
            raise DecodeError(f"Cayenne LPP payload ends inside the header at byte {i} ({payload.hex()})")
        channel, kind = payload[i], payload[i + 1]
        spec = LPP_TYPES.get(kind)
        if spec is None:
            raise DecodeError(f"Cayenne LPP type {kind} at byte {i + 1} is not supported ({payload.hex()}); "
                              f"known types: {sorted(LPP_TYPES)}")
        name, size, read = spec
        raw = payload[i + 2:i + 2 + size]
        if len(raw) < size:
            raise DecodeError(f"Cayenne LPP {name} on channel {channel} needs {size} bytes, {len(raw)} left ({payload.hex()})")
        value = read(raw)
        if isinstance(value, dict):
            for k, v in value.items():
                out[f"{name}_{channel}_{k}"] = v
        else:
            out[f"{name}_{channel}"] = value
        i += 2 + size
    return out


def water_level_mm(payload: bytes) -> dict[str, Any]:
    if len(payload) != 2:
        raise DecodeError(f"water-level-mm payload must be 2 bytes (uint16 mm, big-endian), got {len(payload)}: {payload.hex()}")
    mm = _unsigned(payload)
    if mm == 0xFFFF:
        raise DecodeError("water-level-mm payload is 0xFFFF: the gauge reported no valid measurement")
    return {"level_mm": mm}


def network_server(payload: bytes) -> dict[str, Any]:
    raise DecodeError("profile 'network-server' has no local decoder and the network server sent no decoded payload; "
                      "configure a payload formatter (TTS) or codec (ChirpStack) for the device, or give it a profile "
                      "with a local decoder")


DECODERS: dict[str, Callable[[bytes], dict[str, Any]]] = {
    "cayenne-lpp": cayenne_lpp,
    "water-level-mm": water_level_mm,
    "network-server": network_server,
}
