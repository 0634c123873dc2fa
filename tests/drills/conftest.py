"""Fixtures of the fault drills."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.broker import EmbeddedBroker


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A broker of the drill's own, with the catalogue's topics: the input is exactly what the drill produced, and the
    drill may pause or stop it without touching the session's broker."""
    from streams.catalogue import ensure_topics

    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap_servers)
        yield b
