"""What every long-running source does when Kafka does not take its readings: retry with backoff (0.5 s doubling to
30 s), never dead-letter, and give up only when a stop was asked for, leaving its input unacknowledged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaException

from streams.publisher import PublishError


class Abandoned(RuntimeError):
    """A stop was asked for while Kafka was unreachable: what was being written is left for the next run."""


def retry_kafka(what: str, action: Callable[[], Any], *, stopping: Callable[[], bool], wait: Callable[[float], Any],
                report: Callable[[str], None], counted: Callable[[], None], left_for_next_run: str) -> None:
    """Run *action* until it succeeds; a Kafka failure is reported, counted and retried after *wait*, or, when
    *stopping*, ends in ``Abandoned`` saying what is *left_for_next_run*."""
    delay = 0.5
    while True:
        try:
            action()
            return
        except (PublishError, KafkaException) as exc:
            if stopping():
                raise Abandoned(f"stop requested while {what} failed ({exc}): {left_for_next_run}") from exc
            counted()
            report(f"Kafka: {what} failed ({exc}); retrying in {delay:.1f} s")
            wait(delay)
            delay = min(delay * 2, 30.0)
