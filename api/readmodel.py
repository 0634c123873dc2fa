"""The API's read model: the latest ``TwinEntityUpdated`` per entity, folded from the ``twin.updates`` topic by a
consumer thread (snapshot from the beginning, then deltas). Several API processes each keep their own copy."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.codec import CodecError
from streams.catalogue import TWIN_UPDATES
from streams.serde import Codec

log = logging.getLogger("plietsch.api")


class ReadModel:
    def __init__(self, bootstrap_servers: str, codec: Codec, topic: str = TWIN_UPDATES.name) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.codec = codec
        self.topic = topic
        self.state: dict[str, dict[str, Any]] = {}
        self.applied = 0
        self.skipped = 0
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="read-model", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def get(self, entity_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self.state.get(entity_id)

    def apply(self, rec: dict[str, Any]) -> bool:
        """Keep the update if it is newer than what the model holds (revisions are per entity)."""
        with self._lock:
            prev = self.state.get(rec["entity_id"])
            if prev is not None and prev["revision"] >= rec["revision"]:
                return False
            rec = dict(rec)
            rec["state"] = json.loads(rec.pop("state_json"))
            self.state[rec["entity_id"]] = rec
            self.applied += 1
            return True

    def _run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": f"plietsch-api-{uuid.uuid4().hex[:8]}",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        try:
            md = consumer.list_topics(self.topic, timeout=15)
            tmd = md.topics.get(self.topic)
            if tmd is None or tmd.error is not None:
                self.error = f"topic {self.topic} does not exist yet; start the worker ('plietsch worker')"
                self.ready.set()
                return
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in tmd.partitions])
            idle_since = time.monotonic()
            while not self._stop.is_set():
                msgs = consumer.consume(1000, 0.2)
                if not msgs:
                    # snapshot complete once the topic has been idle a moment (Tansu's watermarks are unreliable)
                    if not self.ready.is_set() and time.monotonic() - idle_since > 1.0:
                        self.ready.set()
                    continue
                idle_since = time.monotonic()
                for msg in msgs:
                    if msg.error() or msg.value() is None:
                        continue
                    try:
                        _, rec = self.codec.decode(msg.value())
                    except CodecError as exc:
                        self.skipped += 1
                        log.warning("skipping undecodable twin update at %s[%d]@%d: %s", msg.topic(), msg.partition(),
                                    msg.offset(), exc)
                        continue
                    self.apply(rec)
        except Exception as exc:  # reported by /health
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("read model stopped")
            self.ready.set()
        finally:
            consumer.close()
