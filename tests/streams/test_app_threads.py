"""How the worker hands a take of records to the agents' work: one thread per agent and input partition, the
partitions of a take at once, each partition's batches in order and never two at a time. No broker: the Faust stream
is replaced by the takes it would yield (the app is built, never started)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from streams.app import TwinApp
from streams.settings import StreamSettings
from tests.streams.test_agent_logic import Msg

WAIT_S = 60.0  # generous: a loaded machine is slow, but a partition that waits for another that never starts fails


@dataclass
class Event:
    message: Msg


class Stream:
    def __init__(self, takes: list[list[Msg]]) -> None:
        self.takes = takes

    async def take_events(self, n: int, within: float) -> AsyncIterator[list[Event]]:
        for take in self.takes:
            yield [Event(m) for m in take]


class RendezvousUnit:
    """Partition 0's first batch waits until partition 1's has started: done only if both run at the same time."""

    agent = "test-unit"
    tables = ("t",)
    topics = {"sensor.traffic"}

    def __init__(self) -> None:
        self.started_1 = threading.Event()
        self.lock = threading.Lock()
        self.busy: set[int] = set()
        self.seen: dict[int, list[int]] = {}
        self.threads: dict[int, set[str]] = {}
        self.overlap_within_partition = False

    def process(self, tx: Any, p: int, msgs: list[Msg]) -> None:
        with self.lock:
            if p in self.busy:
                self.overlap_within_partition = True
            self.busy.add(p)
            self.threads.setdefault(p, set()).add(threading.current_thread().name)
        try:
            if p == 1:
                self.started_1.set()
            if p == 0 and msgs[0].offset == 0 and not self.started_1.wait(WAIT_S):
                raise AssertionError(f"partition 1 did not start within {WAIT_S} s while partition 0 was busy: the "
                                     "partitions of a take ran one after the other")
            self.seen.setdefault(p, []).extend(m.offset for m in msgs)
        finally:
            with self.lock:
                self.busy.discard(p)


def test_the_partitions_of_a_take_run_at_once_each_in_order_in_its_own_thread() -> None:
    app = TwinApp(StreamSettings(**{"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}))
    unit = RendezvousUnit()
    takes = [[Msg("sensor.traffic", p, o + 3 * k, b"") for p in (0, 1, 2) for o in range(3)] for k in range(4)]
    asyncio.run(app._runner(unit, None)(Stream(takes)))  # type: ignore[arg-type]
    assert unit.seen == {p: list(range(12)) for p in (0, 1, 2)}
    assert not unit.overlap_within_partition
    assert all(len(names) == 1 for names in unit.threads.values()), unit.threads
    assert len({name for names in unit.threads.values() for name in names}) == 3
    assert app.last_offsets == {("sensor.traffic", p): 11 for p in (0, 1, 2)}
