"""Pushes the twin's entities into an external NGSI-LD broker (the region's Scorpio) by batch upsert
(``POST /ngsi-ld/v1/entityOperations/upsert``, ETSI GS CIM 009 5.6.8), as the API shows them (``api.ngsild``).

It follows ``twin.updates`` (read_committed) in its own consumer group and folds the records with the read model's
own fold (``api.readmodel.ReadModel.handle``: newest revision wins, broken records counted and skipped); each batch
pushes the newest state of every entity that changed in it, then commits the offsets: so it is resumable (a restart
pushes only what changed since the last acknowledged push) and idempotent (an upsert of the same entity twice leaves
the same entity). A first start (no committed offsets) also pushes every entity of the region pack, the ones without
live state with their static attributes.

Transient failures (no connection, HTTP 408/429/5xx) are retried with backoff (0.5 s doubling to 30 s) and nothing is
committed meanwhile. A broker that refuses a batch (another 4xx) or some of its entities (207 with errors) gets a log
line with its reason; the refused entities go, with the reason, to ``<data_dir>/ngsild-sink/refused.jsonl`` (kept, as
dead letters are) and the sink goes on.

Run: ``python -m streams.ngsild_sink`` with ``PLIETSCH_NGSILD_TARGET`` (the broker's base URL, e.g.
``https://scorpio.example``), optionally ``PLIETSCH_NGSILD_TOKEN`` (a bearer token, e.g. from Keycloak),
``PLIETSCH_NGSILD_TENANT`` (``NGSILD-Tenant``), ``PLIETSCH_NGSILD_CONTEXT`` (the @context URL the entities name; the
API's served one by default), ``PLIETSCH_NGSILD_SINK_GROUP``, ``PLIETSCH_NGSILD_BATCH`` (entities per upsert, 100)."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from api.ngsild.entities import SENSOR_TYPES, candidates, coast_entity, sensor_entity
from api.readmodel import ReadModel
from infra.kafka_security import secured
from streams.catalogue import TWIN_UPDATES
from streams.serde import make_codec
from twin.region import RegionPack, load_pack

log = logging.getLogger("plietsch.ngsild_sink")
UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0
TRANSIENT = {408, 425, 429}


@dataclass
class SinkConfig:
    bootstrap_servers: str
    target: str
    pack: RegionPack
    data_dir: Path
    context: str
    group_id: str = "plietsch-ngsild-sink"
    batch: int = 100
    token: str = ""
    tenant: str = ""
    schema_registry_url: str = ""
    idle_s: float = 0.5
    counts: dict[str, int] = field(default_factory=lambda: {"pushed": 0, "batches": 0, "retries": 0, "refused": 0})


def render(pack: RegionPack, eid: str, rec: dict[str, Any] | None) -> dict[str, Any] | None:
    if eid in pack.coast:
        return coast_entity(pack.coast[eid], rec)
    s = pack.sensors.get(eid)
    return sensor_entity(s, rec) if s is not None and s.sensor_kind in SENSOR_TYPES else None


class Sink:
    def __init__(self, cfg: SinkConfig, stop: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.stop = stop or threading.Event()
        self.fold = ReadModel(cfg.bootstrap_servers, make_codec(cfg.schema_registry_url))
        self.http = httpx.Client(timeout=30.0)
        self.refused_path = cfg.data_dir / "ngsild-sink" / "refused.jsonl"

    # -- pushing ------------------------------------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/ld+json", "Accept": "application/json"}
        if self.cfg.token:
            h["Authorization"] = f"Bearer {self.cfg.token}"
        if self.cfg.tenant:
            h["NGSILD-Tenant"] = self.cfg.tenant
        return h

    def push(self, entities: list[dict[str, Any]]) -> None:
        """Upsert *entities* in batches; returns once each batch was acknowledged or refused (never on a transient
        failure: it retries until it gets through or the sink is stopped, then raises InterruptedError)."""
        for i in range(0, len(entities), self.cfg.batch):
            self._push_batch([{**e, "@context": self.cfg.context} for e in entities[i: i + self.cfg.batch]])

    def _push_batch(self, batch: list[dict[str, Any]]) -> None:
        url = self.cfg.target.rstrip("/") + UPSERT
        wait, attempt = BACKOFF_START_S, 0
        while True:
            if self.stop.is_set():
                raise InterruptedError("stopped while a batch waited to be pushed; it is pushed again on the next start")
            attempt += 1
            try:
                r = self.http.post(url, content=json.dumps(batch), headers=self.headers())
                status, why = r.status_code, f"HTTP {r.status_code} {r.text[:300]!r}"
            except httpx.HTTPError as exc:
                r, status, why = None, 0, f"{type(exc).__name__}: {exc}"
            if r is not None and status in (200, 201, 204):
                self.cfg.counts["pushed"] += len(batch)
                self.cfg.counts["batches"] += 1
                if attempt > 1:
                    log.info("ngsi-ld sink: batch of %d entities pushed to %s after %d attempts", len(batch), url, attempt)
                return
            if r is not None and status == 207:  # some refused: the rest were taken
                self._multi_status(batch, r)
                return
            if r is not None and 400 <= status < 500 and status not in TRANSIENT:
                self._refused([(e["id"], why) for e in batch], url)
                return
            self.cfg.counts["retries"] += 1
            log.warning("ngsi-ld sink: pushing %d entities to %s failed (%s); retrying in %.1f s", len(batch), url, why, wait)
            self.stop.wait(wait)
            wait = min(wait * 2, BACKOFF_MAX_S)

    def _multi_status(self, batch: list[dict[str, Any]], r: httpx.Response) -> None:
        try:
            errors = r.json().get("errors", [])
            refused = [(str(e.get("entityId")), json.dumps(e.get("error"))[:300]) for e in errors]
        except (ValueError, AttributeError):
            refused = [(e["id"], f"HTTP 207 with an unreadable body {r.text[:200]!r}") for e in batch]
        self.cfg.counts["pushed"] += len(batch) - len(refused)
        self.cfg.counts["batches"] += 1
        if refused:
            self._refused(refused, str(r.request.url))

    def _refused(self, refused: list[tuple[str, str]], url: str) -> None:
        self.cfg.counts["refused"] += len(refused)
        log.error("ngsi-ld sink: %s refused %d entities (not retried; kept in %s): %s", url, len(refused),
                  self.refused_path, "; ".join(f"{eid}: {why}" for eid, why in refused[:5]))
        self.refused_path.parent.mkdir(parents=True, exist_ok=True)
        with self.refused_path.open("a") as f:
            for eid, why in refused:
                f.write(json.dumps({"entity": eid, "reason": why, "at": time.time()}) + "\n")

    # -- following the twin -------------------------------------------------------------------------------------
    def run(self, on_batch: Callable[[int], None] | None = None) -> None:
        consumer = Consumer(secured({
            "bootstrap.servers": self.cfg.bootstrap_servers, "group.id": self.cfg.group_id,
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": "read_committed"}))
        try:
            first = self._assign(consumer)
            if first:
                static = [e for _, p in candidates(self.cfg.pack, None) if (e := render(self.cfg.pack, str(p.id), None))]
                log.info("ngsi-ld sink: first start of group %s: pushing the %d entities of region %s", self.cfg.group_id,
                         len(static), self.cfg.pack.id)
                self.push(static)
            while not self.stop.is_set():
                # a window, on purpose: what changes within idle_s goes out in one upsert (and one offset commit),
                # so an external broker gets a few requests a second however busy the twin is
                msgs = consumer.consume(500, self.cfg.idle_s)
                changed: set[str] = set()
                for m in msgs:
                    if m.error() is not None:
                        continue
                    eid = (m.key() or b"").decode("utf-8", "replace")
                    before = self.fold.state.get(eid, {}).get("_seq")  # every applied change gets a new sequence
                    self.fold.handle(str(m.topic()), int(m.partition() or 0), int(m.offset() or 0), m.key(), m.value(),
                                     m.headers())
                    if self.fold.state.get(eid, {}).get("_seq") != before:
                        changed.add(eid)
                if not msgs:
                    continue
                entities = [e for eid in sorted(changed) if (e := render(self.cfg.pack, eid, self.fold.state[eid]))]
                try:
                    self.push(entities)
                except InterruptedError:
                    return  # not committed: pushed again on the next start
                consumer.commit(offsets=[TopicPartition(tp.topic, tp.partition, tp.offset)
                                         for tp in consumer.position(consumer.assignment()) if tp.offset >= 0],
                                asynchronous=False)
                if on_batch is not None:
                    on_batch(len(entities))
        finally:
            consumer.close()
            self.http.close()

    def _assign(self, consumer: Consumer) -> bool:
        """Every partition of twin.updates from the group's committed offsets (one sink per group: no group
        membership, so no rebalance to wait for); True when nothing was committed yet (the group never pushed)."""
        try:
            md = consumer.list_topics(TWIN_UPDATES.name, timeout=10)
            parts = [TopicPartition(TWIN_UPDATES.name, p) for p in sorted(md.topics[TWIN_UPDATES.name].partitions)]
            committed = consumer.committed(parts, timeout=10)
        except KafkaException as exc:
            raise RuntimeError(f"cannot read the committed offsets of group {self.cfg.group_id}: {exc}") from None
        consumer.assign([TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                         for tp in committed])
        return all(tp.offset < 0 for tp in committed)


def main() -> None:
    from api.ngsild.context import context_url
    from api.settings import ApiSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    target = os.environ.get("PLIETSCH_NGSILD_TARGET", "")
    if not target:
        raise SystemExit("PLIETSCH_NGSILD_TARGET is not set: the base URL of the NGSI-LD broker to push to, "
                         "e.g. https://scorpio.example")
    s = ApiSettings()
    if not s.bootstrap_servers:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS is not set; the sink reads twin.updates from Kafka")
    cfg = SinkConfig(s.bootstrap_servers, target, load_pack(s.region_pack), s.data_dir,
                     os.environ.get("PLIETSCH_NGSILD_CONTEXT", context_url("http://127.0.0.1:8000")),
                     group_id=os.environ.get("PLIETSCH_NGSILD_SINK_GROUP", "plietsch-ngsild-sink"),
                     batch=int(os.environ.get("PLIETSCH_NGSILD_BATCH", "100")),
                     token=os.environ.get("PLIETSCH_NGSILD_TOKEN", ""), tenant=os.environ.get("PLIETSCH_NGSILD_TENANT", ""),
                     schema_registry_url=s.schema_registry_url)
    sink = Sink(cfg)
    signal.signal(signal.SIGTERM, lambda *_: sink.stop.set())
    signal.signal(signal.SIGINT, lambda *_: sink.stop.set())
    sink.run(lambda n: log.info("ngsi-ld sink: %d entities pushed (%s)", n, cfg.counts))


if __name__ == "__main__":
    main()
