"""/health watches the pipeline behind the API: a worker or archive sink that falls behind its input topics (or does
not run) makes it 503 with the reason, after a grace; caught up, it is 200 again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from fastapi.testclient import TestClient

from api.pipeline import Group, PipelineWatch
from infra.broker import EmbeddedBroker
from streams.catalogue import AUDIT, FEEDBACK, MUNICIPAL_TOPICS, SENSOR_TOPICS, ensure_topics
from tests.api.test_readmodel import app_for, wait_ok
from tests.credentials import OPERATOR
from tests.helpers import wait_for

INPUTS = [t.name for t in (*SENSOR_TOPICS.values(), *MUNICIPAL_TOPICS.values())]


def test_the_watch_reports_only_a_lag_that_lasts() -> None:
    g = Group("the worker", "w", ["t"])
    watch = PipelineWatch("unused", [g], limit=100, grace_s=60)
    watch.observe(g, 500, now=0.0)
    assert watch.status(now=59.0) == ("ok", None)  # a burst (a replay at start, a pause) is not an outage
    status, reason = watch.status(now=61.0)
    assert status == "degraded" and reason is not None
    assert "the worker (consumer group w)" in reason and "now 500" in reason and "PLIETSCH_HEALTH_LAG_LIMIT" in reason
    watch.observe(g, None, now=62.0)  # unknown (the broker did not answer): no change either way
    assert watch.status(now=62.0)[0] == "degraded"
    watch.observe(g, 100, now=63.0)
    assert watch.status(now=200.0) == ("ok", None)
    watch.observe(g, 101, now=300.0)  # behind again: the grace starts anew
    assert watch.status(now=330.0) == ("ok", None)


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


def _commit_to_end(bootstrap: str, group: str, topics: list[str]) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(timeout=10)
        ends = []
        for t in topics:
            for p in md.topics[t].partitions:
                _, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                ends.append(TopicPartition(t, p, hi))
        c.commit(offsets=ends, asynchronous=False)
    finally:
        c.close()


@pytest.mark.broker
def test_health_is_503_while_the_worker_and_the_archive_lag_and_200_when_they_catch_up(broker: EmbeddedBroker) -> None:
    ensure_topics(broker.bootstrap_servers)
    app = app_for(broker.bootstrap_servers, health_lag_limit=5, health_lag_grace_s=1.0, health_every_s=0.3)
    with TestClient(app) as c:
        c.headers.update(OPERATOR)
        wait_ok(c)
        p = Producer({"bootstrap.servers": broker.bootstrap_servers})
        for i in range(20):  # no worker and no archive sink consume them; one record batch each (Tansu gives the end
            p.produce(SENSOR_TOPICS["traffic_count"].name, key=f"k{i}".encode(), value=b"x")  # of a partition as the
            p.flush(10)  # start of its last batch + 1)

        def degraded() -> dict | None:
            r = c.get("/health")
            return r.json() if r.status_code == 503 else None

        body = wait_for(degraded, 60, "/health to say the worker lags")
        assert body["status"] == "degraded" and "the worker (consumer group plietsch-twin)" in body["reason"]
        assert body["consumer_lag"]["plietsch-twin"] >= 6 and body["consumer_lag"]["plietsch-archive"] >= 6
        public = c.get("/health", headers={"Authorization": ""})
        assert public.status_code == 503 and set(public.json()) == {"status", "reason"}
        _commit_to_end(broker.bootstrap_servers, "plietsch-twin", INPUTS)  # the worker caught up; the archive sink has not
        body = wait_for(lambda: (b := degraded()) and "archive sink" in b["reason"] and b, 60, "the archive's turn")
        assert body["consumer_lag"]["plietsch-twin"] == 0
        _commit_to_end(broker.bootstrap_servers, "plietsch-archive", [*INPUTS, AUDIT.name, FEEDBACK.name])
        wait_for(lambda: c.get("/health").status_code == 200, 60, "/health to be 200 again")
        assert c.get("/health").json()["status"] == "ok"


@pytest.mark.broker
def test_the_lag_is_unknown_while_the_broker_is_paused_and_exact_after(broker: EmbeddedBroker) -> None:
    """The watch reads what a group committed through a consumer of that group (not an AdminClient, whose coordinator
    requests librdkafka 2.x can abort the process on after a broker pause): a broker that does not answer gives None
    (unknown), and afterwards the count is exact again."""
    import os
    import signal

    from streams.startup import group_consumers, group_lag

    bs = broker.bootstrap_servers
    topic = SENSOR_TOPICS["traffic_count"].name
    ensure_topics(bs)
    producer = Producer({"bootstrap.servers": bs})
    for i in range(7):  # a batch each (Tansu's high watermark is the last batch's base offset + 1)
        producer.produce(topic, key=b"k", value=b"v", partition=i % 2)
        producer.flush(10)
    _commit_to_end(bs, "done", [topic])
    producer.produce(topic, key=b"k", value=b"v", partition=0)
    producer.flush(10)
    consumers = group_consumers(bs, ["done", "never"])
    try:
        assert group_lag({"done": consumers["done"]}, [topic]) == 1
        assert group_lag(consumers, [topic]) == 1 + 8  # a group that never committed: everything
        assert broker._proc is not None
        os.kill(broker._proc.pid, signal.SIGSTOP)
        try:
            assert group_lag(consumers, [topic], timeout=0.5) is None
        finally:
            os.kill(broker._proc.pid, signal.SIGCONT)
        wait_for(lambda: group_lag(consumers, [topic]) == 9, 30, "the lag once the broker answers again")
    finally:
        for c in consumers.values():
            c.close()
