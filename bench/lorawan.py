"""Throughput of the LoRaWAN source: N The Things Stack v3 uplinks (distinct f_cnt, 4 registered devices of the test
registry, every 10th one repeated as if from a second gateway) published to a real Mosquitto with QoS 1; the time until
``plietsch source lorawan`` (its own process, on the embedded Tansu broker) shows them all as readings or duplicates on
its /metrics. Baseline in the same run: the same messages through the same Mosquitto to a bare paho subscriber that only
counts them (the MQTT transport alone).

Run: ``.venv/bin/python -m bench.lorawan --uplinks 20000``. Prints a Markdown row with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

from infra.broker import EmbeddedBroker, free_port
from streams.catalogue import ensure_topics
from streams.sources.lorawan.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "lorawan"
TOPIC = "v3/plietsch-kiel@kielregion/devices/gauge-leuchtturm/up"


def messages(n: int) -> list[bytes]:
    base = json.loads((FIX / "tts_water_level_gw1.json").read_bytes())
    out = []
    for i in range(n):
        base["uplink_message"]["f_cnt"] = i
        out.append(json.dumps(base).encode())
    return out


def publish(port: int, bodies: list[bytes]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    c.max_inflight_messages_set(1000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    infos = [c.publish(TOPIC, b, qos=1) for b in bodies]
    for info in infos:
        info.wait_for_publish(60)
    c.disconnect()
    c.loop_stop()


def baseline(port: int, bodies: list[bytes]) -> float:
    done = threading.Event()
    count = [0]

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] >= len(bodies):
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-baseline")
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe(TOPIC, qos=1)
    sub.loop_start()
    time.sleep(1.0)  # bench only: let the subscription settle
    t0 = time.perf_counter()
    publish(port, bodies)
    done.wait(600)
    dt = time.perf_counter() - t0
    sub.disconnect()
    sub.loop_stop()
    return dt


def metric(port: int, name: str) -> float:
    try:
        for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    except httpx.HTTPError:
        pass
    return -1.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uplinks", type=int, default=20_000)
    args = ap.parse_args()
    n = args.uplinks
    bodies = messages(n)
    bodies_with_dups = [b for i, b in enumerate(bodies) for _ in range(2 if i % 10 == 0 else 1)]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker, Mosquitto(Path(tmp) / "mqtt") as mq:
        ensure_topics(broker.bootstrap_servers)
        base_s = baseline(mq.port, bodies_with_dups)
        mport = free_port()
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, PLIETSCH_DATA_DIR=tmp,
                   PLIETSCH_LORAWAN_MQTT=mq.url, PLIETSCH_LORAWAN_REGISTRY=str(FIX / "registry.json"),
                   PLIETSCH_LORAWAN_METRICS_PORT=str(mport))
        src = subprocess.Popen([sys.executable, "-m", "streams.cli", "source", "lorawan"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while metric(mport, "plietsch_lorawan_mqtt_connected") != 1:
                time.sleep(0.2)
            t0 = time.perf_counter()
            publish(mq.port, bodies_with_dups)
            while metric(mport, "plietsch_lorawan_readings_published_total") < n \
                    or metric(mport, "plietsch_lorawan_duplicates_total") < len(bodies_with_dups) - n:
                time.sleep(0.1)
            src_s = time.perf_counter() - t0
        finally:
            src.terminate()
            src.wait(30)
    load = os.getloadavg()
    print(f"| messages | baseline: MQTT to a bare subscriber | LoRaWAN source: MQTT to readings in Kafka | machine |\n"
          f"|---|---|---|---|\n"
          f"| {len(bodies_with_dups):,} ({n:,} uplinks, {len(bodies_with_dups) - n:,} gateway copies) | "
          f"{base_s:.2f} s ({len(bodies_with_dups) / base_s:,.0f} msg/s) | {src_s:.2f} s "
          f"({len(bodies_with_dups) / src_s:,.0f} msg/s) | {platform.machine()}, {os.cpu_count()} cores, "
          f"load {load[0]:.1f} |")


if __name__ == "__main__":
    main()
