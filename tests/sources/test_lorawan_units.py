"""The LoRaWAN source's parts without brokers: formats, decoders, registry, counting once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chirpstack_api import integration
from google.protobuf import json_format

from streams.sources.lorawan.convert import Converter, SeenWindow
from streams.sources.lorawan.decoders import DecodeError, cayenne_lpp, water_level_mm
from streams.sources.lorawan.formats import UplinkError, parse
from streams.sources.lorawan.registry import RegistryError, load_registry
from tests.helpers import ROOT
from twin.events import ParkingOccupancyReported, WaterLevelMeasured, WeatherObserved
from twin.region import bundled_pack

FIX = ROOT / "tests" / "fixtures" / "lorawan"
TTS_TOPIC = "v3/plietsch-kiel@kielregion/devices/gauge-leuchtturm/up"


def cs_topic(eui: str) -> str:
    return f"application/a5a4f1c4-0d4b-4fa8-9b6a-d0b5c7b4c3f1/device/{eui}/event/up"


def protobuf_of(name: str) -> bytes:
    return json_format.Parse((FIX / name).read_bytes(), integration.UplinkEvent()).SerializeToString()


@pytest.fixture(scope="module")
def pack():  # type: ignore[no-untyped-def]
    return bundled_pack()


def test_cayenne_lpp_decodes_the_documented_types() -> None:
    assert cayenne_lpp(bytes.fromhex("0167007d020202d503025fe604020028")) == {
        "temperature_1": 12.5, "analog_in_2": 7.25, "analog_in_3": 245.5, "analog_in_4": 0.4}
    assert cayenne_lpp(bytes.fromhex("0167ffd7")) == {"temperature_1": -4.1}
    assert cayenne_lpp(bytes.fromhex("03670110056700ff")) == {"temperature_3": 27.2, "temperature_5": 25.5}
    assert cayenne_lpp(bytes.fromhex("0168280673 2767")) == {"relative_humidity_1": 20.0, "barometric_pressure_6": 1008.7}
    assert cayenne_lpp(bytes.fromhex("018806765ff2960a0003e8")) == {
        "gps_1_latitude": 42.3519, "gps_1_longitude": -87.9094, "gps_1_altitude": 10.0}
    assert cayenne_lpp(bytes.fromhex("067104d2fb2e0000")) == {
        "accelerometer_6_x": 1.234, "accelerometer_6_y": -1.234, "accelerometer_6_z": 0.0}
    with pytest.raises(DecodeError, match="needs 2 bytes"):
        cayenne_lpp(bytes.fromhex("016700"))
    with pytest.raises(DecodeError, match="type 99"):
        cayenne_lpp(bytes.fromhex("016300"))
    with pytest.raises(DecodeError, match="empty"):
        cayenne_lpp(b"")


def test_water_level_profile() -> None:
    assert water_level_mm(b"\x17\x70") == {"level_mm": 6000}
    with pytest.raises(DecodeError, match="2 bytes"):
        water_level_mm(b"\x17\x70\x01")
    with pytest.raises(DecodeError, match="no valid measurement"):
        water_level_mm(b"\xff\xff")


def test_tts_uplink_is_parsed() -> None:
    up = parse(TTS_TOPIC, (FIX / "tts_water_level_gw1.json").read_bytes())
    assert (up.network, up.dev_eui, up.f_port, up.f_cnt, up.payload) == ("tts", "70B3D57ED0001001", 2, 42, b"\x17\x70")
    assert up.received_at.isoformat() == "2026-11-23T08:00:01.123456+00:00" and up.decoded is None
    assert up.gateways == ("kiel-gw-001",)
    other_gateway = parse(TTS_TOPIC, (FIX / "tts_water_level_gw2.json").read_bytes())
    assert other_gateway.dedup_key == up.dedup_key and other_gateway.gateways == ("kiel-gw-002",)
    decoded = parse(TTS_TOPIC, (FIX / "tts_parking_decoded.json").read_bytes())
    assert decoded.decoded == {"occupied": 87, "battery_v": 3.6}
    with pytest.raises(UplinkError, match="not JSON") as err:
        parse(TTS_TOPIC, b"\x00garbage")
    assert err.value.kind == "format"
    with pytest.raises(UplinkError, match="dev_eui must be 16 hex digits"):
        parse(TTS_TOPIC, json.dumps({"end_device_ids": {"dev_eui": "XYZ"}, "uplink_message": {}}).encode())


def test_chirpstack_json_and_protobuf_are_the_same_uplink() -> None:
    body = (FIX / "chirpstack_weather_cayenne.json").read_bytes()
    as_json = parse(cs_topic("0004a30b00f1a001"), body)
    as_pb = parse(cs_topic("0004a30b00f1a001"), protobuf_of("chirpstack_weather_cayenne.json"))
    assert (as_json.encoding, as_pb.encoding) == ("json", "protobuf")
    assert as_json.dedup_key == as_pb.dedup_key == "cs|3c5e1a7d-2f3b-4b8e-9d1c-6a0e8f1b2c3d"
    for up in (as_json, as_pb):
        assert (up.network, up.dev_eui, up.f_port, up.f_cnt, up.session) == ("chirpstack", "0004A30B00F1A001", 1, 118, "00189440")
        assert up.received_at.isoformat() == "2026-11-23T08:00:03.250000+00:00"
        assert up.gateways == ("0016c001ff10d3f6", "0016c001ff10d3f7") and up.decoded is None
    obj = parse(cs_topic("0004a30b00f1a002"), protobuf_of("chirpstack_parking_object.json"))
    assert obj.decoded == {"occupied": 65.0, "capacity": 200.0}
    with pytest.raises(UplinkError, match="not a valid protobuf UplinkEvent"):
        parse(cs_topic("0004a30b00f1a001"), b"\x0a\xff\xff\xff")
    with pytest.raises(UplinkError, match="neither"):
        parse("application/x/device/0004a30b00f1a001/event/join", body)


def test_registry_maps_to_pack_sensors_and_refuses_bad_entries(pack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reg = load_registry(FIX / "registry.json", pack)
    assert set(reg) == {"70B3D57ED0001001", "70B3D57ED0001002", "0004A30B00F1A001", "0004A30B00F1A002"}
    assert reg["70B3D57ED0001001"].reading is WaterLevelMeasured
    assert reg["0004A30B00F1A001"].reading is WeatherObserved
    assert reg["70B3D57ED0001002"].reading is ParkingOccupancyReported

    def bad(device: dict, match: str) -> None:
        p = tmp_path / "reg.json"
        p.write_text(json.dumps({"devices": [device]}))
        with pytest.raises(RegistryError, match=match):
            load_registry(p, pack)

    ok = {"dev_eui": "70B3D57ED0009999", "sensor": "kiel:_:sensor:gauge-holtenau", "profile": "water-level-mm", "f_ports": [2]}
    bad({**ok, "sensor": "kiel:_:sensor:nowhere"}, "not in region pack 'kiel'")
    bad({**ok, "profile": "morse"}, "unknown profile 'morse'")
    bad({**ok, "fields": {"depth": "level_mm"}}, "depth not a field of WaterLevelMeasured")
    bad({**ok, "dev_eui": "1234"}, "dev_eui")
    with pytest.raises(RegistryError, match="does not exist"):
        load_registry(tmp_path / "missing.json", pack)


def test_converter_counts_once_and_explains_dead_letters(pack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reg = load_registry(FIX / "registry.json", pack)
    conv = Converter(reg, SeenWindow(100, tmp_path / "seen.log"))
    first = conv.handle(TTS_TOPIC, (FIX / "tts_water_level_gw1.json").read_bytes())
    assert first.kind == "reading" and isinstance(first.reading, WaterLevelMeasured)
    assert first.reading.level_m == 0.96 and first.reading.entity_id == "kiel:_:sensor:gauge-leuchtturm"
    assert conv.handle(TTS_TOPIC, (FIX / "tts_water_level_gw2.json").read_bytes()).kind == "duplicate"  # before the flush
    conv.committed([first.key])
    assert conv.handle(TTS_TOPIC, (FIX / "tts_water_level_gw1.json").read_bytes()).kind == "duplicate"  # retransmission
    # a restarted source reads the window back from its file
    again = Converter(reg, SeenWindow(100, tmp_path / "seen.log"))
    assert again.handle(TTS_TOPIC, (FIX / "tts_water_level_gw2.json").read_bytes()).kind == "duplicate"

    weather = conv.handle(cs_topic("0004a30b00f1a001"), (FIX / "chirpstack_weather_cayenne.json").read_bytes()).reading
    assert isinstance(weather, WeatherObserved)
    assert (weather.temperature_c, weather.wind_speed_ms, weather.wind_dir_deg, weather.precipitation_mm) == (12.5, 7.25, 245.5, 0.4)
    parking = conv.handle(cs_topic("0004a30b00f1a002"), protobuf_of("chirpstack_parking_object.json")).reading
    assert isinstance(parking, ParkingOccupancyReported) and (parking.occupied, parking.capacity) == (65, 200)

    def dead(topic: str, name: str) -> tuple[str, str]:
        o = conv.handle(topic, (FIX / name).read_bytes())
        assert o.kind == "dead" and o.dead is not None, o
        assert o.dead.original_value == (FIX / name).read_bytes() and o.dead.processor == "lorawan"
        return o.dead.error_type, o.dead.reason

    kind, reason = dead(TTS_TOPIC, "tts_unknown_device.json")
    assert kind == "unknown_device" and "70B3D57ED00FFFFF" in reason
    kind, reason = dead(TTS_TOPIC, "tts_broken_payload.json")
    assert kind == "decode" and "2 bytes" in reason and "f_cnt 43" in reason
    kind, reason = dead(TTS_TOPIC, "tts_wrong_port.json")
    assert kind == "wrong_port" and "FPort 5" in reason
    kind, reason = dead(cs_topic("0004a30b00f1a001"), "chirpstack_broken_cayenne.json")
    assert kind == "decode" and "temperature on channel 1 needs 2 bytes" in reason


def test_window_is_bounded(tmp_path: Path) -> None:
    w = SeenWindow(3, tmp_path / "seen.log")
    for i in range(10):
        w.add([f"k{i}"])
    assert len(w) == 3 and "k9" in w and "k6" not in w
    assert len((tmp_path / "seen.log").read_text().splitlines()) <= 6  # compacted when it doubles
    assert set(SeenWindow(3, tmp_path / "seen.log")._keys) == {"k7", "k8", "k9"}


def test_a_failure_inside_the_source_is_kept_as_a_dead_letter(pack, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    reg = load_registry(FIX / "registry.json", pack)
    conv = Converter(reg, SeenWindow(100))

    def broken(decoded: dict) -> dict:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(reg["70B3D57ED0001001"], "values", broken)
    o = conv.handle(TTS_TOPIC, (FIX / "tts_water_level_gw1.json").read_bytes())
    assert o.kind == "dead" and o.dead is not None and o.dead.error_type == "internal"
    assert "ZeroDivisionError: division by zero" in o.dead.reason and o.key  # counted once like any other uplink
