"""The LoRaWAN source end to end: a real Mosquitto, the real Kafka-protocol broker (Tansu), ``plietsch source lorawan``
as its own process. Uplinks of both network servers go in over MQTT; exactly the expected readings come out once,
dead letters carry their reasons, the source survives an MQTT restart and remembers what it counted across its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.broker import EmbeddedBroker, free_port
from schemas.codec import SingleObjectCodec, is_batch, iter_batch
from streams.catalogue import DEAD_LETTERS, SENSOR_TOPICS, ensure_topics
from streams.consume import drain
from streams.sources.lorawan.mosquitto import Mosquitto
from tests.helpers import ROOT, wait_for
from tests.sources.test_lorawan_units import FIX, cs_topic, protobuf_of

pytestmark = pytest.mark.broker

TTS_APP = "v3/plietsch-kiel@kielregion/devices"
CS_APP = "application/a5a4f1c4-0d4b-4fa8-9b6a-d0b5c7b4c3f1/device"


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """A broker of this module's own: the readings go to the real sensor topics, and the session's shared worker (on
    another region pack) must not fold them or dead-letter them in other tests' view."""
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        yield broker.bootstrap_servers


class Source:
    def __init__(self, bootstrap: str, mqtt_url: str, data_dir: Path, client_id: str) -> None:
        self.port = free_port()
        self.log = data_dir / f"source-{uuid.uuid4().hex[:6]}.log"
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_DATA_DIR=str(data_dir),
                   PLIETSCH_LORAWAN_MQTT=mqtt_url, PLIETSCH_LORAWAN_REGISTRY=str(FIX / "registry.json"),
                   PLIETSCH_LORAWAN_METRICS_PORT=str(self.port), PLIETSCH_LORAWAN_MQTT_CLIENT_ID=client_id)
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "source", "lorawan"], cwd=ROOT, env=env,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def metrics(self) -> dict[str, float]:
        """Samples by name and labels, e.g. 'plietsch_lorawan_dead_letters_total{reason=decode}'; {} while not up."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return {}
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def publish(url_port: int, messages: list[tuple[str, bytes]]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:6]}")
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    try:
        for topic, body in messages:
            c.publish(topic, body, qos=1).wait_for_publish(timeout=10)
    finally:
        c.disconnect()
        c.loop_stop()


def readings(bootstrap: str) -> list[dict[str, Any]]:
    codec = SingleObjectCodec()
    out = []
    for kind in ("water_level", "parking", "weather"):
        for m in drain(bootstrap, SENSOR_TOPICS[kind].name, missing_ok=True):
            for d in (iter_batch(m.value()) if is_batch(m.headers()) else [m.value()]):
                name, rec = codec.decode(d)
                out.append({"type": name, **rec})
    return out


def dead_letters(bootstrap: str) -> list[dict[str, Any]]:
    codec = SingleObjectCodec()
    out = []
    for m in drain(bootstrap, DEAD_LETTERS.name, missing_ok=True):
        _, rec = codec.decode(m.value())
        rec["_headers"] = {k: v.decode() for k, v in (m.headers() or [])}
        out.append(rec)
    return out


def settled(src: Source, published: int, dead: int, duplicates: int) -> dict[str, float] | None:
    assert src.proc.poll() is None, f"the source died:\n{src.output()}"
    m = src.metrics()
    total_dead = sum(v for k, v in m.items() if k.startswith("plietsch_lorawan_dead_letters_total"))
    got = (m.get("plietsch_lorawan_readings_published_total"), total_dead, m.get("plietsch_lorawan_duplicates_total"))
    return m if got == (published, dead, duplicates) else None


def test_uplinks_of_both_network_servers_become_readings_once(bootstrap: str, tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mqtt").start()
    client_id = f"plietsch-lorawan-{uuid.uuid4().hex[:6]}"
    src = Source(bootstrap, broker.url, tmp_path, client_id)
    try:
        wait_for(lambda: src.metrics().get("plietsch_lorawan_mqtt_connected") == 1, 60,
                 "the source to connect to Mosquitto\n" + src.output())
        tts = lambda name: (FIX / name).read_bytes()  # noqa: E731
        gw1 = tts("tts_water_level_gw1.json")
        publish(broker.port, [
            (f"{TTS_APP}/gauge-leuchtturm/up", gw1),
            (f"{TTS_APP}/gauge-leuchtturm/up", tts("tts_water_level_gw2.json")),  # the same uplink via a second gateway
            (f"{TTS_APP}/gauge-leuchtturm/up", gw1),  # a retransmission (redelivered message)
            (f"{TTS_APP}/parking-gaarden-4/up", tts("tts_parking_decoded.json")),
            (f"{TTS_APP}/stranger/up", tts("tts_unknown_device.json")),
            (f"{TTS_APP}/gauge-leuchtturm/up", tts("tts_broken_payload.json")),
            (f"{TTS_APP}/gauge-leuchtturm/up", tts("tts_wrong_port.json")),
            (f"{TTS_APP}/gauge-leuchtturm/up", b"not json at all"),
            (cs_topic("0004a30b00f1a001"), tts("chirpstack_weather_cayenne.json")),
            (cs_topic("0004a30b00f1a001"), protobuf_of("chirpstack_weather_cayenne.json")),  # same deduplicationId
            (cs_topic("0004a30b00f1a002"), protobuf_of("chirpstack_parking_object.json")),
            (cs_topic("0004a30b00f1a001"), tts("chirpstack_broken_cayenne.json")),
        ])
        m = wait_for(lambda: settled(src, 4, 5, 3), 90, "4 readings, 5 dead letters and 3 duplicates on /metrics\n"
                     + src.output())
        assert m["plietsch_lorawan_uplinks_received_total{network=tts}"] == 8
        assert m["plietsch_lorawan_uplinks_received_total{network=chirpstack}"] == 4
        assert m["plietsch_lorawan_unknown_devices_total"] == 1
        assert {k: v for k, v in m.items() if k.startswith("plietsch_lorawan_dead_letters_total")} == {
            "plietsch_lorawan_dead_letters_total{reason=decode}": 2, "plietsch_lorawan_dead_letters_total{reason=format}": 1,
            "plietsch_lorawan_dead_letters_total{reason=unknown_device}": 1,
            "plietsch_lorawan_dead_letters_total{reason=wrong_port}": 1}

        got = [r for r in readings(bootstrap) if r["event_id"].startswith("lorawan-")]
        assert Counter(r["event_id"] for r in got).most_common(1)[0][1] == 1, "a reading was written twice"
        by_sensor = {r["entity_id"]: r for r in got}
        assert len(got) == 4 and set(by_sensor) == {"kiel:_:sensor:gauge-leuchtturm", "kiel:gaarden:sensor:parking-004",
                                                    "kiel:gaarden:sensor:weather-001", "kiel:friedrichsort:sensor:parking-004"}
        gauge = by_sensor["kiel:_:sensor:gauge-leuchtturm"]
        assert gauge["type"] == "WaterLevelMeasured" and gauge["level_m"] == pytest.approx(0.96)
        assert gauge["occurred_at"].startswith("2026-11-23T08:00:01.123456")
        tts_parking = by_sensor["kiel:gaarden:sensor:parking-004"]
        assert (tts_parking["occupied"], tts_parking["capacity"]) == (87, 120)
        weather = by_sensor["kiel:gaarden:sensor:weather-001"]
        assert (weather["temperature_c"], weather["wind_speed_ms"], weather["wind_dir_deg"], weather["precipitation_mm"]) \
            == (12.5, 7.25, 245.5, 0.4)
        assert by_sensor["kiel:friedrichsort:sensor:parking-004"]["occupied"] == 65

        dead = dead_letters(bootstrap)
        assert sorted(d["error_type"] for d in dead) == ["decode", "decode", "format", "unknown_device", "wrong_port"]
        reasons = {d["error_type"] + ":" + d["original_topic"].split("/")[-2]: d["reason"] for d in dead}
        assert "70B3D57ED00FFFFF is not in the LoRaWAN device registry" in reasons["unknown_device:stranger"]
        assert any("not JSON" in r for k, r in reasons.items() if k.startswith("format"))
        assert all(d["processor"] == "lorawan" and d["_headers"]["error-type"] == d["error_type"] for d in dead)
        assert any(d["original_value"] == b"not json at all" for d in dead)

        # Mosquitto goes away and comes back on the same port: the source reconnects by itself and goes on
        broker.stop()
        wait_for(lambda: src.metrics().get("plietsch_lorawan_mqtt_connected") == 0, 60, "the source to notice\n" + src.output())
        broker.start()
        wait_for(lambda: src.metrics().get("plietsch_lorawan_mqtt_connects_total", 0) >= 2, 90,
                 "the source to reconnect\n" + src.output())
        later = json.loads(gw1)
        later["uplink_message"]["f_cnt"] = 45
        publish(broker.port, [(f"{TTS_APP}/gauge-leuchtturm/up", json.dumps(later).encode())])
        wait_for(lambda: settled(src, 5, 5, 3), 60, "the reading after the reconnect\n" + src.output())
        assert src.stop() == 0, src.output()

        # a new run of the source remembers what it counted: the old uplink again is a duplicate, not a new reading
        src = Source(bootstrap, broker.url, tmp_path, client_id)
        wait_for(lambda: src.metrics().get("plietsch_lorawan_mqtt_connected") == 1, 60, "the second run to connect\n"
                 + src.output())
        publish(broker.port, [(f"{TTS_APP}/gauge-leuchtturm/up", gw1)])
        wait_for(lambda: settled(src, 0, 0, 1), 60, "the second run to count the old uplink as a duplicate\n" + src.output())
        assert len([r for r in readings(bootstrap) if r["event_id"].startswith("lorawan-")]) == 5
    finally:
        if src.proc.poll() is None:
            src.stop()
        broker.stop()


def test_kafka_unreachable_is_retried_not_dead_lettered_nor_lost(paused_broker: EmbeddedBroker, tmp_path: Path) -> None:
    bootstrap = paused_broker.bootstrap_servers
    assert paused_broker._proc is not None
    pid = paused_broker._proc.pid
    mqtt_broker = Mosquitto(tmp_path / "mqtt").start()
    src_client_id = f"plietsch-lorawan-{uuid.uuid4().hex[:6]}"
    src = Source(bootstrap, mqtt_broker.url, tmp_path, src_client_id)
    try:
        wait_for(lambda: src.metrics().get("plietsch_lorawan_mqtt_connected") == 1, 60, "the source to connect\n" + src.output())
        up = json.loads((FIX / "tts_water_level_gw1.json").read_bytes())
        up["uplink_message"]["f_cnt"] = 100
        os.kill(pid, signal.SIGSTOP)  # Kafka stops answering: a transient failure
        try:
            publish(mqtt_broker.port, [(f"{TTS_APP}/gauge-leuchtturm/up", json.dumps(up).encode())])
            wait_for(lambda: src.metrics().get("plietsch_lorawan_kafka_retries_total", 0) >= 1, 90,
                     "the source to retry its Kafka flush\n" + src.output())
            assert src.metrics().get("plietsch_lorawan_readings_published_total") == 0
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: settled(src, 1, 0, 0), 120, "the reading after Kafka came back\n" + src.output())
        got = [r for r in readings(bootstrap) if r["event_id"].startswith("lorawan-")]
        assert len(got) == 1 and got[0]["entity_id"] == "kiel:_:sensor:gauge-leuchtturm"
        assert dead_letters(bootstrap) == []
        assert "retrying in" in src.output()

        # a stop while Kafka is away: the source leaves without acknowledging; the next run gets the uplink again
        up["uplink_message"]["f_cnt"] = 101
        os.kill(pid, signal.SIGSTOP)
        try:
            publish(mqtt_broker.port, [(f"{TTS_APP}/gauge-leuchtturm/up", json.dumps(up).encode())])
            wait_for(lambda: src.metrics().get("plietsch_lorawan_kafka_retries_total", 0) >= 2, 90,
                     "the source to retry again\n" + src.output())
            assert src.stop() == 0, src.output()
            assert "leaving without acknowledging" in src.output()
        finally:
            os.kill(pid, signal.SIGCONT)
        src = Source(bootstrap, mqtt_broker.url, tmp_path, src_client_id)
        wait_for(lambda: settled(src, 1, 0, 0), 120, "the redelivered uplink in the next run\n" + src.output())
        got = [r for r in readings(bootstrap) if r["event_id"].startswith("lorawan-")]
        # the first run's write may have reached the broker before it paused: then it is there twice, as one event id
        assert len(got) in (2, 3) and len({r["event_id"] for r in got}) == 2, got
        assert dead_letters(bootstrap) == []
        assert src.stop() == 0, src.output()
    finally:
        if src.proc.poll() is None:
            src.stop()
        mqtt_broker.stop()
