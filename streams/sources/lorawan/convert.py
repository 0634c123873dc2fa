"""One MQTT message into at most one reading or one dead letter, with a bounded window of uplinks already seen.

Counted once: a ChirpStack event by its ``deduplicationId`` (ChirpStack already merges the copies of one uplink from
several gateways into one event; a redelivered event keeps its id); a TTS uplink by ``(dev_eui, session_key_id, f_cnt)``,
the same for the copies from several gateways and for a retransmission. The window holds the last ``max_keys`` keys
(bounded memory) and is kept in an append-only file (``<data dir>/lorawan/seen.log``, compacted when it doubles), so a
restart of the source still knows them. Every reading's ``event_id`` is derived from the same key, so a duplicate that
gets past the window (older than ``max_keys`` uplinks, or a crash between the Kafka flush and the append) carries the
same event id as the first copy.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from streams.sources.lorawan.decoders import DECODERS, DecodeError
from streams.sources.lorawan.formats import Uplink, UplinkError, parse
from streams.sources.lorawan.registry import Entry
from twin.events import DeadLettered, Reading

PROCESSOR = "lorawan"


class SeenWindow:
    def __init__(self, max_keys: int = 50_000, path: Path | None = None) -> None:
        self.max_keys = max_keys
        self.path = path
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lines = 0
        if path is not None and path.is_file():
            with path.open(encoding="utf-8") as f:
                for line in f:
                    self._lines += 1
                    self._remember(line.rstrip("\n"))

    def _remember(self, key: str) -> None:
        if not key:
            return
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, keys: list[str]) -> None:
        """Remember *keys* (after their readings are in Kafka) and append them to the file."""
        for k in keys:
            self._remember(k)
        if self.path is None or not keys:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._lines + len(keys) > 2 * self.max_keys:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(f"{k}\n" for k in self._keys), encoding="utf-8")
            tmp.replace(self.path)
            self._lines = len(self._keys)
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(f"{k}\n" for k in keys))
        self._lines += len(keys)


@dataclass
class Outcome:
    kind: str  # "reading", "duplicate", "dead"
    network: str = "unknown"
    reading: Reading | None = None
    dead: DeadLettered | None = None
    key: str = ""
    unknown_device: bool = False


def event_id(dedup_key: str) -> str:
    return "lorawan-" + hashlib.sha256(dedup_key.encode()).hexdigest()[:40]


def dead_letter(mqtt_topic: str, body: bytes, kind: str, reason: str, dev_eui: str | None = None) -> DeadLettered:
    digest = hashlib.sha256(body).hexdigest()
    did = str(uuid.uuid5(uuid.NAMESPACE_URL, f"plietsch-dead|{PROCESSOR}|{mqtt_topic}|{digest}"))  # same message, same id
    return DeadLettered(dead_letter_id=did, original_topic=f"mqtt:{mqtt_topic}", original_partition=-1, original_offset=-1,
                        original_key=dev_eui.encode() if dev_eui else None, original_value=body, batch_index=-1,
                        error_type=kind, reason=reason[:1000], processor=PROCESSOR)


class Converter:
    def __init__(self, registry: dict[str, Entry], seen: SeenWindow) -> None:
        self.registry = registry
        self.seen = seen
        self.pending: set[str] = set()  # keys of readings handed out but not yet flushed to Kafka

    def handle(self, topic: str, body: bytes) -> Outcome:
        network = "tts" if topic.startswith("v3/") else "chirpstack" if topic.startswith("application/") else "unknown"
        try:
            up = parse(topic, body)
        except UplinkError as exc:
            return Outcome("dead", network, dead=dead_letter(topic, body, exc.kind, str(exc)))
        if up.dedup_key in self.seen or up.dedup_key in self.pending:
            return Outcome("duplicate", network, key=up.dedup_key)
        self.pending.add(up.dedup_key)
        try:
            out = self._reading(topic, body, up)
        except Exception as exc:  # a bug here must not stop the source nor lose the message: keep it with the error
            out = Outcome("dead", up.network, dead=dead_letter(
                topic, body, "internal", f"DevEUI {up.dev_eui} f_cnt {up.f_cnt}: the LoRaWAN source failed on this uplink: "
                                         f"{type(exc).__name__}: {exc}; please report it with this dead letter", up.dev_eui))
        out.key = up.dedup_key
        return out

    def _reading(self, topic: str, body: bytes, up: Uplink) -> Outcome:
        entry = self.registry.get(up.dev_eui)
        if entry is None:
            return Outcome("dead", up.network, unknown_device=True, dead=dead_letter(
                topic, body, "unknown_device", f"DevEUI {up.dev_eui} is not in the LoRaWAN device registry; add it with "
                                               "its twin sensor and profile (README, section LoRaWAN)", up.dev_eui))
        dev = entry.device
        if up.f_port not in dev.f_ports:
            return Outcome("dead", up.network, dead=dead_letter(
                topic, body, "wrong_port", f"DevEUI {up.dev_eui} sent on FPort {up.f_port}, but its registry entry "
                                           f"expects measurements on {list(dev.f_ports)}", up.dev_eui))
        try:
            decoded = up.decoded if up.decoded is not None else DECODERS[dev.profile](up.payload)
            values = entry.values(decoded)
        except (DecodeError, KeyError, TypeError) as exc:
            source = "network server's decoded payload" if up.decoded is not None else f"profile {dev.profile}"
            msg = exc.args[0] if isinstance(exc, KeyError) else str(exc)
            return Outcome("dead", up.network, dead=dead_letter(
                topic, body, "decode", f"DevEUI {up.dev_eui} FPort {up.f_port} f_cnt {up.f_cnt} ({source}): {msg}", up.dev_eui))
        try:
            reading = entry.reading(event_id=event_id(up.dedup_key), entity_id=dev.sensor, region=entry.region,
                                    occurred_at=up.received_at, source=f"LoRaWAN {up.network} {up.dev_eui}", **values)
        except (ValidationError, ValueError) as exc:
            text = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']} (got {e.get('input')!r})"
                             for e in exc.errors()) if isinstance(exc, ValidationError) else str(exc)
            return Outcome("dead", up.network, dead=dead_letter(
                topic, body, "validation", f"DevEUI {up.dev_eui} f_cnt {up.f_cnt}: {entry.reading.__name__} refused "
                                           f"{values}: {text}"[:1000], up.dev_eui))
        return Outcome("reading", up.network, reading=reading)

    def committed(self, keys: list[str]) -> None:
        """The outcomes of *keys* are in Kafka: remember them for good."""
        self.seen.add(keys)
        self.pending.difference_update(keys)
