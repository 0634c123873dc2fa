"""Fixtures of the source tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.broker import EmbeddedBroker
from streams.catalogue import ensure_topics


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """A Kafka-protocol broker (Tansu) of the test module's own: its records reach neither the session's shared worker
    (on another region pack) nor other tests' counts."""
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        yield broker.bootstrap_servers
