"""Effects with offsets through the real broker: fencing and read_committed recovery of the agents' tables, and a
second worker of the same app id joining: partitions rebalance, state recovers, nothing lost or doubled."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.codec import SingleObjectCodec
from streams.catalogue import AGGREGATES, SENSOR_TOPICS
from streams.consume import drain
from streams.publisher import EventPublisher
from streams.tables import TxTables, marker_key
from tests.helpers import RESERVED_SENSORS, Worker, latest_updates, table_state, unstable_partitions, wait_for
from twin.events import TrafficCounted
from twin.region import load_pack

pytestmark = pytest.mark.broker


class Crashed(RuntimeError):
    pass


def _crash(message: str) -> None:
    raise Crashed(message)


def test_a_new_owner_fences_the_old_one_and_recovers_the_committed_state(topics: str) -> None:
    app_id = f"fence-{uuid.uuid4().hex[:6]}"
    old = TxTables(topics, app_id, "agent", ["t"], 4, on_crash=_crash)
    old.commit(0, {"t": {b"a": {"v": 1}, b"gone": {"v": 0}}}, [], {"t": {("e", "in", 0): 4}})
    old.commit(0, {"t": {b"gone": None}}, [], {"t": {("e", "in", 0): 5}})
    new = TxTables(topics, app_id, "agent", ["t"], 4, on_crash=_crash)
    tables = new.part(0)  # init_transactions fences the old producer (and aborts what it left open)
    assert tables["t"][b"a"] == {"v": 1} and b"gone" not in tables["t"]
    assert new.applied(0, "e", "in", 0) == 5 and tables["t"][marker_key("e", "in", 0)] == 5
    with pytest.raises(Crashed, match="failed"):  # a zombie cannot commit any more: it ends instead of going on
        old.commit(0, {"t": {b"a": {"v": 2}}}, [], {"t": {("e", "in", 0): 6}})
    new.commit(0, {"t": {b"a": {"v": 3}}}, [], {"t": {("e", "in", 0): 6}})
    again = TxTables(topics, app_id, "agent", ["t"], 4, on_crash=_crash).part(0)
    assert again["t"][b"a"] == {"v": 3} and again["t"][marker_key("e", "in", 0)] == 6


def _aggregate_counts(bootstrap: str) -> dict[tuple[str, str], int]:
    codec = SingleObjectCodec()
    latest: dict[str, dict] = {}
    for m in drain(bootstrap, AGGREGATES.name, missing_ok=True):
        if m.value() is None:
            continue
        _, rec = codec.decode(m.value())
        if rec["window_start"].startswith("2034-"):
            doc = json.loads(rec["partial_json"])
            if m.key().decode() not in latest or doc["rev"] > latest[m.key().decode()]["rev"]:
                latest[m.key().decode()] = doc
    out: dict[tuple[str, str], int] = defaultdict(int)
    for doc in latest.values():
        out[(doc["group"], doc["window"])] += doc["count"]
    return out


def test_a_second_worker_joins_and_nothing_is_lost_or_doubled(topics: str, big_pack_dir: Path) -> None:
    pack = load_pack(big_pack_dir)
    counters = sorted((s for s in pack.sensors.values() if s.sensor_kind == "traffic_count" and s.road
                       and s.id not in RESERVED_SENSORS), key=lambda s: s.id)[:24]
    app_id = f"plietsch-scale-{uuid.uuid4().hex[:6]}"
    pub = EventPublisher(topics, SingleObjectCodec(), linger_ms=5, max_datums=50)
    t0 = datetime(2034, 2, 1, 8, tzinfo=UTC)
    expected: dict[tuple[str, str], int] = defaultdict(int)
    last: dict[str, str] = {}

    def send(rounds: range) -> None:
        for i in rounds:
            for s in counters:
                t = t0 + timedelta(minutes=i)
                r = TrafficCounted(entity_id=s.id, region="kiel", occurred_at=t, source="scale-test", vehicles=i % 7,
                                   interval_s=60)
                pub.add(SENSOR_TOPICS["traffic_count"].name, s.id, r)
                w = t.replace(minute=t.minute - t.minute % 15)
                expected[(str(s.road), w.isoformat())] += 1
                last[s.id] = r.event_id
            pub.tick()
        pub.flush()

    one, two = Worker(topics, big_pack_dir, app_id), Worker(topics, big_pack_dir, app_id)
    one.start()
    try:
        send(range(0, 30))
        first_half = dict(last)
        wait_for(lambda: all(table_state(topics, app_id).get(s.id, {}).get("last_event_id") == first_half[s.id]
                             for s in counters), 300, "the first worker to fold the first half")
        # other tests of the session may have sent readings for these sensors before: count from here
        half = {s.id: table_state(topics, app_id)[s.id]["revision"] for s in counters}
        two.start()  # same app id: the group rebalances, each takes over part of the partitions and their tables
        for i in range(30, 60):  # a steady stream while the second worker joins
            send(range(i, i + 1))
            time.sleep(1.5)
        wait_for(lambda: two.stats().get("records", 0) > 0, 240, "the second worker to take partitions")

        def settled() -> bool:
            state = table_state(topics, app_id)
            return all(state.get(s.id, {}).get("last_event_id") == last[s.id] for s in counters)

        try:
            wait_for(settled, 300, "both workers to fold everything")
        except AssertionError as exc:  # say whether transactions the broker holds keep the state from readers
            raise AssertionError(f"{exc}; partitions whose read_committed end is below the high watermark: "
                                 f"{unstable_partitions(topics)}\n{one.output()[-1500:]}") from None
        state = table_state(topics, app_id)
        assert all(state[s.id]["revision"] == half[s.id] + 30 for s in counters)  # each reading once: no loss, no double
        updates = latest_updates(topics, "kiel:")
        assert all(updates[s.id]["revision"] == state[s.id]["revision"] for s in counters)
        counts = wait_for(lambda: (c := _aggregate_counts(topics)) == expected and c, 120, "the aggregates")
        assert sum(counts.values()) == 60 * len(counters)
        assert one.alive() and two.alive(), one.output() + two.output()
    finally:
        two.stop()
        one.stop()
