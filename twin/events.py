"""Past-tense domain events. The pydantic models are the one source of truth for the wire schemas:
``schemas/avro/*.avsc`` is generated from them (``plietsch schemas generate``) and a test keeps both in step.

Every event carries the envelope ``event_id, entity_id, region, occurred_at, source``; ``occurred_at`` must be
timezone-aware. Values are checked at the edge: non-finite numbers and physically absurd values are refused.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from twin.ids import EntityId, EntityKind

Finite = Annotated[float, Field(allow_inf_nan=False)]


def new_event_id() -> str:
    return str(uuid.uuid4())


# Readings from a device whose clock is wrong: a time far ahead would become the sensor's newest reading and shut out
# every true one after it (the fold keeps the newest), a time far back would fill history with nonsense. What lies
# outside this range is refused with the reason (a dead letter), on the live path and in time travel alike.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class Event(BaseModel):
    """The common envelope of every event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_kind: ClassVar[EntityKind | None] = None

    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=64, description="unique id of this event")
    entity_id: EntityId = Field(description="the entity the event concerns, '<region>:<scope>:<kind>:<name>'")
    region: str = Field(min_length=1, max_length=63, description="region slug, e.g. 'kiel'")
    occurred_at: AwareDatetime = Field(description="when it happened, RFC 3339 with a UTC offset")
    source: str = Field(min_length=1, max_length=128, description="who reported it: device, adapter or person role")

    @field_serializer("occurred_at")
    def _ser_time(self, value: datetime) -> str:
        return value.isoformat()

    def model_post_init(self, __context: object) -> None:
        if not EARLIEST <= self.occurred_at < LATEST:
            raise ValueError(f"occurred_at {self.occurred_at.isoformat()} is outside {EARLIEST.year}-{LATEST.year - 1}: "
                             "the sender's clock is wrong; set it (NTP) and send again")
        kind = type(self).entity_kind
        if kind is not None and self.entity_id.kind is not kind:
            raise ValueError(
                f"{type(self).__name__} must concern a {kind.value} entity, got {self.entity_id!r} of kind {self.entity_id.kind.value}"
            )
        if self.entity_id.region != self.region:
            raise ValueError(f"entity {self.entity_id!r} is not in region {self.region!r}")


class Reading(Event):
    """A measurement from one sensor."""

    entity_kind: ClassVar[EntityKind | None] = EntityKind.SENSOR
    sensor_kind: ClassVar[str] = ""


class WaterLevelMeasured(Reading):
    sensor_kind: ClassVar[str] = "water_level"
    level_m: Finite = Field(ge=-4.0, le=6.0, description="water level in metres above mean water level")


class TrafficCounted(Reading):
    sensor_kind: ClassVar[str] = "traffic_count"
    vehicles: int = Field(ge=0, le=100_000, description="vehicles counted in the interval")
    interval_s: int = Field(gt=0, le=86_400, description="length of the counting interval in seconds")
    mean_speed_kmh: Finite | None = Field(default=None, ge=0.0, le=250.0, description="mean speed, if the counter measures it")


class ParkingOccupancyReported(Reading):
    sensor_kind: ClassVar[str] = "parking"
    occupied: int = Field(ge=0, le=100_000, description="occupied spaces")
    capacity: int = Field(gt=0, le=100_000, description="total spaces")

    def model_post_init(self, __context: object) -> None:
        super().model_post_init(__context)
        if self.occupied > self.capacity:
            raise ValueError(f"occupied ({self.occupied}) exceeds capacity ({self.capacity})")


class AirQualityMeasured(Reading):
    sensor_kind: ClassVar[str] = "air_quality"
    no2_ugm3: Finite = Field(ge=0.0, le=2_000.0, description="nitrogen dioxide, micrograms per cubic metre")
    pm10_ugm3: Finite = Field(ge=0.0, le=2_000.0, description="particulate matter below 10 micrometres")
    pm25_ugm3: Finite = Field(ge=0.0, le=2_000.0, description="particulate matter below 2.5 micrometres")


class WeatherObserved(Reading):
    sensor_kind: ClassVar[str] = "weather"
    temperature_c: Finite = Field(ge=-50.0, le=60.0, description="air temperature, degrees Celsius")
    wind_speed_ms: Finite = Field(ge=0.0, le=75.0, description="mean wind speed, metres per second")
    wind_dir_deg: Finite = Field(ge=0.0, lt=360.0, description="direction the wind comes from, degrees from north")
    precipitation_mm: Finite = Field(ge=0.0, le=500.0, description="precipitation since the last observation")


class BikeStationStatusReported(Reading):
    sensor_kind: ClassVar[str] = "bike_share"
    bikes_available: int = Field(ge=0, le=10_000, description="bikes ready to rent")
    docks_available: int = Field(ge=0, le=10_000, description="free docks")


class RoadWorksAnnounced(Event):
    entity_kind: ClassVar[EntityKind | None] = EntityKind.ROAD
    starts_at: AwareDatetime = Field(description="start of the works")
    ends_at: AwareDatetime = Field(description="planned end of the works")
    lanes_closed: int = Field(ge=0, le=8, description="lanes closed; 0 means restrictions without closure")
    description: str = Field(max_length=2000, description="what is done")

    @field_serializer("starts_at", "ends_at")
    def _ser_range(self, value: datetime) -> str:
        return value.isoformat()


class DefectReported(Event):
    """A citizen report (e.g. a broken street lamp). Carries no personal data: the reporter is not recorded."""

    entity_kind: ClassVar[EntityKind | None] = EntityKind.REPORT
    category: Literal["street_lamp", "pothole", "litter", "graffiti", "bench", "other"] = Field(description="kind of defect")
    description: str = Field(max_length=2000, description="free text, checked for personal data before publication")
    lon: Finite = Field(ge=-180.0, le=180.0, description="longitude, WGS84")
    lat: Finite = Field(ge=-90.0, le=90.0, description="latitude, WGS84")


class PublicEventScheduled(Event):
    entity_kind: ClassVar[EntityKind | None] = EntityKind.EVENT
    title: str = Field(min_length=1, max_length=200, description="name, e.g. 'Kieler Woche'")
    starts_at: AwareDatetime = Field(description="start")
    ends_at: AwareDatetime = Field(description="end")
    expected_visitors: int = Field(ge=0, le=10_000_000, description="expected visitors")
    lon: Finite = Field(ge=-180.0, le=180.0, description="longitude, WGS84")
    lat: Finite = Field(ge=-90.0, le=90.0, description="latitude, WGS84")

    @field_serializer("starts_at", "ends_at")
    def _ser_range(self, value: datetime) -> str:
        return value.isoformat()


class TwinEntityUpdated(Event):
    """The twin's state of one entity changed. ``state_json`` is the entity's reported state as JSON."""

    entity_type: str = Field(description="entity kind, e.g. 'sensor'")
    revision: int = Field(ge=0, description="monotonic revision of the entity")
    state_json: str = Field(description="reported state, a JSON object")
    cause_event_id: str = Field(description="event_id of the event that caused the change")


class AggregateUpdated(Event):
    """One shard's partial of a windowed aggregate changed; readers combine the partials of a key."""

    metric: str = Field(description="e.g. 'traffic_vehicles', 'parking_occupancy', 'air_no2_ugm3'")
    window_start: str = Field(description="RFC 3339 start of the window, empty for a current value")
    window_s: int = Field(ge=0, description="window length in seconds, 0 for a current value")
    shard: int = Field(ge=0, description="the partition whose readings this partial holds")
    partial_json: str = Field(description="the partial (sum, count, min, max, members) as JSON")


class ScenarioRequested(Event):
    """A planner asked for a what-if run; ``request_json`` is a storm-surge ``ScenarioRequest`` or a ``TrafficRequest``.
    The request is its own audit record (``api.audit``): who asked, in which role, from which client (a keyed hash)."""

    entity_kind: ClassVar[EntityKind | None] = EntityKind.SCENARIO
    request_json: str = Field(description="the scenario request as JSON")
    actor: str = Field(default="", max_length=200, description="who asked: user name, key:<id> or token subject")
    actor_role: str = Field(default="", max_length=20, description="the role they asked in")
    client: str = Field(default="", max_length=40, description="keyed hash of the client's address (api.audit)")


class ScenarioCancelRequested(Event):
    """A cancellation; its own audit record, as :class:`ScenarioRequested`."""

    entity_kind: ClassVar[EntityKind | None] = EntityKind.SCENARIO
    reason: str = Field(default="", max_length=500, description="why")
    actor: str = Field(default="", max_length=200, description="who cancelled: user name, key:<id> or token subject")
    actor_role: str = Field(default="", max_length=20, description="the role they cancelled in")
    client: str = Field(default="", max_length=40, description="keyed hash of the client's address (api.audit)")


class ScenarioProgressed(Event):
    entity_kind: ClassVar[EntityKind | None] = EntityKind.SCENARIO
    status: Literal["queued", "running", "completed", "failed", "cancelled"] = Field(description="where the run stands")
    step: int = Field(ge=0, description="steps done")
    steps: int = Field(ge=0, description="steps in all")
    message: str = Field(default="", description="progress note, or the error a person can act on")
    summary_json: str = Field(default="", description="the summary when completed, as JSON")


class AlertRaised(Event):
    alert_id: str = Field(description="stable id of the alert, the same for its clearing")
    severity: Literal["info", "warning", "severe", "extreme"] = Field(description="how serious")
    category: str = Field(description="e.g. 'storm_surge', 'freeboard'")
    message: str = Field(description="human-readable text")
    value: Finite = Field(description="the measured value that crossed the threshold")
    threshold: Finite = Field(description="the threshold crossed")
    public: bool = Field(description="safe to show on public screens")


class AlertCleared(Event):
    alert_id: str = Field(description="id of the alert that cleared")
    category: str = Field(description="e.g. 'storm_surge', 'freeboard'")
    message: str = Field(description="human-readable text")


AuditAction = Literal["scenario.launch", "scenario.cancel", "scenario.share", "scenario.delete", "moderate",
                      "user.create", "user.delete", "key.create", "key.delete", "login", "login.failed", "logout"]
AUDIT_ACTIONS: tuple[str, ...] = get_args(AuditAction)


class AuditRecorded(Event):
    """Who did what through the API (issue 11 item 6). ``entity_id`` is the scenario concerned, else the region
    entity ``<region>:_:region:<region>``. Never a password, token or key secret; the client address only hashed."""

    action: AuditAction = Field(description="what was done")
    actor: str = Field(min_length=1, max_length=200, description="user name, 'key:<id>' or the token's subject; for a "
                                                                  "failed login the name that was tried")
    actor_role: str = Field(max_length=20, description="public, planner or operator")
    target: str = Field(default="", max_length=300, description="the scenario, user or key id acted on")
    outcome: Literal["ok", "refused"] = Field(default="ok", description="done, or refused (a failed login)")
    detail: str = Field(default="", max_length=500, description="a short note (a role given, a reason)")
    client: str = Field(default="", max_length=64, description="keyed hash of the client address, never the address")


FeedbackKind = Literal["idea", "problem", "rating"]
FeedbackCategory = Literal["traffic", "parking", "environment", "coast", "public_space", "planning", "other"]
FEEDBACK_CATEGORIES: tuple[str, ...] = get_args(FeedbackCategory)


class FeedbackSubmitted(Event):
    """A visitor's idea, problem or rating (issue 12), from the kiosk or online, without an account. Personal data
    (e-mail addresses, phone numbers, names after "ich bin"/"my name is") is removed before the event is produced; no
    address of the sender is kept. ``entity_id`` is ``<region>:<neighbourhood or _>:report:fb-<receipt code>``."""

    entity_kind: ClassVar[EntityKind | None] = EntityKind.REPORT
    feedback_id: str = Field(min_length=4, max_length=16, description="the receipt code the visitor was given")
    kind: FeedbackKind = Field(description="idea, problem or rating")
    category: FeedbackCategory = Field(description="what it is about")
    text: str = Field(max_length=1000, description="the visitor's words, personal data already removed")
    rating: int | None = Field(default=None, ge=1, le=5, description="1 to 5 stars for a rating")
    lon: Finite | None = Field(default=None, ge=-180.0, le=180.0, description="the pin, longitude WGS84")
    lat: Finite | None = Field(default=None, ge=-90.0, le=90.0, description="the pin, latitude WGS84")
    neighbourhood: str = Field(default="", max_length=63, description="neighbourhood slug of the pin, empty without")
    scenario_id: str = Field(default="", max_length=200, description="the scenario or planning variant it is about")
    channel: Literal["kiosk", "online"] = Field(description="where it was written")
    language: Literal["de", "en", "da"] = Field(default="de", description="the language of the form")
    redactions: int = Field(default=0, ge=0, description="how many pieces of personal data were removed")


class FeedbackModerated(Event):
    """An operator's decision on one feedback (issue 12): approved feedback becomes public after the publication delay,
    rejected feedback never does. ``entity_id`` is the feedback's."""

    entity_kind: ClassVar[EntityKind | None] = EntityKind.REPORT
    feedback_id: str = Field(min_length=4, max_length=16, description="the receipt code of the feedback decided on")
    decision: Literal["approved", "rejected"] = Field(description="approved or rejected")
    reason: str = Field(min_length=1, max_length=500, description="why, in words the visitor may read")
    moderator: str = Field(min_length=1, max_length=200, description="the operator's subject")


class DeadLettered(BaseModel):
    """A record that could not be processed, kept with the reason. Not an entity event, so no envelope."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dead_letter_id: str = Field(default_factory=new_event_id, description="unique id")
    original_topic: str = Field(description="topic the record came from")
    original_partition: int = Field(description="partition it came from")
    original_offset: int = Field(description="offset it had")
    original_key: bytes | None = Field(default=None, description="its key bytes")
    original_value: bytes = Field(description="its value bytes, exactly as received (one datum of a batch)")
    batch_index: int = Field(default=-1, description="position in a batch record, -1 for a single record")
    error_type: str = Field(description="class of the problem: decode, schema, validation, unknown_entity")
    reason: str = Field(description="human-readable reason")
    failed_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(), description="when it failed, RFC 3339")
    processor: str = Field(description="the agent that refused it")


READING_TYPES: tuple[type[Reading], ...] = (
    WaterLevelMeasured,
    TrafficCounted,
    ParkingOccupancyReported,
    AirQualityMeasured,
    WeatherObserved,
    BikeStationStatusReported,
)
MUNICIPAL_TYPES: tuple[type[Event], ...] = (RoadWorksAnnounced, DefectReported, PublicEventScheduled)
TWIN_TYPES: tuple[type[Event], ...] = (TwinEntityUpdated, AggregateUpdated, AlertRaised, AlertCleared, ScenarioRequested,
                                      ScenarioCancelRequested, ScenarioProgressed, AuditRecorded)
FEEDBACK_TYPES: tuple[type[Event], ...] = (FeedbackSubmitted, FeedbackModerated)
ALL_TYPES: tuple[type[BaseModel], ...] = (*READING_TYPES, *MUNICIPAL_TYPES, *TWIN_TYPES, *FEEDBACK_TYPES, DeadLettered)
BY_NAME: dict[str, type[BaseModel]] = {t.__name__: t for t in ALL_TYPES}
READING_BY_SENSOR_KIND: dict[str, type[Reading]] = {t.sensor_kind: t for t in READING_TYPES}
