"""Fuzz drill over the whole stack (issue 15 items 1-3, every reader but the worker's sensor agents, which
tests/drills/test_fuzz.py covers): ``plietsch run`` (embedded broker, worker, archive sink, scenario service, API with
its read model and feedback store, checkpointer) while good readings stream, and junk of every kind on every other topic
a process reads: the municipal topics (worker, archive), scenario.requests (scenario service, archive), the output
topics twin.updates, twin.alerts, twin.aggregates and scenario.results (the API's read model), feedback.events (the
API's feedback store, archive), audit.events (archive) and dead-letters (``plietsch dead-letters``). The kinds: random
bytes, empty and null values, JSON instead of Avro, an unknown schema fingerprint, truncated and junk batch frames, a
valid record of the wrong type, a malformed entity id, a value out of range, times far ahead and far back, a huge string,
road works on a road the pack does not have; and, well typed but asking for nothing runnable, scenario requests whose
JSON is no scenario (not JSON, a list, a wrong field, 100 kB). One good road works record goes among the junk.

Afterwards: no process of the stack ended (the same pids), /health was 503 naming the archive sink while it was
stopped (SIGSTOP) and is 200 again, the API's twin equals the offline fold of the good records alone, the read model and
the feedback store counted each junk record on their topics once (readers: they skip and count, they do not
dead-letter), each bad scenario request ended as failed with the reason, the worker and the scenario service wrote
exactly one dead letter per junk record on their topics and none for any other record, ``plietsch dead-letters`` sums
those alone, the archive holds exactly the good records, the history routes and /audit answer 200 without a junk row,
the worker's event loop was never blocked for 1 s or more (plietsch_worker_loop_lag_max_seconds), and a restart over
the same data folder brings the same twin back.

Bounded in ``make test`` (1 junk record of each kind per topic, 10 rounds of the 63 sensors); ``PLIETSCH_DRILL=full``:
10 of each kind, 200 rounds."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from confluent_kafka import Producer

from infra.broker import free_port
from schemas.codec import CodecError
from streams.archive import read_events
from streams.catalogue import (
    AGGREGATES,
    ALERTS,
    AUDIT,
    DEAD_LETTERS,
    FEEDBACK,
    MUNICIPAL_TOPICS,
    SCENARIO_REQUESTS,
    SCENARIO_RESULTS,
    TWIN_UPDATES,
)
from streams.consume import drain
from streams.operations import dead_letters, summary
from streams.serde import encode_event
from tests.credentials import OPERATOR
from tests.drills import kit
from tests.drills.junk import junk, templates
from tests.helpers import ROOT, wait_for
from twin import municipal
from twin.events import (
    Event,
)
from twin.region import RegionPack, bundled_pack

pytestmark = [pytest.mark.broker, pytest.mark.drill]

EACH = 10 if kit.FULL else 1
ROUNDS = 200 if kit.FULL else 10  # x 63 sensors of the bundled pack
SEED = int(os.environ.get("PLIETSCH_DRILL_SEED", "20261124"))
CHILDREN = ("worker", "archive", "scenarios", "api")
STALL_RECORDS = 40  # junk records produced while the archive sink is stopped (SIGSTOP): twice /health's lag limit
# who reads each topic, and so what a junk record there must yield: a dead letter, or a counted skip
DEAD_LETTERING = {*(t.name for t in MUNICIPAL_TOPICS.values()), SCENARIO_REQUESTS.name}
READ_MODEL = {TWIN_UPDATES.name, ALERTS.name, AGGREGATES.name, SCENARIO_RESULTS.name}
TOPICS = (*(t.name for t in MUNICIPAL_TOPICS.values()), SCENARIO_REQUESTS.name, *sorted(READ_MODEL), FEEDBACK.name,
          AUDIT.name, DEAD_LETTERS.name)


# -- the stack -------------------------------------------------------------------------------------------------------------
class Stack:
    """``plietsch run --no-simulate`` over a data folder, with its own broker, API and worker web ports."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data, self.log = data, log
        self.api_port, self.broker_port, self.web_port = free_port(), free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.bootstrap = f"127.0.0.1:{self.broker_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, int]:
        """Start it; returns the pid of each child once the API's /health is 200."""
        env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
        env.update(PLIETSCH_DATA_DIR=str(self.data), PLIETSCH_WEB_PORT=str(self.web_port), PYTHONUNBUFFERED="1",
                   PLIETSCH_APP_ID="plietsch-fuzz-stack", PLIETSCH_CHECKPOINT_INTERVAL_S="5",
                   PLIETSCH_HEALTH_LAG_LIMIT=str(STALL_RECORDS // 2), PLIETSCH_HEALTH_LAG_GRACE_S="2",
                   PLIETSCH_HEALTH_EVERY_S="0.5")
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--no-simulate", "--api-port",
                                      str(self.api_port), "--broker-port", str(self.broker_port)], cwd=ROOT, env=env,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.health().status_code == 200, 120, f"the stack's /health\n{self.tail()}", every=1.0)
        return wait_for(lambda: (p := self.children()) and len(p) == len(CHILDREN) and p, 30, "the stack's processes")

    def health(self) -> httpx.Response:
        try:
            return httpx.get(f"{self.api}/health", headers=OPERATOR, timeout=5)
        except httpx.HTTPError:
            return httpx.Response(599)

    def children(self) -> dict[str, int]:
        """The pid of each of the stack's processes (worker, archive sink, scenario service, API)."""
        assert self.proc is not None
        out: dict[str, int] = {}
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                cmd = child.cmdline()
            except psutil.Error:
                continue
            name = "api" if "uvicorn" in cmd else cmd[3] if cmd[1:3] == ["-m", "streams.cli"] and len(cmd) > 3 else ""
            if name in CHILDREN:
                out[name] = child.pid
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C: the run stops its children, checkpoints and ends
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def api_twin(api: str, pack: RegionPack, want: dict[str, Any]) -> list[str]:
    """What differs between the API's sensors, coast segments and the road with works (their reported state) and the
    offline fold."""
    got: dict[str, dict[str, Any]] = {"sensors": {}, "coast": {}, "roads": {}}
    with httpx.Client(base_url=api, headers=OPERATOR, timeout=10) as c:
        for part, ids in (("sensors", sorted(pack.sensors)), ("coast", sorted(want["coast"])), ("roads", want["roads"])):
            for eid in ids:
                r = c.get(f"/entities/{eid}")
                assert r.status_code == 200, (eid, r.status_code, r.text[:300])
                if (reported := r.json()["properties"].get("reported")) is not None:
                    got[part][str(eid)] = reported
    return kit.differences("API sensors", got["sensors"], want["sensors"]) + \
        kit.differences("API coast", got["coast"], want["coast"]) + kit.differences("API roads", got["roads"], want["roads"])


def letters(bootstrap: str) -> Counter[tuple[str, int, int]]:
    """Dead letters per original record (the junk produced onto dead-letters itself is not one)."""
    out: Counter[tuple[str, int, int]] = Counter()
    for m in drain(bootstrap, DEAD_LETTERS.name, missing_ok=True, timeout=60):
        try:
            name, d = kit.CODEC.decode(m.value() or b"")
        except CodecError:
            continue
        if name == "DeadLettered":
            assert d["reason"], d
            out[(d["original_topic"], d["original_partition"], d["original_offset"])] += 1
    return out


def test_junk_on_every_other_topic_leaves_the_stack_alive_and_the_twin_as_the_good_records_made_it(
        tmp_path: Path) -> None:
    pack = bundled_pack()
    rng = random.Random(SEED)
    stack = Stack(tmp_path / "data", tmp_path / "run.log")
    try:
        pids = stack.start()
        feeder = kit.Feeder(stack.bootstrap, pack, ROUNDS, 10.0 if not kit.FULL else 60.0, SEED).start()
        prod = Producer({"bootstrap.servers": stack.bootstrap, "enable.idempotence": True,
                         "message.max.bytes": 4_000_000, "partitioner": "murmur2_random"})
        sent: dict[str, list[tuple[str, int, int]]] = {t: [] for t in TOPICS}  # (kind, partition, offset)
        kinds: Counter[str] = Counter()

        def delivered(topic: str, kind: str) -> Any:
            def report(err: Any, msg: Any) -> None:
                assert err is None, err
                sent[topic].append((kind, msg.partition(), msg.offset()))
            return report

        for _ in range(EACH):
            for topic in TOPICS:
                for kind, value, headers in junk(pack, topic, rng):
                    key = f"fuzz-{rng.randrange(1000)}".encode()
                    prod.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered(topic, kind))
                    kinds[kind] += 1
            prod.poll(0)
            time.sleep(0.5)
        asks = templates(pack)[SCENARIO_REQUESTS.name]  # well-typed requests that ask for nothing runnable
        bad_asks = {f"{pack.id}:_:scenario:fuzz-ask-{i}": body for i, body in
                    enumerate(("not JSON", "[]", '{"kind": 5}', json.dumps({"x": "y" * 100_000})))}
        for sid, body in bad_asks.items():
            prod.produce(SCENARIO_REQUESTS.name, key=sid.encode(), value=encode_event(
                kit.CODEC, asks.model_copy(update={"entity_id": sid, "request_json": body, "event_id": sid[-10:]})))
        road_works = templates(pack)["municipal.road-works"]  # one good municipal record among the junk: it counts
        prod.produce(MUNICIPAL_TOPICS["road_works"].name, key=str(road_works.entity_id).encode(),
                     value=encode_event(kit.CODEC, road_works))
        assert prod.flush(60) == 0
        feeder.join(300)

        # /health is 503 with the reason while the archive sink is stopped and falls behind, 200 once it caught up
        wait_for(lambda: stack.health().status_code == 200, 120, "the worker and the archive to catch up (/health 200)")
        os.kill(pids["archive"], signal.SIGSTOP)
        try:
            topic = MUNICIPAL_TOPICS["defect_reports"].name
            for _ in range(STALL_RECORDS):  # flushed one by one: Tansu counts a partition's end per record batch
                prod.produce(topic, key=b"fuzz", value=rng.randbytes(50), on_delivery=delivered(topic, "random bytes"))
                prod.flush(10)
            degraded = wait_for(lambda: (r := stack.health()).status_code == 503 and "archive sink" in r.json()["reason"]
                                and r.json(), 60, "/health to be 503 naming the archive sink while it is stopped")
            assert "behind" in degraded["reason"] and degraded["consumer_lag"]["plietsch-archive"] > STALL_RECORDS // 2
        finally:
            os.kill(pids["archive"], signal.SIGCONT)
        wait_for(lambda: stack.health().status_code == 200, 60, "/health to be 200 again once the archive caught up")

        events = kit.produced(stack.bootstrap, None, pack)  # no junk on the sensor topics: every record good
        assert len(events) == feeder.total
        want = kit.offline(pack, events)
        want["roads"] = {str(road_works.entity_id): {k: v for k, v in (municipal.apply(None, road_works) or {}).items()
                                                     if k != "event_ids"}}
        last: list[list[str]] = [[]]
        try:
            wait_for(lambda: not (last.__setitem__(0, api_twin(stack.api, pack, want)) or last[0]), 180,
                     "the API's twin to equal the fold of the good readings", every=3.0)
        except AssertionError:
            raise AssertionError("\n".join(last[0]) + "\n" + stack.tail()) from None
        assert stack.children() == pids, f"a process of the stack ended: {pids} -> {stack.children()}\n{stack.tail()}"

        # the read model skipped and counted each junk record on its topics once, and is fine
        body = wait_for(lambda: (r := stack.health()).status_code == 200 and r.json(), 120, "/health 200")
        rm = body["read_model"]
        assert rm["status"] == "ok", rm
        for topic in READ_MODEL:
            counted = sum(rm["broken"].get(topic, {}).values())
            nulls = sum(1 for k, _, _ in sent[topic] if k == "null value")  # a tombstone there: skipped, not broken
            assert counted == len(sent[topic]) - nulls, (topic, rm["broken"].get(topic), Counter(k for k, _, _ in sent[topic]))

        # each request that asks for nothing runnable ends as failed, with what was wrong, and the service runs on
        def outcomes() -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for m in drain(stack.bootstrap, SCENARIO_RESULTS.name, missing_ok=True, timeout=60):
                try:
                    name, rec = kit.CODEC.decode(m.value() or b"")
                except CodecError:
                    continue
                if name == "ScenarioProgressed" and rec["entity_id"] in bad_asks and rec["status"] != "queued":
                    out[rec["entity_id"]] = rec
            return out

        ends = wait_for(lambda: (o := outcomes()) and len(o) == len(bad_asks) and o, 120, "an outcome of each bad request")
        assert all(r["status"] == "failed" and r["message"] and "unexpectedly" not in r["message"]
                   for r in ends.values()), {k: (r["status"], r["message"][:200]) for k, r in ends.items()}
        assert stack.children() == pids, f"a process of the stack ended: {pids} -> {stack.children()}\n{stack.tail()}"

        # the API's feedback store skipped and counted each junk record on feedback.events, and lists none of it
        assert body["feedback"] == {**body["feedback"], "ready": True, "items": 0, "error": None,
                                    "broken": len(sent[FEEDBACK.name])}, body["feedback"]
        with httpx.Client(base_url=stack.api, headers=OPERATOR, timeout=10) as c:
            assert c.get("/feedback/queue", params={"status": "all"}).json()["total"] == 0
            audit = c.get("/audit", params={"start": "2000-01-01T00:00:00Z", "end": "2099-12-31T00:00:00Z"})
            assert audit.status_code == 200 and not [i for i in audit.json()["items"] if i.get("actor") == "fuzz"], \
                audit.text[:500]

        # one dead letter per junk record on the worker's and the scenario service's topics, none for anything else
        bad = {(t, p, o) for t in DEAD_LETTERING for _, p, o in sent[t]}
        got = wait_for(lambda: (c := letters(stack.bootstrap)) and set(c) >= bad and c, 120,
                       f"a dead letter for each of the {len(bad)} junk records on the dead-lettering topics")
        doubled = {k: n for k, n in got.items() if n > 1}
        assert not doubled, f"more than one dead letter for a record: {doubled}"
        assert set(got) == bad, f"dead letters for records that were not junk: {sorted(set(got) - bad)[:5]}"
        rows = summary(dead_letters(stack.bootstrap))  # 'plietsch dead-letters' over the junk on dead-letters itself
        assert sum(r[3] for r in rows) == len(bad), rows

        # the worker's event loop was never blocked for a second
        lag = loop_lag(stack)

        # the archive keeps exactly the good readings; history answers without a junk row
        good_ids = {e.event_id for e, _ in events} | {road_works.event_id}
        asked = {sid[-10:] for sid in bad_asks}  # archived too: audited launches (that failed)
        archived = wait_for(lambda: (a := [e.event_id for _, e in read_events(stack.data / "archive")])
                            and len(a) >= len(good_ids | asked) and a, 120, "the archive to hold the good records")
        assert len(archived) == len(good_ids | asked) and set(archived) == good_ids | asked, \
            f"{len(archived)} archived, {len(good_ids | asked)} good; not good: {sorted(set(archived) - good_ids - asked)[:5]}"
        check_history(stack.api, pack, events, good_ids)

        stack.stop()  # a restart over the same data folder: a new broker, the twin from the checkpoint and archive
        assert stack.proc is not None and stack.proc.returncode == 0, stack.tail()
        pids = stack.start()
        try:
            wait_for(lambda: not (last.__setitem__(0, api_twin(stack.api, pack, want)) or last[0]), 180,
                     "the twin after the restart", every=3.0)
        except AssertionError:
            raise AssertionError("after the restart:\n" + "\n".join(last[0]) + "\n" + stack.tail()) from None
        check_history(stack.api, pack, events, good_ids)
        assert stack.children() == pids, f"a process of the stack ended: {pids} -> {stack.children()}\n{stack.tail()}"
        wait_for(lambda: stack.health().status_code == 200, 120, "/health 200 after the restart")
        again = loop_lag(stack)  # the restarted worker's, over the archive's replay
        print(f"fuzz-stack: {sum(len(v) for v in sent.values())} junk records ({len(kinds)} kinds) on {len(TOPICS)} "
              f"topics, {len(events)} good readings; {len(bad)} dead letters; read model skips "
              f"{ {t: sum(rm['broken'].get(t, {}).values()) for t in sorted(READ_MODEL)} }; loop lag max {lag:.3f} s, "
              f"after the restart {again:.3f} s")
    finally:
        stack.stop()


def loop_lag(stack: Stack) -> float:
    """The worker's longest event-loop block since it started (plietsch_worker_loop_lag_max_seconds): under 1 s."""
    lag = float(wait_for(lambda: kit_metric(stack.web_port, "plietsch_worker_loop_lag_max_seconds"), 30, "the loop lag"))
    assert lag < 1.0, f"the worker's event loop was blocked for {lag:.2f} s"
    return lag


def kit_metric(port: int, name: str) -> float | None:
    try:
        return kit.metric(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text, name)
    except httpx.HTTPError:
        return None


def check_history(api: str, pack: RegionPack, events: list[tuple[Event, int]], good: set[str]) -> None:
    """The history routes answer 200, and what they list is good records only (every one of them in the area)."""
    start, end = kit.T0.isoformat(), (kit.T0 + timedelta(minutes=ROUNDS + 1)).isoformat()
    gauge = next(iter(pack.coast_by_gauge))
    with httpx.Client(base_url=api, headers=OPERATOR, timeout=30) as c:
        r = c.get("/history/range")
        assert r.status_code == 200, r.text[:500]
        r = c.get("/history/state", params={"time": end})
        assert r.status_code == 200, r.text[:500]
        r = c.get(f"/history/entities/{gauge}", params={"start": start, "end": end})
        assert r.status_code == 200, r.text[:500]
        assert [f["id"] for f in r.json()["features"]] == [e.event_id for e, _ in events if e.entity_id == gauge]
        r = c.get("/history/area", params={"bbox": "-180,-90,180,90", "start": start, "end": end, "limit": 10_000})
        assert r.status_code == 200, r.text[:500]
        listed = [f["id"] for f in r.json()["features"]]
        assert set(listed) <= good, f"not good readings in /history/area: {sorted(set(listed) - good)[:5]}"
        assert r.json()["total"] == len(good), (r.json()["total"], len(good))
