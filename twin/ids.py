"""Typed entity ids that validate, after Eclipse Ditto's ``ThingId``.

An id has four parts, ``<region>:<scope>:<kind>:<name>``, for example ``kiel:gaarden:sensor:wl-001``.
``scope`` is a neighbourhood slug, or ``_`` for entities that belong to the whole region (the coast, for one).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema


class EntityKind(StrEnum):
    REGION = "region"
    NEIGHBOURHOOD = "neighbourhood"
    BUILDING = "building"
    ROAD = "road"
    SENSOR = "sensor"
    COAST = "coast"
    REPORT = "report"
    EVENT = "event"
    SCENARIO = "scenario"
    VEHICLE = "vehicle"  # a bus of the GTFS-Realtime feed (streams/sources/gtfs)
    STOP = "stop"  # a public transport stop with its departure board (GTFS)


_SLUG = r"[a-z0-9](?:[a-z0-9-]{0,62})"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,127})"
_PATTERN = re.compile(rf"^(?P<region>{_SLUG}):(?P<scope>{_SLUG}|_):(?P<kind>[a-z]+):(?P<name>{_NAME})$")


class InvalidEntityId(ValueError):
    """An entity id did not parse; the message says which part was wrong and what is expected."""


class EntityId(str):
    """A validated entity id. Construct with :meth:`parse` or :meth:`of`."""

    __slots__ = ()

    region: str
    scope: str
    kind: EntityKind
    name: str

    @classmethod
    def parse(cls, raw: object) -> EntityId:
        if isinstance(raw, EntityId):
            return raw
        if not isinstance(raw, str):
            raise InvalidEntityId(f"entity id must be a string, got {type(raw).__name__}: {raw!r}")
        m = _PATTERN.match(raw)
        if m is None:
            parts = raw.split(":")
            hint = (
                f"it has {len(parts)} part(s) separated by ':', 4 are needed"
                if len(parts) != 4
                else "region and scope are lower-case slugs (scope '_' for region-wide), name uses letters, digits, '.', '_' or '-'"
            )
            raise InvalidEntityId(
                f"invalid entity id {raw!r}: expected '<region>:<scope>:<kind>:<name>' such as "
                f"'kiel:gaarden:sensor:wl-001'; {hint}"
            )
        try:
            EntityKind(m["kind"])
        except ValueError:
            kinds = ", ".join(k.value for k in EntityKind)
            raise InvalidEntityId(f"invalid entity id {raw!r}: unknown kind {m['kind']!r}; known kinds: {kinds}") from None
        return str.__new__(cls, raw)

    @classmethod
    def of(cls, region: str, scope: str, kind: EntityKind | str, name: str) -> EntityId:
        return cls.parse(f"{region}:{scope}:{EntityKind(kind).value}:{name}")

    def _parts(self) -> list[str]:
        return self.split(":")

    @property  # type: ignore[no-redef]
    def region(self) -> str:
        return self._parts()[0]

    @property  # type: ignore[no-redef]
    def scope(self) -> str:
        return self._parts()[1]

    @property  # type: ignore[no-redef]
    def kind(self) -> EntityKind:
        return EntityKind(self._parts()[2])

    @property  # type: ignore[no-redef]
    def name(self) -> str:
        return self._parts()[3]

    def __repr__(self) -> str:
        return f"EntityId({str.__repr__(self)})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls.parse, core_schema.str_schema(), serialization=core_schema.to_string_ser_schema()
        )
