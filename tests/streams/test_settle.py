"""A committed transaction that Tansu leaves "prepared": it ended while an earlier-begun transaction of another producer
on a partition they share was open, and that one's end did not take it along. Read_committed readers then stop before
it on every partition it wrote, for good (tansu-storage 0.6 ``txn_end``: a transaction is finalised only when every
transaction overlapping it is prepared; the memory storage has no timeout sweep). ``streams.tables`` finalises it with
settle writes: a new owner's before it loads, and the worker's when a partition has been idle (see its docstring)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.broker import EmbeddedBroker
from streams.tables import SETTLE_AFTER_S, SETTLE_AGAIN_S, TxTables, marker_key

pytestmark = pytest.mark.broker


class Crashed(RuntimeError):
    pass


def _crash(message: str) -> None:
    raise Crashed(message)


def _producer(bootstrap: str) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"other-{uuid.uuid4().hex[:6]}",
                  "enable.idempotence": True, "linger.ms": 0})
    p.init_transactions(30)
    return p


@pytest.fixture()
def held() -> Iterator[tuple[str, str, TxTables]]:
    """A broker of its own (no other producer may end the held transaction by chance) with two shared output
    partitions X and Y, and an agent's tables whose last commit is held: it wrote X while producer one's earlier
    transaction on X and Y was open; one's end was held by producer two's open transaction on Y; two's end finalised
    one's (they share Y) but not the agent's (no Y)."""
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        out = f"shared-{uuid.uuid4().hex[:6]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(out, 2, 1)])[out].result()
        tx = TxTables(bootstrap, f"settle-{uuid.uuid4().hex[:6]}", "agent", ["t"], 1, on_crash=_crash)
        tx.jitter = 0.0  # the settle delays exactly as scheduled
        tx.commit(0, {"t": {b"a": {"v": 1}}}, [(out, b"a", b"first", None)], {"t": {("e", "in", 0): 1}})
        one, two = _producer(bootstrap), _producer(bootstrap)
        one.begin_transaction()
        one.produce(out, value=b"one-x", partition=0)
        one.produce(out, value=b"one-y", partition=1)
        one.flush(10)
        two.begin_transaction()
        two.produce(out, value=b"two-y", partition=1)
        two.flush(10)
        tx.commit(0, {"t": {b"a": {"v": 2}}}, [(out, b"a", b"second", 0)], {"t": {("e", "in", 0): 2}})
        one.commit_transaction(30)
        two.commit_transaction(30)
        yield bootstrap, out, tx


def _outputs(bootstrap: str, topic: str) -> list[bytes]:
    """What a read_committed reader sees of both partitions, up to where it is told each ends (the stable offset).
    Not ``drain``: Tansu answers a read_committed "latest offset" of a held partition with 0."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:6]}",
                  "isolation.level": "read_committed", "enable.partition.eof": True, "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in (0, 1)])
        seen, ended = [], set()
        deadline = time.monotonic() + 30
        while len(ended) < 2 and time.monotonic() < deadline:
            for m in c.consume(100, 0.5):
                if m.error() is None:
                    seen.append(m.value())
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(m.partition())
        assert len(ended) == 2, f"{topic}: partitions {sorted(ended)} ended within 30 s, not both"
        return sorted(seen)
    finally:
        c.close()


ALL = sorted([b"first", b"one-x", b"one-y", b"two-y", b"second"])


def _load(bootstrap: str, app_id: str) -> dict[bytes, object]:
    return TxTables(bootstrap, app_id, "agent", ["t"], 1, on_crash=_crash).part(0)["t"]


def test_the_held_transaction_is_real(held: tuple[str, str, TxTables]) -> None:
    """The broker's behaviour these settle writes exist for: the second commit returned, yet readers do not see it.
    (Should a later Tansu finalise it by itself, this test fails and the settle writes can go.)"""
    bootstrap, out, _ = held
    assert _outputs(bootstrap, out) == sorted(set(ALL) - {b"second"})
    assert _outputs(bootstrap, out) == sorted(set(ALL) - {b"second"})  # still: nothing finalises it


def test_a_new_owner_finalises_the_held_transaction_before_it_loads(held: tuple[str, str, TxTables]) -> None:
    bootstrap, out, tx = held
    table = _load(bootstrap, tx.app_id)
    assert table[b"a"] == {"v": 2} and table[marker_key("e", "in", 0)] == 2
    assert _outputs(bootstrap, out) == ALL


def test_an_idle_partition_finalises_its_held_transaction(held: tuple[str, str, TxTables]) -> None:
    bootstrap, out, tx = held
    last, _, _ = tx.idle[0]
    assert tx.settle(now=last + SETTLE_AFTER_S[0] / 2) == []  # not idle long enough yet
    assert tx._held(0)
    assert tx.settle(now=last + SETTLE_AFTER_S[0]) == [0]
    assert _outputs(bootstrap, out) == ALL and not tx._held(0)
    assert [tx.settle(now=last + s) for s in (*SETTLE_AFTER_S[1:], 100.0)] == [[], [], []]  # final: no more this spell
    tx.commit(0, {"t": {b"a": {"v": 3}}}, [], {"t": {("e", "in", 0): 3}})
    assert tx.idle[0][1] == 0  # a commit starts a new spell
    assert _load(bootstrap, tx.app_id)[b"a"] == {"v": 3}


def test_a_partition_settles_again_until_its_held_transaction_is_final(held: tuple[str, str, TxTables]) -> None:
    """The settle writes are held themselves while another producer's transaction on a shared partition is open
    (three's, at all three scheduled times); three's end is held by four's, and four's end finalises three's but not
    the agent's (they share no partition). Three settles would leave the agent held for good; it goes on until final."""
    bootstrap, out, tx = held
    last, _, _ = tx.idle[0]
    three, four = _producer(bootstrap), _producer(bootstrap)
    three.begin_transaction()
    three.produce(out, value=b"three-x", partition=0)  # shares partition 0 with the agent's held transaction
    three.produce(out, value=b"three-y", partition=1)
    three.flush(10)
    assert [tx.settle(now=last + s) for s in SETTLE_AFTER_S] == [[0], [0], [0]]  # each held: three is open
    assert tx._held(0)
    four.begin_transaction()
    four.produce(out, value=b"four-y", partition=1)
    four.flush(10)
    three.commit_transaction(30)  # held: four is open on partition 1
    four.commit_transaction(30)  # finalises four's and three's, not the agent's
    assert tx._held(0)
    assert tx.settle(now=last + SETTLE_AFTER_S[-1] + SETTLE_AGAIN_S / 2) == []  # the next one is due later
    assert tx.settle(now=last + SETTLE_AFTER_S[-1] + SETTLE_AGAIN_S) == [0]
    assert not tx._held(0)
    assert _outputs(bootstrap, out) == sorted([*ALL, b"three-x", b"three-y", b"four-y"])
    assert tx.settle(now=last + 1000.0) == []  # final: no more settle writes this spell

