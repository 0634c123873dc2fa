"""Stream processors from outside the core: a processor is a named object with the topics it reads and a function
from a batch of decoded events to the events it emits. The worker loads them from ``PLIETSCH_PROCESSORS``
(comma-separated ``module:attribute``) and runs each as its own Faust agent, so an author writes plain Python, testable
without a broker, and gets decoding, dead letters, batching and output for free.

    class MyProcessor:
        name = "parking-full"                 # the agent's name: API, keep it stable
        topics = ("sensor.parking",)          # catalogue topics to read
        output = "twin.alerts"                # catalogue topic to write
        def handle(self, events): ...         # list[Event] -> list[Event]; keep state on self if needed
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol

from twin.events import Event


class Processor(Protocol):
    name: str
    topics: Sequence[str]
    output: str

    def handle(self, events: list[Event]) -> list[Event]: ...


class ProcessorLoadError(ValueError):
    pass


def load_processors(spec: str) -> list[Processor]:
    """Import 'module:attribute' entries; an attribute that is a class is instantiated."""
    from streams.catalogue import BY_NAME

    out: list[Processor] = []
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        module, _, attr = entry.partition(":")
        if not attr:
            raise ProcessorLoadError(f"processor {entry!r} must be 'module:attribute', e.g. 'streams.examples.parking_full:ParkingFull'")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ProcessorLoadError(f"cannot load processor {entry!r}: {exc}") from exc
        proc = obj() if isinstance(obj, type) else obj
        unknown = [t for t in (*proc.topics, proc.output) if t not in BY_NAME]
        if unknown:
            raise ProcessorLoadError(f"processor {proc.name!r} names topics not in the catalogue: {', '.join(unknown)}")
        out.append(proc)
    return out
