"""The worker's loop-lag gauge (issue 15 item 2): a loop blocked by synchronous work shows as the time it was blocked,
and a free loop shows (almost) none."""

from __future__ import annotations

import asyncio
import time

from streams.metrics import LoopLag


async def test_a_blocked_loop_shows_as_its_blocked_time_and_a_free_loop_as_almost_none() -> None:
    seen: list[tuple[float, float]] = []
    lag = LoopLag(interval_s=0.02, report=lambda last, largest: seen.append((last, largest)))
    task = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.3)
        assert seen and lag.max < 0.2, seen  # nothing blocks it (a shared machine may still be slow by a little)
        time.sleep(0.5)  # a blocking call on the loop: what the gauge is there to catch
        await asyncio.sleep(0.1)
        assert 0.45 <= lag.max < 1.5, seen
        assert seen[-1][1] == lag.max
        await asyncio.sleep(0.1)
        assert lag.last < 0.2 and lag.max >= 0.45  # the largest stays until the worker restarts
    finally:
        task.cancel()


def test_early_wakeups_count_as_no_lag() -> None:
    lag = LoopLag(report=lambda last, largest: None)
    lag.observe(-0.001)
    assert lag.last == 0.0 and lag.max == 0.0
