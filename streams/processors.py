"""Stream processors from outside the core: a processor is a named object with the topics it reads and a function
from a batch of decoded events (and its state) to the events it emits. The worker loads them from
``PLIETSCH_PROCESSORS`` (comma-separated ``module:attribute``) and runs each as its own Faust agent, so an author writes
plain Python, testable without a broker, and gets decoding, dead letters, batching, state and output for free.

    class MyProcessor:
        name = "parking-full"                 # the agent's name and its table's: API, keep it stable
        topics = ("sensor.parking",)          # catalogue topics to read (co-partitioned)
        output = "twin.alerts"                # the one catalogue topic it may write
        def handle(self, events, state): ...  # (list[Event], MutableMapping[str, JSON]) -> list[Event]
        def handle_frame(self, frames, state): ...  # optional, preferred: (dict[str, polars.DataFrame], ...) -> list[Event]

Two ways in: ``handle`` gets one Kafka record's readings as pydantic events (simple; Python work per reading).
``handle_frame``, when present, is called instead, once per take of records (up to 256 per partition): the readings
as one polars DataFrame per event type (``ParkingOccupancyReported`` ...), rows in arrival order, with the Avro fields
(``occurred_at`` as the RFC 3339 string) plus ``_t`` (``occurred_at`` as UTC epoch microseconds), ``_m`` (the record's
position in the take) and ``_i`` (the reading's position in its record). Do the per-reading work in polars and Python
only per output: ``streams/examples/parking_full.py`` has both, proven equal. If ``handle_frame`` raises, the worker
calls it again record by record, so only the failing record becomes a dead letter. Output event ids are derived from
the take's first and last input offsets (``handle``: from the record and the position).

State: ``state`` is the processor's table for the partition the events came from (keys: str, values: JSON-able).
Keep everything that must survive a restart there, never on ``self``: the worker commits the table's changes with the
emitted events and the applied-offset markers in one transaction, and recovers it from its changelog
(``<app_id>-<name>-state-changelog``) after a restart or a rebalance. Output: every emitted event must be a type its
declared ``output`` topic carries, or the record is kept as a dead letter with the reason; the worker writes nothing
else for a processor.
"""

from __future__ import annotations

import importlib
from collections.abc import MutableMapping, Sequence
from typing import Any, Protocol

from twin.events import Event


class Processor(Protocol):
    name: str
    topics: Sequence[str]
    output: str

    def handle(self, events: list[Event], state: MutableMapping[str, Any]) -> list[Event]: ...

    # optional: handle_frame(self, frames: Mapping[str, polars.DataFrame], state) -> list[Event] (see the module doc)


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
