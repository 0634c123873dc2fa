"""Checkpoints (contract 5) against a real Kafka-protocol broker (a Tansu of their own: the checkpointer reads every
output topic, which the session broker's other tests write to)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from infra.broker import EmbeddedBroker
from schemas.codec import SingleObjectCodec
from streams.catalogue import ALERTS, TWIN_UPDATES, TopicSpec, ensure_topics
from streams.checkpoint import (
    Checkpointer,
    CheckpointError,
    checkpoints,
    covered_by,
    latest,
    load,
    parse_marker,
    restore,
    restore_latest,
)
from streams.consume import drain
from streams.serde import encode_event
from twin.events import AlertCleared, AlertRaised
from twin.region import bundled_pack

pytestmark = pytest.mark.broker
APP = "ckpt-test"
SENSOR_CL = f"{APP}-twin-sensor-state-changelog"
COAST_CL = f"{APP}-twin-coast-state-changelog"
SEGMENT = next(iter(bundled_pack().coast))


@pytest.fixture
def broker() -> Iterator[str]:
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap_servers)
        ensure_topics(b.bootstrap_servers, tuple(TopicSpec(t, (), key="k", partitions=2, retention_ms=None, compacted=True)
                                                 for t in (SENSOR_CL, COAST_CL)))
        yield b.bootstrap_servers


def _wait(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_markers_parse_and_the_smallest_marker_per_origin_is_covered() -> None:
    origin, off = parse_marker(b"__applied__|e1|sensor.parking|3", b"17")
    assert (origin, off) == (("e1", "sensor.parking", 3), 17)
    assert parse_marker(b"__applied__|e1|sensor.parking|3", b'{"offset": 5}')[1] == 5
    with pytest.raises(CheckpointError, match="not '__applied__"):
        parse_marker(b"__applied__|e1|sensor.parking", b"17")
    with pytest.raises(CheckpointError, match="not a JSON integer"):
        parse_marker(b"__applied__|e1|t|0", b"seventeen")
    assert covered_by([(("e", "t", 0), 9), (("e", "t", 0), 4), (("e", "t", 1), 2)]) == {("e", "t", 0): 4, ("e", "t", 1): 2}


def test_checkpoints_cut_changelogs_only_between_transactions(broker: str, tmp_path: Path) -> None:
    """Each transaction sets every state key of a partition, in two tables of one agent, and their markers to the
    transaction's number: a checkpoint taken while transactions run must show one number per partition across both
    tables, never a mix, and never the open transaction."""
    root = tmp_path / "checkpoints"
    ck = Checkpointer(broker, APP, root, SingleObjectCodec(), interval_s=0.3, keep=50,
                      agent_tables=[("twin-sensor-state", "twin-coast-state")]).start()
    p = Producer({"bootstrap.servers": broker, "transactional.id": "ckpt-test-tx", "enable.idempotence": True})
    p.init_transactions()
    last = 0
    try:
        # at least 40 transactions, and on until the checkpointer has written 3 periodic checkpoints meanwhile (a
        # checkpoint's time depends on the machine's load: a fixed number of transactions once ended before any)
        deadline = time.monotonic() + 120
        for n in range(1, 100_000):
            if n > 40 and (len(checkpoints(root)) >= 3 or time.monotonic() > deadline):
                break
            last = n
            p.begin_transaction()
            for part in (0, 1):
                for k in range(20):
                    p.produce(SENSOR_CL, key=f"s{k}".encode(), value=json.dumps({"n": n}).encode(), partition=part)
                p.produce(COAST_CL, key=b"c", value=json.dumps({"n": n}).encode(), partition=part)
                for cl in (SENSOR_CL, COAST_CL):
                    p.produce(cl, key=f"__applied__|e1|sensor.parking|{part}".encode(), value=str(n).encode(), partition=part)
            p.commit_transaction()
            time.sleep(0.02)
        p.begin_transaction()  # left open while a checkpoint is taken
        for part in (0, 1):
            p.produce(SENSOR_CL, key=b"s0", value=json.dumps({"n": 999}).encode(), partition=part)
        p.flush()
        during = ck.checkpoint_now(timeout=2)
        for part in (0, 1):
            for cl in (SENSOR_CL, COAST_CL):
                p.produce(cl, key=f"__applied__|e1|sensor.parking|{part}".encode(), value=b"999", partition=part)
        p.commit_transaction()
        final = ck.checkpoint_now(timeout=10)
    finally:
        ck.stop()
    assert during is not None and final is not None
    written = checkpoints(root)
    assert len(written) >= 3, "the checkpointer wrote periodic checkpoints while the transactions ran"
    for path in written:
        c = load(path)
        for part in (0, 1):
            values = {json.loads(e.value)["n"] for e in c.topics[SENSOR_CL] if e.partition == part and e.key == b"s0"}
            markers = {int(e.value) for e in c.topics[SENSOR_CL] if e.partition == part and e.key.startswith(b"__applied__")}  # type: ignore[union-attr]
            assert len(values) <= 1 and values == markers, f"{path.name} partition {part}: state {values}, marker {markers}"
            others = {json.loads(e.value)["n"] for e in c.topics[SENSOR_CL] if e.partition == part and e.key not in (b"s0", None)
                      and not e.key.startswith(b"__")}
            assert others == {min(m, last) for m in markers}, f"{path.name} partition {part}: {others} beside marker {markers}"
            coast = {json.loads(e.value)["n"] for e in c.topics[COAST_CL] if e.partition == part and e.key == b"c"}
            coast_markers = {int(e.value) for e in c.topics[COAST_CL] if e.partition == part and e.key.startswith(b"__applied__")}  # type: ignore[union-attr]
            assert coast == others and coast_markers == markers, f"{path.name} partition {part}: the tables disagree"
    assert all(m < 999 for m in load(during).covered().values()), "the open transaction is not in a checkpoint"
    assert load(final).covered() == {("e1", "sensor.parking", 0): 999, ("e1", "sensor.parking", 1): 999}


def _alert(cls: type, alert_id: str, t: datetime) -> bytes:
    extra = {"severity": "warning", "value": 1.0, "threshold": 0.5, "public": True} if cls is AlertRaised else {}
    return encode_event(SingleObjectCodec(), cls(entity_id=SEGMENT, region="kiel", occurred_at=t, source="test",
                                                 alert_id=alert_id, category="storm_surge", message="m", **extra))


def test_a_checkpoint_keeps_latest_per_key_and_active_alerts_and_restores_into_a_fresh_broker(broker: str, tmp_path: Path) -> None:
    t = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    p = Producer({"bootstrap.servers": broker, "enable.idempotence": True})
    p.produce(TWIN_UPDATES.name, key=b"e1", value=b"old", partition=1)
    p.produce(TWIN_UPDATES.name, key=b"e1", value=b"new", partition=1, headers=[("h", b"1")])
    p.produce(TWIN_UPDATES.name, key=b"e2", value=b"gone", partition=2)
    p.produce(TWIN_UPDATES.name, key=b"e2", value=None, partition=2)
    for alert_id, kinds in {"a1": [AlertRaised], "a2": [AlertRaised, AlertCleared], "a3": [AlertCleared]}.items():
        for cls in kinds:
            p.produce(ALERTS.name, key=alert_id.encode(), value=_alert(cls, alert_id, t), partition=0)
    p.produce(SENSOR_CL, key=b"__applied__|e1|sensor.water-level|0", value=b"10", partition=0)
    p.produce(COAST_CL, key=b"__applied__|e1|sensor.water-level|0", value=b"7", partition=0)
    p.produce(COAST_CL, key=b"seg-1", value=b'{"level": 1}', partition=1)
    assert p.flush(10) == 0
    root = tmp_path / "checkpoints"
    # the two tables stand for two agents that consume the same origin: each skips what it has, so the smaller counts
    ck = Checkpointer(broker, APP, root, SingleObjectCodec(), interval_s=3600, keep=2, agent_tables=[]).start()
    try:
        _wait(lambda: ck.views.get(COAST_CL) and ck.views[COAST_CL].stable, 30, "the checkpointer to read the topics")
        paths = [ck.checkpoint_now(timeout=5) for _ in range(3)]
    finally:
        ck.stop()
    assert paths[0] is not None and paths[0] == paths[1] == paths[2], "nothing changed: no new checkpoint is written"
    (root / ".partial-2099-01-01").mkdir()  # a crash while writing: never loaded
    c = latest(root)
    assert c is not None and c.path == paths[0]
    assert [(e.partition, e.key, e.value, e.headers) for e in c.topics[TWIN_UPDATES.name]] == [(1, b"e1", b"new", [("h", b"1")])]
    assert sorted(e.key for e in c.topics[ALERTS.name]) == [b"a1"]
    assert c.covered() == {("e1", "sensor.water-level", 0): 7}
    with EmbeddedBroker() as fresh:
        ensure_topics(fresh.bootstrap_servers)
        restored, covered = restore_latest(fresh.bootstrap_servers, root, print)
        assert restored is not None and covered == {("e1", "sensor.water-level", 0): 7}
        got = {(m.partition(), m.key(), m.value()) for m in drain(fresh.bootstrap_servers, COAST_CL)}
        assert got == {(0, b"__applied__|e1|sensor.water-level|0", b"7"), (1, b"seg-1", b'{"level": 1}')}
        assert [(m.partition(), m.key(), m.value()) for m in drain(fresh.bootstrap_servers, TWIN_UPDATES.name)] == [(1, b"e1", b"new")]
        assert [m.key() for m in drain(fresh.bootstrap_servers, ALERTS.name)] == [b"a1"]
        assert restore(fresh.bootstrap_servers, load(paths[0])) == 5  # 1 update, 1 alert, 3 changelog records


def test_keeps_the_newest_checkpoints(broker: str, tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    ck = Checkpointer(broker, APP, root, SingleObjectCodec(), interval_s=3600, keep=2).start()
    p = Producer({"bootstrap.servers": broker})
    try:
        for i in range(4):
            p.produce(TWIN_UPDATES.name, key=b"e", value=str(i).encode(), partition=0)
            p.flush(10)
            _wait(lambda i=i: any(e.value == str(i).encode() for e in ck.views[TWIN_UPDATES.name].stable.values())
                  if TWIN_UPDATES.name in ck.views else None, 30, f"update {i}")
            assert ck.checkpoint_now(timeout=5) is not None
    finally:
        ck.stop()
    kept = checkpoints(root)
    assert len(kept) == 2
    assert [load(k).topics[TWIN_UPDATES.name][0].value for k in kept] == [b"2", b"3"]


def test_a_checkpoint_without_markers_is_not_restored(broker: str, tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    ck = Checkpointer(broker, APP, root, SingleObjectCodec(), interval_s=3600).start()
    p = Producer({"bootstrap.servers": broker})
    p.produce(COAST_CL, key=b"seg-1", value=b"{}", partition=0)
    p.flush(10)
    try:
        _wait(lambda: ck.views.get(COAST_CL) and ck.views[COAST_CL].stable, 30, "the changelog record")
        assert ck.checkpoint_now(timeout=5) is not None
    finally:
        ck.stop()
    said: list[str] = []
    assert restore_latest(broker, root, said.append) == (None, {})
    assert "no applied-offset markers" in said[0]


def test_a_checkpoint_never_holds_part_of_a_transaction() -> None:
    """On Tansu a transaction a crash cut short is visible; the checkpointer holds each write back until its end record
    (``__txseq__``) and drops what a cut-short write left when its redo (same number) arrives."""
    import json as _json

    from streams.checkpoint import Entry
    from streams.tables import SEQ_HEADER, SEQ_KEY, TxGate

    def rec(seq: int | None, key: bytes, value: int | None) -> tuple[bytes, Entry | None, list[tuple[str, bytes]] | None]:
        h = None if seq is None else [(SEQ_HEADER, str(seq).encode())]
        entry = None if value is None else Entry(0, 0, key, _json.dumps(value).encode(), list(h or []))
        return key, entry, h

    log = [rec(None, b"old", 1),                                          # written before numbers existed
           rec(1, b"a", 1), rec(1, b"b", 1), rec(1, SEQ_KEY, 1),          # committed
           rec(2, b"a", 20),                                              # cut short
           rec(2, b"a", 2), rec(2, b"c", 2), rec(2, SEQ_KEY, 2),          # its redo
           rec(3, b"b", None),                                            # committed, end compacted away
           rec(4, b"c", 4), rec(4, SEQ_KEY, 4),                           # committed
           rec(5, b"a", 50)]                                              # cut short, nothing after it yet
    gate: TxGate[Entry | None] = TxGate()
    view: dict[bytes | None, Any] = {}
    for key, entry, headers in log:
        for k, e in gate.feed(key, entry, headers):
            if e is None:
                view.pop(k, None)
            else:
                view[k] = _json.loads(e.value)
    assert view == {b"old": 1, b"a": 2, b"c": 4, SEQ_KEY: 4}
