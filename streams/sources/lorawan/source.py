"""The long-running LoRaWAN source: MQTT uplinks in, readings and dead letters into Kafka.

paho-mqtt's network thread receives (QoS 1, a persistent session, manual acknowledgement) and queues; the main loop
converts, hands readings and dead letters to the ``EventPublisher``, flushes, remembers the dedup keys and only then
acknowledges the MQTT messages: a message whose outcome is not in Kafka is redelivered by the MQTT server after a
reconnect. A lost MQTT connection is retried by paho with backoff (1 s doubling to 30 s); a Kafka flush that fails is
retried with backoff (nothing is dead-lettered for it, nothing acknowledged meanwhile). Counts and health are on the
source's own Prometheus registry, served on ``/metrics`` of ``PLIETSCH_LORAWAN_METRICS_PORT``.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.catalogue import DEAD_LETTERS, SENSOR_TOPICS
from streams.publisher import EventPublisher
from streams.serde import encode_event
from streams.sources.kafka_retry import Abandoned, retry_kafka
from streams.sources.lorawan.convert import Converter, Outcome, SeenWindow

log = logging.getLogger("plietsch.lorawan")

DEFAULT_TOPICS = "v3/+/devices/+/up,application/+/device/+/event/up"


class LoraSettings(BaseSettings):
    """``PLIETSCH_LORAWAN_*``: where the MQTT server is, what to subscribe to, the registry, the metrics port."""

    model_config = SettingsConfigDict(env_prefix="PLIETSCH_LORAWAN_", extra="ignore")

    mqtt: str = ""  # mqtt://host:1883 or mqtts://host:8883; empty: 'plietsch run' starts a local Mosquitto
    mqtt_username: str = ""  # TTS: "{application id}@{tenant id}"
    mqtt_password: str = ""  # TTS: an API key with the right to read application traffic
    mqtt_client_id: str = "plietsch-lorawan"  # fixed: the MQTT server keeps the session (unacknowledged messages)
    topics: str = DEFAULT_TOPICS  # comma-separated MQTT topic filters
    registry: Path | None = None  # the device registry (JSON); setting it turns the source on in 'plietsch run'
    metrics_port: int = 9466
    metrics_host: str = "127.0.0.1"
    dedup_window: int = 50_000  # uplink keys remembered (bounded memory)
    mosquitto_port: int = 1883  # the local Mosquitto of 'plietsch run' when mqtt is empty


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("plietsch_lorawan_uplinks_received", "MQTT messages received, per network server",
                                ["network"], registry=r)
        self.published = Counter("plietsch_lorawan_readings_published", "readings written to the sensor topics", registry=r)
        self.duplicates = Counter("plietsch_lorawan_duplicates", "uplinks already counted (other gateway, retransmission, "
                                  "redelivery)", registry=r)
        self.dead = Counter("plietsch_lorawan_dead_letters", "dead letters written, per reason", ["reason"], registry=r)
        self.unknown = Counter("plietsch_lorawan_unknown_devices", "uplinks of DevEUIs not in the registry", registry=r)
        self.connected = Gauge("plietsch_lorawan_mqtt_connected", "1 while connected to the MQTT server", registry=r)
        self.connects = Counter("plietsch_lorawan_mqtt_connects", "successful MQTT (re)connections", registry=r)
        self.kafka_retries = Counter("plietsch_lorawan_kafka_retries", "Kafka flushes retried after a transient error",
                                     registry=r)
        self.up = Gauge("plietsch_lorawan_up", "1 while the source runs", registry=r)


@dataclass
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int


def parse_mqtt_url(url: str) -> tuple[str, int, bool]:
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
        raise ValueError(f"PLIETSCH_LORAWAN_MQTT {url!r} must look like mqtt://host:1883 or mqtts://host:8883")
    tls = u.scheme in ("mqtts", "ssl")
    return u.hostname, u.port or (8883 if tls else 1883), tls


class LoraSource:
    def __init__(self, settings: LoraSettings, converter: Converter, publisher: EventPublisher,
                 metrics: Metrics | None = None, report: Callable[[str], None] = log.info) -> None:
        self.settings = settings
        self.converter = converter
        self.pub = publisher
        self.metrics = metrics or Metrics()
        self.report = report
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.host, self.port, tls = parse_mqtt_url(settings.mqtt)
        self.filters = [t.strip() for t in settings.topics.split(",") if t.strip()]
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.mqtt_client_id, clean_session=False,
                        manual_ack=True)
        if settings.mqtt_username:
            c.username_pw_set(settings.mqtt_username, settings.mqtt_password or None)
        if tls:
            c.tls_set()
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c
        self.http: Any = None
        self.stopping: Callable[[], bool] = lambda: False

    # -- paho's thread ---------------------------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.report(f"MQTT {self.host}:{self.port} refused the connection: {reason}; retrying with backoff")
            return
        self.metrics.connected.set(1)
        self.metrics.connects.inc()
        client.subscribe([(f, 1) for f in self.filters])
        self.report(f"connected to MQTT {self.host}:{self.port}, subscribed to {', '.join(self.filters)}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.metrics.connected.set(0)
        self.report(f"MQTT connection to {self.host}:{self.port} lost ({reason}); reconnecting with backoff")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    # -- the main loop ---------------------------------------------------------------------------------------------
    def start(self) -> LoraSource:
        self.http, _ = start_http_server(self.settings.metrics_port, self.settings.metrics_host, registry=self.metrics.registry)
        self.metrics.up.set(1)
        # learn the partition counts now, so that a Kafka outage later only ever hits the flush (which is retried)
        self._retry("learning the topics' partitions",
                    lambda: [self.pub.partitions(t.name) for t in (*SENSOR_TOPICS.values(), DEAD_LETTERS)])
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()  # connects, and reconnects with the backoff above, in its own thread
        return self

    def step(self, wait_s: float = 0.2, max_batch: int = 500) -> int:
        """Take what is queued (waiting up to *wait_s* for the first), publish it, acknowledge it. Returns how many."""
        try:
            batch = [self.inbox.get(timeout=wait_s)]
        except queue.Empty:
            self.pub.tick()
            return 0
        while len(batch) < max_batch:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        outcomes = [self._handle(m) for m in batch]
        self._flush()
        self.converter.committed([o.key for o in outcomes if o.key and o.kind != "duplicate"])
        for o in outcomes:
            if o.kind == "reading":
                self.metrics.published.inc()
            elif o.kind == "dead" and o.dead is not None:
                self.metrics.dead.labels(o.dead.error_type).inc()
        for m in batch:
            if m.qos > 0:
                self.client.ack(m.mid, m.qos)
        return len(batch)

    def _handle(self, m: Message) -> Outcome:
        o = self.converter.handle(m.topic, m.payload)
        self.metrics.received.labels(o.network).inc()
        if o.kind == "duplicate":
            self.metrics.duplicates.inc()
        elif o.kind == "reading" and o.reading is not None:
            self.pub.add(SENSOR_TOPICS[o.reading.sensor_kind].name, o.reading.entity_id, o.reading)
        elif o.dead is not None:
            if o.unknown_device:
                self.metrics.unknown.inc()
            d = o.dead  # as the worker writes them (streams.agents.dead_outputs): keyed by origin, reason in headers
            log.warning("dead letter from %s: %s", d.original_topic, d.reason[:300])
            self.pub.send_raw(DEAD_LETTERS.name, d.original_topic.encode(), encode_event(self.pub.codec, d),
                              [("reason", d.reason.encode()[:1000]), ("error-type", d.error_type.encode())])
        return o

    def _flush(self) -> None:
        """Flush until Kafka has everything: a transient failure is retried with backoff, never dead-lettered."""
        self._retry("writing the readings to Kafka", lambda: self.pub.flush(timeout=10))

    def _retry(self, what: str, action: Callable[[], Any]) -> None:
        retry_kafka(what, action, stopping=self.stopping, wait=time.sleep, report=self.report,
                    counted=self.metrics.kafka_retries.inc,
                    left_for_next_run="leaving without acknowledging the MQTT messages of this batch; the MQTT server "
                                      "redelivers them to the next run")

    def run(self, should_stop: Callable[[], bool]) -> None:
        self.stopping = should_stop
        try:
            while not should_stop():
                self.step()
            # drain what paho has queued already, then leave
            while self.step(wait_s=0.05):
                pass
        except Abandoned as exc:
            self.report(str(exc))

    def stop(self) -> None:
        self.metrics.up.set(0)
        self.client.disconnect()
        self.client.loop_stop()
        if self.http is not None:
            self.http.shutdown()


def build(settings: LoraSettings, bootstrap: str, pack_path: Path, data_dir: Path, codec: Any,
          report: Callable[[str], None]) -> LoraSource:
    from streams.sources.lorawan.registry import RegistryError, load_registry
    from twin.region import load_pack

    if settings.registry is None:
        raise RegistryError("PLIETSCH_LORAWAN_REGISTRY is not set: point it at the device registry (JSON; README, LoRaWAN)")
    registry = load_registry(settings.registry, load_pack(pack_path))
    seen = SeenWindow(settings.dedup_window, data_dir / "lorawan" / "seen.log")
    report(f"LoRaWAN registry {settings.registry}: {len(registry)} device(s); {len(seen)} uplink key(s) remembered")
    return LoraSource(settings, Converter(registry, seen), EventPublisher(bootstrap, codec, linger_ms=5), report=report)
