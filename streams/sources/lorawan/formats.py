"""Uplink messages of the two network servers, parsed into one ``Uplink``.

**The Things Stack v3** (MQTT server of TTS, topic ``v3/{application id}@{tenant id}/devices/{device id}/up``), documented
in The Things Stack's "Data Formats" page (integrations/data-formats, "Uplink Messages"): a JSON object with
``end_device_ids`` (``device_id``, ``dev_eui``, ``dev_addr``, ``application_ids.application_id``), ``received_at`` and
``uplink_message`` (``session_key_id``, ``f_port``, ``f_cnt``, ``frm_payload`` base64, ``decoded_payload`` when the
application's payload formatter decoded it, ``rx_metadata`` one entry per gateway, ``received_at``).

**ChirpStack v4** (MQTT integration, topic ``application/{application id}/device/{dev eui}/event/up``), documented in
ChirpStack's "Event types" page (integrations/events) and defined by ``api/proto/integration/integration.proto``
(``UplinkEvent``), shipped compiled in the ``chirpstack-api`` package: protobuf when the integration's ``json`` option is
off, else the protobuf JSON mapping (camelCase: ``deduplicationId``, ``deviceInfo.devEui``, ``fCnt``, ``fPort``, ``data``
base64, ``object`` the codec's decoded payload, ``rxInfo``). Both encodings are parsed into the same ``UplinkEvent``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TTS_TOPIC = re.compile(r"^v3/(?P<app>[^/@]+)(?:@(?P<tenant>[^/]+))?/devices/(?P<dev>[^/]+)/up$")
CHIRPSTACK_TOPIC = re.compile(r"^application/(?P<app>[^/]+)/device/(?P<dev_eui>[0-9a-fA-F]{16})/event/up$")
HEX16 = re.compile(r"^[0-9A-F]{16}$")


class UplinkError(ValueError):
    """An MQTT message that is not a usable uplink; ``kind`` is the dead-letter class."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Uplink:
    network: str  # "tts" or "chirpstack"
    encoding: str  # "json" or "protobuf"
    dev_eui: str  # 16 upper-case hex digits
    f_port: int
    f_cnt: int
    payload: bytes
    decoded: dict[str, Any] | None  # the network server's decoded payload, when it has one
    received_at: datetime
    session: str  # TTS: session_key_id (else dev_addr); ChirpStack: dev_addr
    dedup_key: str  # ChirpStack: its deduplicationId; TTS: dev_eui|session|f_cnt
    gateways: tuple[str, ...] = field(default=())


def parse_time(value: Any, what: str) -> datetime:
    """RFC 3339 with up to nanoseconds (TTS, ChirpStack) into an aware datetime (microseconds)."""
    if not isinstance(value, str) or not value:
        raise UplinkError("format", f"{what} must be an RFC 3339 time, got {value!r}")
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise UplinkError("format", f"{what} {value!r} is not an RFC 3339 time") from None
    if t.tzinfo is None:
        raise UplinkError("format", f"{what} {value!r} has no UTC offset")
    return t.astimezone(UTC)


def _dev_eui(value: Any, what: str) -> str:
    eui = str(value or "").upper()
    if not HEX16.match(eui):
        raise UplinkError("format", f"{what} must be 16 hex digits, got {value!r}")
    return eui


def _b64(value: Any, what: str) -> bytes:
    if value in (None, ""):
        return b""
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise UplinkError("decode", f"{what} is not base64: {str(value)[:60]!r}") from None


def _int(value: Any, what: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UplinkError("format", f"{what} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise UplinkError("format", f"{what} must be an integer, got {value!r}") from None


def parse_tts(topic: str, body: bytes) -> Uplink:
    try:
        msg = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UplinkError("format", f"The Things Stack uplink on {topic} is not JSON: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("uplink_message"), dict):
        raise UplinkError("format", f"The Things Stack message on {topic} has no uplink_message object")
    ids = msg.get("end_device_ids") or {}
    up = msg["uplink_message"]
    eui = _dev_eui(ids.get("dev_eui"), "end_device_ids.dev_eui")
    f_port = _int(up.get("f_port"), "uplink_message.f_port", 0)
    f_cnt = _int(up.get("f_cnt"), "uplink_message.f_cnt", 0)  # proto3 JSON leaves out zero values
    session = str(up.get("session_key_id") or ids.get("dev_addr") or "")
    decoded = up.get("decoded_payload")
    gws = tuple(str(((m or {}).get("gateway_ids") or {}).get("gateway_id", "")) for m in up.get("rx_metadata") or [])
    return Uplink(network="tts", encoding="json", dev_eui=eui, f_port=f_port, f_cnt=f_cnt,
                  payload=_b64(up.get("frm_payload"), "uplink_message.frm_payload"),
                  decoded=decoded if isinstance(decoded, dict) and decoded else None,
                  received_at=parse_time(up.get("received_at") or msg.get("received_at"), "uplink_message.received_at"),
                  session=session, dedup_key=f"tts|{eui}|{session}|{f_cnt}", gateways=gws)


def parse_chirpstack(topic: str, body: bytes) -> Uplink:
    from chirpstack_api import integration
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError

    event = integration.UplinkEvent()
    encoding = "json" if body.lstrip()[:1] == b"{" else "protobuf"  # a protobuf UplinkEvent starts with 0x0a (field 1)
    try:
        if encoding == "json":
            json_format.Parse(body, event, ignore_unknown_fields=True)
        else:
            event.ParseFromString(body)
    except (json_format.ParseError, DecodeError, UnicodeDecodeError, ValueError) as exc:
        raise UplinkError("format", f"ChirpStack uplink event on {topic} is not a valid {encoding} UplinkEvent: "
                                    f"{str(exc)[:200]}") from None
    if not event.deduplication_id:
        raise UplinkError("format", f"ChirpStack uplink event on {topic} has no deduplicationId")
    eui = _dev_eui(event.device_info.dev_eui, "deviceInfo.devEui")
    decoded = json_format.MessageToDict(event.object) if event.HasField("object") else None
    if not event.HasField("time"):
        raise UplinkError("format", f"ChirpStack uplink event on {topic} has no time")
    return Uplink(network="chirpstack", encoding=encoding, dev_eui=eui, f_port=event.f_port, f_cnt=event.f_cnt,
                  payload=bytes(event.data), decoded=decoded or None,
                  received_at=event.time.ToDatetime(tzinfo=UTC), session=event.dev_addr,
                  dedup_key=f"cs|{event.deduplication_id}", gateways=tuple(r.gateway_id for r in event.rx_info))


def parse(topic: str, body: bytes) -> Uplink:
    """The uplink in an MQTT message, by its topic; ``UplinkError`` for anything else."""
    if TTS_TOPIC.match(topic):
        return parse_tts(topic, body)
    if CHIRPSTACK_TOPIC.match(topic):
        return parse_chirpstack(topic, body)
    raise UplinkError("format", f"topic {topic!r} is neither a The Things Stack v3 uplink (v3/APP@TENANT/devices/DEV/up) "
                                "nor a ChirpStack v4 uplink event (application/APP/device/DEVEUI/event/up); "
                                "subscribe to uplink topics only")
