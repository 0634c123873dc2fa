"""A transaction cut short by a crash must not count twice: on a broker that shows aborted records to read_committed
readers (Tansu does), a table could hold part of a batch's new values with the old markers, and the redo would fold the
batch into them again. Each write carries its transaction number and ends with ``__txseq__``; a write that never
reached its end is undone on load (``streams.tables.ChangelogReader``)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import SingleObjectCodec, frame_batch
from streams.agents import AGGREGATE_TABLE, SENSOR_TABLE, SensorUnit
from streams.serde import encode_event
from streams.tables import (
    SEQ_HEADER,
    SEQ_KEY,
    SETTLE_KEY,
    ChangelogReader,
    TxTables,
    apply_changelog,
    changelog_problem,
    is_internal,
)
from tests.streams.test_agent_logic import Msg
from twin.events import TrafficCounted
from twin.region import BUNDLED_DIR, load_pack

Record = tuple[bytes, bytes | None, Any]


def _tx(seq: int, writes: dict[bytes, int | None]) -> list[Record]:
    """One transaction's write to a table, as TxTables.commit sends it: the changes, then the end record."""
    h = [(SEQ_HEADER, str(seq).encode())]
    out: list[Record] = [(k, None if v is None else json.dumps(v).encode(), h) for k, v in writes.items()]
    return out + [(SEQ_KEY, str(seq).encode(), h)]


def _compact(records: list[tuple[Record, bool]]) -> list[tuple[Record, bool]]:
    """What log compaction may leave: of the committed records only the newest of each key (tombstones kept), in log
    order. Aborted records do not replace committed ones (Kafka's cleaner discards them); they stay here, as on a
    broker that shows them."""
    last = {r[0]: i for i, (r, committed) in enumerate(records) if committed}
    return [(r, c) for i, (r, c) in enumerate(records) if not c or last[r[0]] == i]


keys = st.sampled_from([b"a", b"b", b"c", b"d"])
writes = st.dictionaries(keys, st.one_of(st.none(), st.integers(0, 9)), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(writes, st.lists(st.integers(0, 5), max_size=2)), min_size=1, max_size=8),
       st.integers(0, 5), st.booleans())
def test_the_table_is_what_the_committed_transactions_wrote(txs: list[tuple[dict[bytes, int | None], list[int]]],
                                                            tail_cut: int, compact: bool) -> None:
    """Any history: each transaction may first be cut short one or more times (a prefix of its records, then its redo
    with the same number); the log may end inside a cut-short write; it may be compacted. The table read back is the
    one the committed writes alone give."""
    log: list[tuple[Record, bool]] = []  # (record, whether its transaction committed)
    expected: dict[bytes, Any] = {}
    seq = 0
    for w, cuts in txs:
        seq += 1
        full = _tx(seq, w)
        for cut in cuts:
            log += [(r, False) for r in full[:min(cut, len(full) - 1)]]  # never the end record: the crash came first
        log += [(r, True) for r in full]
        for k, v in w.items():
            if v is None:
                expected.pop(k, None)
            else:
                expected[k] = v
    log += [(r, False) for r in _tx(seq + 1, {b"a": 99, b"e": 98})[:min(tail_cut, 2)]]  # a crash inside the last write
    table: dict[bytes, Any] = {}
    apply_changelog(table, [r for r, _ in (_compact(log) if compact else log)])
    assert {k: v for k, v in table.items() if not is_internal(k)} == expected
    assert table[SEQ_KEY] == seq


def test_records_without_numbers_apply_as_they_are() -> None:
    table: dict[bytes, Any] = {}
    assert apply_changelog(table, [(b"a", b"1", None), (b"b", b"2", []), (b"a", None, None)]) == 0
    assert table == {b"b": 2}


def test_a_processor_cannot_write_a_reserved_key() -> None:
    from streams.agents import ProcessorError, StateView

    view = StateView({})
    with pytest.raises(ProcessorError, match="reserved"):
        view["__txseq__"] = 1


T0 = datetime(2026, 6, 1, 8, tzinfo=UTC)
CODEC = SingleObjectCodec()
SID = "kiel:gaarden:sensor:traffic-count-001"


class _Crash(BaseException):
    """The process dies: nothing after it runs (no abort, no commit)."""


class _CrashingTables(TxTables):
    """TxTables whose process dies inside a commit, after *after* records of the aggregate table's changelog (and all
    that precede them) reached the broker."""

    def __init__(self, *args: Any, after: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.after = after
        self.sent = 0

    def _produce(self, prod: Any, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                 headers: Any) -> None:  # type: ignore[override]
        if topic == self.changelog(AGGREGATE_TABLE) and key != SETTLE_KEY:  # the batch's records, not the settle write
            if self.sent == self.after:
                prod.flush(10)  # what was sent is on the broker; the rest never is
                raise _Crash()
            self.sent += 1
        super()._produce(prod, topic, key, value, partition, headers)


def _crash(message: str) -> None:
    raise AssertionError(message)


@pytest.mark.broker
@pytest.mark.parametrize("after", [1, 2])
def test_a_worker_killed_inside_a_transaction_counts_its_batch_once(topics: str, after: int) -> None:
    """The real broker and the real sensor unit: batch 1 commits; the process dies while batch 2's transaction is on
    its way (the first *after* records of its aggregate table were sent); a new owner fences it, loads the tables and does batch 2
    again. Every aggregate partial counts each reading once."""
    pack = load_pack(BUNDLED_DIR / "kiel")
    app_id = f"torn-{uuid.uuid4().hex[:6]}"
    topic = "sensor.traffic-count"

    def batch(offset: int, first: int) -> list[Msg]:
        events = [TrafficCounted(entity_id=SID, region="kiel", occurred_at=T0 + timedelta(minutes=first + i),
                                 source="t", vehicles=10, interval_s=60) for i in range(3)]
        return [Msg(topic, 0, offset, frame_batch([encode_event(CODEC, e) for e in events]))]

    one = TxTables(topics, app_id, "sensors", SensorUnit.tables, 4, on_crash=_crash)
    SensorUnit(CODEC, pack, "e1", 48.0).process(one, 0, batch(10, 0))
    dying = _CrashingTables(topics, app_id, "sensors", SensorUnit.tables, 4, on_crash=_crash, after=after)
    with pytest.raises(_Crash):
        SensorUnit(CODEC, pack, "e1", 48.0).process(dying, 0, batch(11, 3))
    dying.drop_all()  # the dead process's producer is gone; its open transaction stays until the heir fences it
    heir = TxTables(topics, app_id, "sensors", SensorUnit.tables, 4, on_crash=_crash)
    SensorUnit(CODEC, pack, "e1", 48.0).process(heir, 0, batch(11, 3))
    for tables in (heir.part(0), TxTables(topics, app_id, "sensors", SensorUnit.tables, 4, on_crash=_crash).part(0)):
        partials = {k: v for k, v in tables[AGGREGATE_TABLE].items() if not k.startswith(b"__")}
        assert partials and sum(v["count"] for v in partials.values()) == 6, partials
        assert tables[SENSOR_TABLE][SID.encode()]["values"]["vehicles"] == 10
        assert heir.applied(0, "e1", topic, 0) == 11


def test_junk_on_a_changelog_is_skipped_and_counted_and_the_table_is_what_the_writes_gave() -> None:
    """Issue 15: records no worker writes (a foreign client's, kept for good by compaction) among the real ones: not
    JSON, empty, a marker or a transaction number that is no integer, a transaction number header that is no number.
    Each is skipped and counted; the table is what the real writes alone give, also inside a transaction's write."""
    good = _tx(1, {b"a": 1, b"b": 2}) + _tx(2, {b"a": 3})
    junk: list[Record] = [(b"a", b"\x00\xffjunk", None), (b"b", b"", None), (b"c", b"not json {", None),
                          (b"__applied__|e|t|0", b'"zz"', None), (SEQ_KEY, b"1.5", None),
                          (b"a", b"7", [(SEQ_HEADER, b"not a number")])]
    mixed = good[:2] + junk[:3] + good[2:4] + junk[3:] + good[4:]  # junk inside transaction 1's write and 2's
    table: dict[bytes, Any] = {}
    reader = ChangelogReader(table)
    for key, value, headers in mixed:
        reader.add(key, value, headers)
    assert reader.end() == 0 and reader.skipped == len(junk)
    assert {k: v for k, v in table.items() if not is_internal(k)} == {b"a": 3, b"b": 2} and table[SEQ_KEY] == 2
    assert [changelog_problem(k, v, h) is not None for k, v, h in good + junk] == [False] * len(good) + [True] * len(junk)
