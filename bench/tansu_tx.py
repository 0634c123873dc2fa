"""Tansu and interleaved transactions: several transactional producers (processes, or ``--threads`` of one process)
write like the worker's partitions do (outputs to any partition of one topic, then their own partition of a
changelog) for a while; then each commits one last transaction with a sentinel record in every partition, and a
read_committed reader must see every sentinel within 20 s. With ``--turns`` the producers take turns
(a lock per process and an flock per host around each transaction).

Command: ``.venv/bin/python -m bench.tansu_tx [--runs 5] [--producers 4] [--seconds 10] [--threads] [--turns]``.
Prints, per run, the transactions committed and the committed sentinels the reader never saw.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import multiprocessing as mp
import os
import queue
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.broker import EmbeddedBroker

PARTITIONS = 4


THREAD_TURN = threading.Lock()


@contextlib.contextmanager
def host_turn(path: str) -> Iterator[None]:
    with THREAD_TURN, open(path, "a") as f:  # noqa: PTH123
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def producer(bs: str, k: int, topic: str, changelog: str, seconds: float, turns: bool, done: queue.Queue) -> None:
    lock_path = os.path.join(tempfile.gettempdir(), f"{topic}.lock")
    turn = (lambda: host_turn(lock_path)) if turns else None
    prod = Producer({"bootstrap.servers": bs, "transactional.id": f"bench-{k}-{uuid.uuid4().hex[:6]}",
                     "enable.idempotence": True, "linger.ms": 2})
    prod.init_transactions(30)
    rng, n, end = random.Random(k), 0, time.monotonic() + seconds

    def one(sentinel: bool) -> None:
        prod.begin_transaction()
        if sentinel:
            for q in range(PARTITIONS):
                prod.produce(topic, key=b"sentinel", value=str(k).encode(), partition=q)
        else:
            for _ in range(rng.randint(1, 40)):
                prod.produce(topic, key=f"k{rng.randint(0, 300)}".encode(), value=b"x" * 100)
            prod.flush(30)
            for _ in range(rng.randint(1, 20)):
                prod.produce(changelog, key=f"c{rng.randint(0, 30)}".encode(), value=b"y" * 50, partition=k % PARTITIONS)
        prod.commit_transaction(30)

    while time.monotonic() < end:
        if turn is None:
            one(False)
        else:
            with turn():
                one(False)
        n += 1
    if turn is None:
        one(True)
    else:
        with turn():
            one(True)
    done.put(n + 1)


def run(producers: int, seconds: float, turns: bool, threads: bool) -> tuple[int, list[tuple[int, int]]]:
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap_servers
        topic = f"bench-tx-{uuid.uuid4().hex[:6]}"
        changelog = f"{topic}-changelog"
        admin = AdminClient({"bootstrap.servers": bs})
        for fut in admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(changelog, PARTITIONS, 1)]).values():
            fut.result()
        done: Any = queue.Queue() if threads else mp.Queue()
        kind: type = threading.Thread if threads else mp.Process
        procs = [kind(target=producer, args=(bs, k, topic, changelog, seconds, turns, done)) for k in range(producers)]
        for proc in procs:
            proc.start()
        committed = sum(done.get(timeout=seconds + 120) for _ in procs)
        for proc in procs:
            proc.join(30)
        wanted = {(q, k) for q in range(PARTITIONS) for k in range(producers)}
        c = Consumer({"bootstrap.servers": bs, "group.id": f"bench-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False,
                      "isolation.level": "read_committed", "enable.partition.eof": True})
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in range(PARTITIONS)])
        seen: set[tuple[int, int]] = set()
        deadline = time.monotonic() + 20
        while seen != wanted and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            if m.key() == b"sentinel":
                seen.add((int(m.partition() or 0), int(m.value() or b"-1")))
        c.close()
        missing = sorted(wanted - seen)
        return committed, missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--turns", action="store_true", help="producers take turns (one transaction at a time)")
    ap.add_argument("--threads", action="store_true", help="producers are threads of one process")
    args = ap.parse_args()
    bad = 0
    for r in range(1, args.runs + 1):
        committed, missing = run(args.producers, args.seconds, args.turns, args.threads)
        bad += bool(missing)
        print(f"run {r}: {committed} transactions committed, {len(missing)} committed sentinels invisible to "
              f"read_committed {missing[:8]}", flush=True)
    how = f"{'threads' if args.threads else 'processes'}, {'turns' if args.turns else 'interleaved'}"
    print(f"{how}: {bad} of {args.runs} runs left committed transactions invisible")


if __name__ == "__main__":
    main()
