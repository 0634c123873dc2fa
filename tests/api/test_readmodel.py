"""The read side over a real broker of its own: bad input on every output topic is counted, logged once and skipped;
alerts, entities, aggregates and scenarios are order-safe and idempotent; open transactions are not read; old aggregate
windows leave; /health and /metrics walk from starting to ok to degraded."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka import Producer
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker
from streams.catalogue import ensure_topics
from streams.serde import to_record
from tests.api.readside import (
    CODEC,
    HOOD,
    ROAD,
    SEGMENT,
    SENSOR,
    TOPICS,
    Out,
    T,
    aggregate_record,
    cleared,
    coast_state,
    metric,
    partial,
    raised,
    raw,
    scenario,
    unknown_fingerprint,
    update,
    water_level,
)
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.aggregates import Partial
from twin.events import AlertRaised, ScenarioProgressed, TwinEntityUpdated
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker
UPD, ALR, AGG, SCN = TOPICS["updates"], TOPICS["alerts"], TOPICS["aggregates"], TOPICS["scenarios"]
SID = "kiel:_:scenario:s-readside"


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: broken records must not reach the readers of the session broker."""
    with EmbeddedBroker() as b:
        yield b


def app_for(bootstrap: str, **settings: Any) -> FastAPI:
    return create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, region_pack=BUNDLED_DIR / "kiel", **settings))


def wait_ok(c: TestClient) -> dict[str, Any]:
    return wait_for(lambda: (h := c.get("/health").json())["status"] == "ok" and h, 60, "the read model to be ok")


def broken_set() -> list[tuple[str, bytes | None, bytes, str]]:
    """(topic, key, value, reason) for every kind of broken record, on every output topic."""
    bad_id = to_record(TwinEntityUpdated(entity_id=SEGMENT, region="kiel", occurred_at=T, source="t", entity_type="coast",
                                         revision=50, state_json="{}", cause_event_id="c"))
    bad_id["entity_id"] = "not-an-entity-id"
    bad_time = to_record(AlertRaised(entity_id=SEGMENT, region="kiel", occurred_at=T, source="t", alert_id="a-bad",
                                     severity="severe", category="c", message="m", value=1, threshold=1, public=True))
    bad_time["occurred_at"] = "yesterday"
    bad_severity = {**bad_time, "occurred_at": T.isoformat(), "severity": "apocalyptic"}
    bad_step = to_record(ScenarioProgressed(entity_id=SID, region="kiel", occurred_at=T, source="t", status="running",
                                            step=1, steps=10))
    bad_step["step"] = -3
    not_scenario = {**bad_step, "step": 1, "entity_id": SENSOR}
    p = Partial("traffic_vehicles", ROAD, T, 900, 3, total=1.0, count=1)
    good_key = p.key
    truncated = update(SEGMENT, 60, coast_state(0.1))[:-12]  # a datum cut short: its last fields are missing
    return [
        (UPD, SEGMENT.encode(), b"garbage", "undecodable"),
        (UPD, SEGMENT.encode(), truncated, "undecodable"),
        (UPD, SEGMENT.encode(), unknown_fingerprint(), "unknown_schema"),
        (UPD, SEGMENT.encode(), water_level(), "wrong_type"),
        (UPD, SEGMENT.encode(), update(SEGMENT, 90, state_json="not json"), "bad_state_json"),
        (UPD, SEGMENT.encode(), update(SEGMENT, 91, state_json="[1, 2]"), "bad_state_json"),
        (UPD, SEGMENT.encode(), update(SEGMENT, 92, state={"level_m": "high"}), "bad_state"),
        (UPD, SEGMENT.encode(), update(SEGMENT, 93, coast_state(0.1), entity_type="sensor"), "bad_state"),
        (UPD, b"x", raw("TwinEntityUpdated", bad_id), "invalid"),
        (ALR, b"a-bad", b"\x00\x01", "undecodable"),
        (ALR, b"a-bad", update(SEGMENT, 94, coast_state(0.1)), "wrong_type"),
        (ALR, b"a-bad", raw("AlertRaised", bad_time), "invalid"),
        (ALR, b"a-bad", raw("AlertRaised", bad_severity), "invalid"),
        (AGG, good_key.encode(), b"\xc3\x01", "undecodable"),
        (AGG, good_key.encode(), scenario(SID, "running", 1), "wrong_type"),
        (AGG, good_key.encode(), aggregate_record(p, "not json"), "bad_partial_json"),
        (AGG, good_key.encode(), aggregate_record(p, '{"metric": "traffic_vehicles"}'), "bad_partial_json"),
        (AGG, good_key.encode(), aggregate_record(p, _with(p, total="many")),
         "bad_partial_json"),
        (AGG, good_key.encode(), aggregate_record(p, _with(p, rev="seven")), "bad_partial_json"),
        (AGG, b"traffic_vehicles|elsewhere|current|0", aggregate_record(p, _with(p, rev=2)), "key_mismatch"),
        (SCN, SID.encode(), b"\xff" * 40, "undecodable"),
        (SCN, SID.encode(), raised("a-x", T), "wrong_type"),
        (SCN, SID.encode(), raw("ScenarioProgressed", bad_step), "invalid"),
        (SCN, SID.encode(), raw("ScenarioProgressed", not_scenario), "invalid"),
    ]


def _with(p: Partial, **changes: Any) -> str:
    return json.dumps({**p.to_json(), **changes})


def expected_counts(items: list[tuple[str, bytes | None, bytes, str]], times: int = 1) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for topic, _, _, reason in items:
        out.setdefault(topic, {}).setdefault(reason, 0)
        out[topic][reason] += times
    return out


def test_broken_records_on_every_topic_are_counted_logged_once_and_skipped(
        broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="plietsch.api")
    bs = broker.bootstrap_servers
    ensure_topics(bs)
    out = Out(bs)
    k1, v1 = partial(T, 0, 10.0, 2, rev=1)
    k2, v2 = partial(T, 1, 5.0, 1, rev=1)
    # a good record on every topic, then every kind of broken one (twice), then good ones again
    out.send(UPD, SEGMENT, update(SEGMENT, 1, coast_state(0.5)))
    out.send(ALR, "a-1", raised("a-1", T))
    out.send(AGG, k1, v1)
    out.send(SCN, SID, scenario(SID, "running", 1))
    bad = broken_set()
    for _ in range(2):
        for topic, key, value, _ in bad:
            out.send(topic, key, value)
    out.send(UPD, SEGMENT, update(SEGMENT, 5, coast_state(0.7)))  # below the broken revisions 90-93: still applied
    out.send(ALR, "a-2", raised("a-2", T))
    out.send(AGG, k2, v2)
    out.send(SCN, SID, scenario(SID, "running", 2))

    def check(c: TestClient, revision: int, times: int) -> None:
        seg = c.get(f"/entities/{SEGMENT}").json()["properties"]
        assert seg["revision"] == revision and seg["reported"]["level_m"] == 0.7
        assert {a["alert_id"] for a in c.get("/alerts").json()} == {"a-1", "a-2"}
        assert c.get("/aggregates").json()[0]["sum"] == 15.0
        assert c.get(f"/scenarios/{SID}").json()["step"] == 2
        health = c.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["read_model"]["broken"] == expected_counts(bad, times)
        text = c.get("/metrics").text
        assert metric(text, "plietsch_read_model_records_broken_total", topic=UPD, reason="bad_state_json") == 2 * times
        assert metric(text, "plietsch_read_model_records_broken_total", topic=AGG, reason="key_mismatch") == times
        assert metric(text, "plietsch_read_model_records_applied_total", topic=SCN) == 2

    with TestClient(app_for(bs), headers=OPERATOR) as c:
        wait_ok(c)
        check(c, 5, 2)
        # live: the same kinds again, then a good update; nothing new in the log
        for topic, key, value, _ in bad:
            out.send(topic, key, value)
        out.send(UPD, SEGMENT, update(SEGMENT, 6, coast_state(0.7)))
        wait_for(lambda: c.get(f"/entities/{SEGMENT}").json()["properties"]["revision"] == 6, 30, "the live update")
        check(c, 6, 3)
    lines = [r.getMessage() for r in caplog.records if "skipping a broken record" in r.getMessage()]
    pairs = {(t, r) for t, _, _, r in bad}
    assert len(lines) == len(pairs), "\n".join(lines)  # once per (topic, reason), not once per record
    assert any("not-an-entity-id" in line for line in lines) and any("'not json'" in line for line in lines)
    # a restart over the same (compacted) topics starts fine and holds the same
    with TestClient(app_for(bs), headers=OPERATOR) as c:
        wait_ok(c)
        check(c, 6, 3)


def test_only_committed_records_count_and_every_topic_is_order_safe(broker: EmbeddedBroker) -> None:
    bs = broker.bootstrap_servers
    ensure_topics(bs)
    out = Out(bs)
    # alerts: a clear before its (older) raise leaves no alert; a redelivered raise after its clear changes nothing;
    # an older update of an active alert does not replace the newer one
    out.send(ALR, "a-rev", cleared("a-rev", T + timedelta(minutes=5)))
    out.send(ALR, "a-rev", raised("a-rev", T))
    eid = str(uuid.uuid4())
    out.send(ALR, "a-dup", raised("a-dup", T, event_id=eid))
    out.send(ALR, "a-dup", raised("a-dup", T, event_id=eid))
    out.send(ALR, "a-dup", cleared("a-dup", T + timedelta(minutes=1)))
    out.send(ALR, "a-dup", raised("a-dup", T, event_id=eid))
    out.send(ALR, "a-new", raised("a-new", T + timedelta(hours=1), severity="extreme"))
    out.send(ALR, "a-new", raised("a-new", T, severity="warning"))
    # entities: the newest revision wins; scenarios: a finished run is not set back by a late progress record
    out.send(UPD, SEGMENT, update(SEGMENT, 7, coast_state(0.8)))
    out.send(UPD, SEGMENT, update(SEGMENT, 7, coast_state(0.9)))  # the same revision redone with another state: wins
    out.send(UPD, SEGMENT, update(SEGMENT, 7, coast_state(0.9)))  # redelivered: changes nothing
    out.send(UPD, SEGMENT, update(SEGMENT, 4, coast_state(0.2)))
    out.send(SCN, SID, scenario(SID, "completed", 10))
    out.send(SCN, SID, scenario(SID, "running", 6))
    # records of a transaction that is still open are not read (read_committed) until it commits
    tx = Producer({"bootstrap.servers": bs, "transactional.id": f"readside-{uuid.uuid4().hex[:6]}"})
    tx.init_transactions(15)
    tx.begin_transaction()
    tx.produce(ALR, key=b"a-open", value=raised("a-open", T))
    tx.produce(UPD, key=SEGMENT.encode(), value=update(SEGMENT, 8, coast_state(1.0)))
    tx.flush(15)
    with TestClient(app_for(bs), headers=OPERATOR) as c:
        wait_ok(c)
        alerts = {a["alert_id"]: a for a in c.get("/alerts").json()}
        assert set(alerts) == {"a-new"} and alerts["a-new"]["severity"] == "extreme"
        seg = c.get(f"/entities/{SEGMENT}").json()["properties"]
        assert seg["revision"] == 7 and seg["reported"]["level_m"] == 0.9
        tx.commit_transaction(15)
        wait_for(lambda: c.get(f"/entities/{SEGMENT}").json()["properties"]["revision"] == 8, 30, "the committed update")
        assert {a["alert_id"] for a in c.get("/alerts").json()} == {"a-new", "a-open"}
        assert c.get(f"/scenarios/{SID}").json()["status"] == "completed"
        text = c.get("/metrics").text
        assert metric(text, "plietsch_read_model_records_skipped_total", topic=ALR, reason="duplicate") == 1
        assert metric(text, "plietsch_read_model_records_skipped_total", topic=ALR, reason="stale") == 3
        assert metric(text, "plietsch_read_model_records_skipped_total", topic=UPD, reason="stale_revision") == 1
        assert metric(text, "plietsch_read_model_records_skipped_total", topic=UPD, reason="duplicate") == 1
        assert metric(text, "plietsch_read_model_records_skipped_total", topic=SCN, reason="stale") == 1
        assert c.get("/health").json()["read_model"]["broken"] == {}
        # live, in reverse order too: the clear of a-new arrives, then a stale raise of it: it stays cleared
        seq = c.get("/health").json()["read_model"]["seq"]
        out.send(ALR, "a-new", cleared("a-new", T + timedelta(hours=2)))
        out.send(ALR, "a-new", raised("a-new", T + timedelta(hours=1, minutes=30)))
        out.send(ALR, "a-last", raised("a-last", T))
        wait_for(lambda: "a-last" in {a["alert_id"] for a in c.get("/alerts").json()}, 30, "the live alert")
        assert {a["alert_id"] for a in c.get("/alerts").json()} == {"a-open", "a-last"}
        assert c.get("/health").json()["read_model"]["seq"] == seq + 2  # the clear and a-last; the stale raise nothing
        # a write redone after an aborted transaction wins over the aborted one, also where the broker shows the
        # aborted records to read_committed readers (Tansu does): the redone one is later in the partition
        tx.begin_transaction()
        tx.produce(UPD, key=SEGMENT.encode(), value=update(SEGMENT, 9, coast_state(2.0)))
        tx.flush(15)
        tx.abort_transaction(15)
        tx.begin_transaction()
        tx.produce(UPD, key=SEGMENT.encode(), value=update(SEGMENT, 9, coast_state(1.5)))
        tx.commit_transaction(15)
        wait_for(lambda: (p := c.get(f"/entities/{SEGMENT}").json()["properties"])["revision"] == 9
                 and p["reported"]["level_m"] == 1.5, 30, "the redone update, not the aborted one")


def test_aggregates_keep_the_highest_rev_and_old_windows_leave(broker: EmbeddedBroker) -> None:
    bs = broker.bootstrap_servers
    ensure_topics(bs)
    out = Out(bs)
    old, mid, later = T - timedelta(hours=50), T - timedelta(hours=47), T + timedelta(hours=2)
    for key, value in (partial(old, 0, 1.0, 1, rev=0), partial(mid, 0, 2.0, 1, rev=0),
                       partial(T, 0, 10.0, 2, rev=5), partial(T, 0, 99.0, 9, rev=3),  # a stale rev: ignored
                       partial(T, 1, 5.0, 1, rev=1), partial(T, 1, 5.0, 1, rev=1),  # redelivered: nothing
                       partial(T, 1, 6.0, 1, rev=1),  # the same rev redone with other figures: the later wins
                       partial(T, 2, 7.0, 1), partial(T, 2, 8.0, 1),  # old data without rev: the later one wins
                       partial(None, 0, 30.0, 1, metric="parking_occupancy", group=HOOD, rev=0)):
        out.send(AGG, key, value)

    def windows(c: TestClient, **params: Any) -> dict[str | None, dict[str, Any]]:
        return {a.get("window"): a for a in c.get("/aggregates", params={"metric": "traffic_vehicles", **params}).json()}

    with TestClient(app_for(bs), headers=OPERATOR) as c:
        wait_ok(c)
        got = windows(c)
        assert set(got) == {mid.isoformat(), T.isoformat()}  # 50 h behind the newest window: gone
        assert got[T.isoformat()]["sum"] == 24.0 and got[T.isoformat()]["count"] == 4
        assert [a["metric"] for a in c.get("/aggregates", params={"latest": True}).json()] == \
            ["parking_occupancy", "traffic_vehicles"]
        # live: a tombstone deletes its partial, a newer window pushes the 47 h one out
        out.send(AGG, partial(T, 1, 0, 0)[0], None)
        out.send(AGG, *partial(later, 0, 4.0, 1, rev=0))
        wait_for(lambda: later.isoformat() in windows(c), 30, "the newer window")
        got = windows(c)
        assert set(got) == {T.isoformat(), later.isoformat()} and got[T.isoformat()]["sum"] == 18.0
        assert list(windows(c, latest=True)) == [later.isoformat()]
        gaarden = next(n for n in c.get("/public/summary").json()["neighbourhoods"] if n["name"] == "Gaarden")
        assert gaarden["traffic_vehicles_15min"] == "<5"  # 4 vehicles: the public sees counts under 5 as "<5"
        health = c.get("/health").json()["read_model"]
        assert health["aggregate_partials"] == 4  # T: shards 0 and 2; later: shard 0; parking
        text = c.get("/metrics").text
        assert metric(text, "plietsch_read_model_records_skipped_total", topic=AGG, reason="stale_rev") == 1
        assert metric(text, "plietsch_read_model_records_skipped_total", topic=AGG, reason="duplicate") == 1
    # the horizon is a setting, applied per shard (twin.aggregates): with one hour, shard 0 (at `later`) keeps only its
    # newest window, shard 2 (newest reading at T) still keeps T; the current parking figure stays
    with TestClient(app_for(bs, aggregate_horizon_h=1.0), headers=OPERATOR) as c:
        wait_ok(c)
        got = windows(c)
        assert set(got) == {T.isoformat(), later.isoformat()} and got[T.isoformat()]["sum"] == 8.0
        assert len(c.get("/aggregates").json()) == 3


def test_health_and_metrics_walk_from_starting_to_ok_to_degraded(broker: EmbeddedBroker) -> None:
    bs = broker.bootstrap_servers
    with TestClient(app_for(bs), headers=OPERATOR) as c:
        first = wait_for(lambda: "do not exist yet" in str((h := c.get("/health")).json()["reason"]) and h, 30,
                         "the missing topics as the reason to be starting")
        assert first.status_code == 200 and first.json()["status"] == "starting"
        ensure_topics(bs)  # the worker would create them
        Out(bs).send(UPD, SEGMENT, update(SEGMENT, 1, coast_state(0.5)))
        health = wait_ok(c)
        assert health["reason"] is None and health["read_model"]["lag"] == dict.fromkeys(TOPICS.values(), 0)
        wait_for(lambda: c.get("/health").json()["read_model"]["applied"] == 1, 30, "the update")
        text = c.get("/metrics").text
        assert metric(text, "plietsch_read_model_status") == 1
        assert metric(text, "plietsch_read_model_records_applied_total", topic=UPD) == 1
        assert metric(text, "plietsch_read_model_lag_records", topic=UPD) == 0
        assert metric(text, "plietsch_sse_subscribers") == 0
        assert (metric(text, "plietsch_api_requests_total", method="GET", route="/health", status="200") or 0) >= 2
        assert (metric(text, "plietsch_api_request_seconds_count", method="GET", route="/health") or 0) >= 2
        c.get("/entities/kiel:gaarden:sensor:none")
        assert metric(c.get("/metrics").text, "plietsch_api_requests_total", method="GET",
                      route="/entities/{entity_id}", status="404") == 1
        # a second app in the same process keeps its own registry
        with TestClient(app_for(bs), headers=OPERATOR) as other:
            wait_ok(other)
            assert metric(other.get("/metrics").text, "plietsch_api_requests_total", method="GET",
                          route="/entities/{entity_id}", status="404") is None
            # its read model thread stops: 503
            other.app.state.read_model.stop()  # type: ignore[attr-defined]
            r = other.get("/health")
            assert r.status_code == 503 and r.json()["status"] == "degraded" and "stopped" in r.json()["reason"]
        # the broker goes away: 503 with the reason, within a bounded time
        broker.stop()
        down = wait_for(lambda: (h := c.get("/health")).status_code == 503 and h, 60, "/health to answer 503")
        assert down.json()["status"] == "degraded" and "cannot reach Kafka" in down.json()["reason"]
        assert metric(c.get("/metrics").text, "plietsch_read_model_status") == 2


def test_lag_from_librdkafka_statistics(caplog: pytest.LogCaptureFixture) -> None:
    """Lag = end of the committed records - position; a partition not read yet counts from its low watermark; a lag
    that grows past 10,000 records is logged, once a minute at most."""
    from api.readmodel import ReadModel

    rm = ReadModel("127.0.0.1:1", CODEC)
    stats = {"brokers": {"127.0.0.1:1/1": {"state": "UP", "nodeid": 1}},
             "topics": {UPD: {"partitions": {"0": {"ls_offset": 50, "hi_offset": 50, "app_offset": 20, "lo_offset": 0},
                                             "1": {"ls_offset": 7, "hi_offset": 9, "app_offset": -1001, "lo_offset": 2},
                                             "2": {"ls_offset": 5, "hi_offset": 5, "app_offset": 9, "lo_offset": 0},
                                             "-1": {"ls_offset": -1, "hi_offset": -1, "app_offset": -1}}}}}
    rm._on_stats(json.dumps(stats))
    assert rm.lag_by_topic()[UPD] == 30 + 5 + 0 and rm.broker_down_since is None
    rm._on_stats(json.dumps({"brokers": {"GroupCoordinator": {"state": "UP", "nodeid": -1},
                                         "127.0.0.1:1/1": {"state": "DOWN", "nodeid": 1}}}))
    assert rm.broker_down_since is not None and rm.lag_by_topic()[UPD] == 0
    rm.ready.set()
    caplog.set_level(logging.WARNING, logger="plietsch.api")
    for behind in (20_000, 30_000, 40_000):
        rm._on_stats(json.dumps({"topics": {UPD: {"partitions": {"0": {"ls_offset": behind, "app_offset": 0}}}}}))
    assert [r.getMessage() for r in caplog.records] == [
        "read model: 20000 records behind and growing (twin.updates 20000); live clients see the twin late"]


def test_a_batch_record_applies_its_good_datums_and_counts_its_broken_ones() -> None:
    from api.readmodel import ReadModel
    from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, frame_batch

    rm = ReadModel("127.0.0.1:1", CODEC)
    headers = [(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE)]
    frame = frame_batch([update(SEGMENT, 1, coast_state(0.1)), b"garbage", update(SENSOR, 1, {"values": {}})])
    rm.handle(UPD, 0, 0, None, frame, headers)
    rm.handle(UPD, 0, 1, None, b"\x10" + b"\x00" * 3, headers)  # a frame that declares more than it holds
    rm.handle(UPD, 0, 2, None, b"\x02" + b"\x00" * 100_000, headers)  # one byte, then 99,999 empty datums
    assert set(rm.state) == {SEGMENT, SENSOR} and rm.applied[UPD] == 2
    assert rm.broken == {(UPD, "undecodable"): 3}
