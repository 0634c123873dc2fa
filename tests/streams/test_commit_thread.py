"""The worker's commit thread and its side-by-side partition start (``streams.tables``), through the real broker:
a commit handed to the committer is what a new owner recovers, the partition's next read waits for it, a zombie's
commit that fails there reaches the caller, and partitions opened side by side hold what one-by-one loads hold."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from streams.tables import TxTables, marker_key, open_parts

pytestmark = pytest.mark.broker


class Crashed(RuntimeError):
    pass


def _crash(message: str) -> None:
    raise Crashed(message)


def test_commits_in_the_commit_thread_are_what_a_new_owner_recovers(topics: str) -> None:
    app_id = f"committer-{uuid.uuid4().hex[:6]}"
    committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-commit")
    try:
        tx = TxTables(topics, app_id, "agent", ["t"], 4, on_crash=_crash)
        tx.committer = committer
        for i in range(1, 21):  # each commit reads the partition (its markers), so it waits for the one before
            p = i % 4
            before = tx.applied(p, "e", "in", p)
            assert before == (i - 4 if i > 4 else -1)  # the commit before on p is applied in memory, never skipped
            tx.commit(p, {"t": {b"k%d" % i: {"v": i}, b"last": {"v": i}}}, [], {"t": {("e", "in", p): i}})
        assert tx.pending_commits()  # handed over, not necessarily done
        tx.wait()
        assert not tx.pending
        heir = TxTables(topics, app_id, "agent", ["t"], 4, on_crash=_crash)
        for p in range(4):
            mine = dict(tx.part(p)["t"])
            assert heir.part(p)["t"] == mine
            assert mine[marker_key("e", "in", p)] == 16 + (p or 4)
            assert mine[b"last"] == {"v": 16 + (p or 4)}
    finally:
        committer.shutdown(wait=True)


def test_a_zombie_commit_fails_in_the_commit_thread_and_its_partition_stays_behind_it(topics: str) -> None:
    app_id = f"committer-{uuid.uuid4().hex[:6]}"
    committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-commit")
    try:
        old = TxTables(topics, app_id, "agent", ["t"], 2, on_crash=_crash)
        old.committer = committer
        old.commit(0, {"t": {b"a": {"v": 1}}}, [], {"t": {("e", "in", 0): 1}})
        old.wait()
        TxTables(topics, app_id, "agent", ["t"], 2, on_crash=_crash).part(0)  # fences the old owner of partition 0
        old.commit(0, {"t": {b"a": {"v": 2}}}, [], {"t": {("e", "in", 0): 2}})  # returns: the failure is in the thread
        with pytest.raises(Crashed, match="failed"):
            old.part(0)  # the next read of the partition waits for its commit and gets its failure
        assert old.parts[0]["t"][b"a"] == {"v": 1}  # memory never runs ahead of what was committed
        again = TxTables(topics, app_id, "agent", ["t"], 2, on_crash=_crash).part(0)
        assert again["t"][b"a"] == {"v": 1} and again["t"][marker_key("e", "in", 0)] == 1
    finally:
        committer.shutdown(wait=True)


def test_partitions_opened_side_by_side_hold_what_one_by_one_loads_hold(topics: str) -> None:
    app_id = f"open-{uuid.uuid4().hex[:6]}"
    writers = {name: TxTables(topics, app_id, name, [f"{name}-t"], 4, on_crash=_crash) for name in ("a", "b", "c")}
    for name, w in writers.items():
        for p in range(4):
            w.commit(p, {f"{name}-t": {b"x": {"p": p, "agent": name}}}, [], {f"{name}-t": {("e", name, p): 10 + p}})
    heirs = {name: TxTables(topics, app_id, name, [f"{name}-t"], 4, on_crash=_crash) for name in writers}
    open_parts([(tx, p) for tx in heirs.values() for p in range(4)])
    assert not any(t.name.startswith("plietsch-open") for t in threading.enumerate())
    for name, tx in heirs.items():
        assert sorted(tx.parts) == [0, 1, 2, 3]
        for p in range(4):
            assert tx.parts[p][f"{name}-t"][b"x"] == {"p": p, "agent": name}
            assert tx.applied(p, "e", name, p) == 10 + p
        with pytest.raises(Crashed):  # the heirs fenced the writers on every partition
            writers[name].commit(0, {f"{name}-t": {b"x": {"late": True}}}, [], {})
