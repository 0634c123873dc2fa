"""Entities of the twin. Static description (geometry, attributes) comes from region packs; ``reported`` holds the
live state the stream processors fold in, with a revision and a timezone-aware time. Updates return new values."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from twin.ids import EntityId


class Entity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: EntityId
    name: str = ""
    synthetic: bool = Field(description="true where the entity is made up, not taken from real data")
    reported: dict[str, Any] = Field(default_factory=dict)
    revision: int = 0
    updated_at: AwareDatetime | None = None

    def with_reported(self, reported: dict[str, Any], at: datetime) -> Entity:
        return self.model_copy(update={"reported": reported, "revision": self.revision + 1, "updated_at": at})


class Region(Entity):
    bbox: tuple[float, float, float, float]
    mean_water_level_note: str = ""


class Neighbourhood(Entity):
    polygon: list[tuple[float, float]]


class Building(Entity):
    neighbourhood: EntityId
    footprint: list[tuple[float, float]]
    height_m: float = Field(gt=0, le=400)
    ground_m: float = 0.0
    use: str = "residential"
    height_source: str = Field(default="", description="where the height comes from (tag, LoD model, synthetic)")


class RoadSegment(Entity):
    neighbourhood: EntityId | None
    line: list[tuple[float, float]]
    road_class: str = "residential"
    lanes: int = 1


class CoastSegment(Entity):
    line: list[tuple[float, float]]
    coast_type: Literal["quay_wall", "dike", "beach", "natural"]
    crest_m: float = Field(description="crest height above mean water level, metres")
    neighbourhood: EntityId | None = None
    gauge: EntityId | None = Field(default=None, description="the water-level sensor that drives this segment's state")


class Sensor(Entity):
    sensor_kind: str
    lon: float
    lat: float
    neighbourhood: EntityId | None = None
    road: EntityId | None = None
    coast: EntityId | None = None
