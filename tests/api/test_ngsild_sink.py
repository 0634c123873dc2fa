"""The NGSI-LD sink (streams/ngsild_sink.py) against a recording NGSI-LD receiver that answers batch upserts as the
standard says (201/204, 207 with per-entity errors, 400 ProblemDetails, 503): first start pushes every entity, then
only what changed; retries with backoff; refused entities logged with the reason and kept; resumable across restarts."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streams.catalogue import TWIN_UPDATES
from streams.ngsild_sink import UPSERT, Sink, SinkConfig, render
from streams.publisher import EventPublisher
from tests.api.ngsild_setup import GAUGE, GAUGE_URN, PARKING_URN, T, sensor_state, twin_broker, twin_updates, update
from tests.drills.junk import junk
from tests.helpers import wait_for
from twin.region import bundled_pack

pytestmark = pytest.mark.broker
CONTEXT = "http://api.example/ngsi-ld/v1/jsonldContexts/plietsch.jsonld"


class Broker:
    """A recording NGSI-LD broker: keeps upserted entities by id (an upsert replaces), records each batch's ids."""

    def __init__(self) -> None:
        self.entities: dict[str, dict[str, Any]] = {}
        self.batches: list[list[str]] = []
        self.unavailable = 0  # answer this many requests with 503
        self.refuse: set[str] = set()  # entity ids answered with a per-entity error (207)
        self.reject_all = False  # answer 400 to the whole batch
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != UPSERT or self.headers["Content-Type"] != "application/ld+json":
                    return self.answer(400, {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
                                             "status": 400, "detail": f"wrong path or type {self.path}"})
                if outer.unavailable > 0:
                    outer.unavailable -= 1
                    return self.answer(503, None)
                if outer.reject_all:
                    return self.answer(400, {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData", "status": 400,
                                             "title": "Bad request data", "detail": "this broker takes no CoastSegment"})
                outer.batches.append([e["id"] for e in body])
                errors = []
                for e in body:
                    if e["id"] in outer.refuse:
                        errors.append({"entityId": e["id"], "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/"
                                       "BadRequestData", "status": 400, "detail": "unitCode MTR not allowed here"}})
                    elif "@context" in e:
                        outer.entities[e["id"]] = e
                if errors:
                    return self.answer(207, {"success": [e["id"] for e in body if e["id"] not in outer.refuse],
                                             "errors": errors})
                return self.answer(204, None)

            def answer(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                if data:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[str, EventPublisher, Broker, Path]]:
    with twin_broker() as (bootstrap, pub):
        b = Broker()
        try:
            yield bootstrap, pub, b, tmp_path
        finally:
            b.server.shutdown()


class Running:
    def __init__(self, bootstrap: str, target: str, data: Path) -> None:
        self.cfg = SinkConfig(bootstrap, target, bundled_pack(), data, CONTEXT, batch=40, idle_s=0.2)
        self.sink = Sink(self.cfg)
        self.thread = threading.Thread(target=self.sink.run, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sink.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the sink did not stop within 60 s"


def pushed_all(run: Running, b: Broker, keys: int) -> bool:
    """The sink has read the first *keys* twin updates and the broker holds what it made of each of them (the updates
    may come in several reads: a wait for one entity alone leaves the others' pushes still to come)."""
    state = dict(run.sink.fold.state)
    if len(state) < keys:
        return False
    want = [e for eid, rec in state.items() if (e := render(run.cfg.pack, eid, rec))]
    return all(b.entities.get(e["id"]) == {**e, "@context": CONTEXT} for e in want)


def level(pub: EventPublisher, value: float, revision: int) -> None:
    pub.send(TWIN_UPDATES.name, GAUGE, update(GAUGE, "sensor", sensor_state(GAUGE, "water_level", {"level_m": value}, T,
                                                                               revision), revision))
    pub.flush()


def test_pushes_everything_then_only_changes_retrying_and_resuming(world: tuple[str, EventPublisher, Broker, Path],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    bootstrap, pub, b, data = world
    caplog.set_level(logging.INFO, "plietsch.ngsild_sink")
    with Running(bootstrap, b.url, data) as run:
        wait_for(lambda: len(b.entities) == 102 and pushed_all(run, b, len(twin_updates())), 60,
                 "every entity of the region, and the state of every one the twin has")
        assert b.entities[GAUGE_URN]["height"]["value"] == 1.42
        assert all(len(batch) <= 40 for batch in b.batches)
        assert b.entities[GAUGE_URN]["@context"] == CONTEXT
        assert b.entities[PARKING_URN]["occupancy"]["value"] == 0.25
        b.unavailable = 2  # the broker is away for two attempts: retried, nothing lost
        level(pub, 1.7, 2)
        wait_for(lambda: b.entities[GAUGE_URN]["height"]["value"] == 1.7, 60, "the new level, after the retries")
        assert b.batches[-1] == [GAUGE_URN]  # only what changed
        assert "retrying in" in caplog.text and "after 3 attempts" in caplog.text
    # stopped; the twin changes; a new sink process in the same group pushes only that change
    level(pub, 1.9, 3)
    pushed_before = len(b.batches)
    with Running(bootstrap, b.url, data):
        wait_for(lambda: b.entities[GAUGE_URN]["height"]["value"] == 1.9, 60, "the change made while the sink was down")
        assert b.batches[pushed_before:] == [[GAUGE_URN]]


def test_refused_entities_are_logged_with_the_reason_and_kept(world: tuple[str, EventPublisher, Broker, Path],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    bootstrap, pub, b, data = world
    b.refuse = {GAUGE_URN}
    with Running(bootstrap, b.url, data) as run:
        wait_for(lambda: len(b.entities) == 101, 60, "every entity but the refused one")
        assert GAUGE_URN not in b.entities
        wait_for(lambda: run.cfg.counts["refused"] >= 2, 60, "the gauge refused in the static and the live push")
        assert f"refused 1 entities (not retried; kept in {data / 'ngsild-sink' / 'refused.jsonl'}): {GAUGE_URN}" in caplog.text
        assert "unitCode MTR not allowed here" in caplog.text
        b.refuse, b.reject_all = set(), True
        level(pub, 2.0, 2)
        wait_for(lambda: run.cfg.counts["refused"] >= 3, 60, "the whole batch refused")
        assert "this broker takes no CoastSegment" in caplog.text
        b.reject_all = False
        level(pub, 2.1, 3)  # the sink goes on after a refusal
        wait_for(lambda: b.entities.get(GAUGE_URN, {}).get("height", {}).get("value") == 2.1, 60, "the next change")
    kept = [json.loads(x) for x in (data / "ngsild-sink" / "refused.jsonl").read_text().splitlines()]
    assert [k["entity"] for k in kept] == [GAUGE_URN, GAUGE_URN, GAUGE_URN] and "MTR" in kept[0]["reason"]


def test_junk_on_twin_updates_is_counted_and_skipped_and_the_sink_goes_on(world: tuple[str, EventPublisher, Broker, Path]) -> None:
    """Issue 15 item 1 for the sink: what the fuzz drill produces on ``twin.updates`` (random bytes, empty and null
    values, JSON, unknown fingerprints, broken batch frames, a reading, invalid ids, out-of-range values, far times,
    huge strings) is counted once each and pushes nothing; the sink's thread lives and the next good change goes out."""
    bootstrap, pub, b, data = world
    records = junk(bundled_pack(), TWIN_UPDATES.name, random.Random(20261125))
    with Running(bootstrap, b.url, data) as run:
        wait_for(lambda: len(b.entities) == 102 and pushed_all(run, b, len(twin_updates())), 60, "the first push")
        gauge_before, batches_before = b.entities[GAUGE_URN], len(b.batches)
        producer = Producer({"bootstrap.servers": bootstrap})
        for _, value, headers in records:
            producer.produce(TWIN_UPDATES.name, key=GAUGE.encode(), value=value, headers=headers or None)
        assert producer.flush(30) == 0
        level(pub, 1.7, 2)
        wait_for(lambda: b.entities[GAUGE_URN]["height"]["value"] == 1.7, 60, "the good change after the junk")
        assert run.thread.is_alive()
        fold = run.sink.fold
        broken = sum(n for (topic, _), n in fold.broken.items() if topic == TWIN_UPDATES.name)
        tombstones = fold.skipped.get((TWIN_UPDATES.name, "tombstone"), 0)
        assert (broken, tombstones) == (len(records) - 1, 1), (fold.broken, fold.skipped, [k for k, _, _ in records])
        assert b.batches[batches_before:] == [[GAUGE_URN]]  # the junk pushed nothing; the good change pushed the gauge
        assert {k: v for k, v in b.entities[GAUGE_URN].items() if k != "height"} == \
            {k: v for k, v in gauge_before.items() if k != "height"}
