"""The live fan-out's queues (``api.readmodel.Subscriber``, ``_offer_all``): each filter runs once per delta for all
subscribers that share it, every subscriber gets every delta it accepts in order, and one that falls behind overflows
alone."""

from __future__ import annotations

import asyncio

from api.readmodel import Delta, Subscriber, _offer_all


def _delta(seq: int, kind: str) -> Delta:
    return Delta(seq, "entity", f"kiel:gaarden:{kind}:x-{seq}", kind, {})


def test_subscribers_of_one_filter_share_its_check_and_each_gets_every_delta_in_order() -> None:
    loop = asyncio.new_event_loop()
    try:
        calls: list[int] = []

        def sensors(d: Delta) -> bool:
            calls.append(d.seq)
            return d.entity_type == "sensor"

        same = [Subscriber(loop, sensors, key=("sensor",)) for _ in range(200)]
        other = Subscriber(loop, lambda d: d.entity_type == "coast", key=("coast",))
        deltas = [_delta(i, "sensor" if i % 3 else "coast") for i in range(1, 31)]
        _offer_all((*same, other), deltas[:10])
        _offer_all((*same, other), deltas[10:])
        assert calls == [d.seq for d in deltas]  # once per delta, not 200 times
        want = [d.seq for d in deltas if d.entity_type == "sensor"]
        assert all([d.seq for d in s.take()] == want for s in same)
        assert [d.seq for d in other.take(3)] == [3, 6, 9] and [d.seq for d in other.take()] == [12, 15, 18, 21, 24, 27, 30]
    finally:
        loop.close()


def test_a_subscriber_that_falls_behind_overflows_alone_and_is_woken() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        slow = Subscriber(loop, lambda d: True, maxsize=5, key="all")
        quick = Subscriber(loop, lambda d: True, maxsize=100, key="all")
        waiting = asyncio.ensure_future(slow.wait(5))
        await asyncio.sleep(0)
        _offer_all((slow, quick), [_delta(1, "sensor")])
        assert await waiting  # woken by the delta, long before its timeout
        _offer_all((slow, quick), [_delta(i, "sensor") for i in range(2, 10)])
        assert slow.overflowed and len(slow) == 0 and await slow.wait(5)  # it is told at once, and holds nothing
        assert not quick.overflowed and [d.seq for d in quick.take()] == list(range(1, 10))
        assert not await quick.wait(0.05)  # nothing more: the wait times out
        slow.reset()
        _offer_all((slow, quick), [_delta(10, "sensor")])
        assert not slow.overflowed and [d.seq for d in slow.take()] == [10]

    asyncio.run(run())
