"""The topic catalogue: every topic of the platform, in one place. Names are API."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from infra.kafka_security import kafka_security
from twin.events import (
    AirQualityMeasured,
    AlertCleared,
    AlertRaised,
    AuditRecorded,
    BikeStationStatusReported,
    DeadLettered,
    DefectReported,
    FeedbackModerated,
    FeedbackSubmitted,
    ParkingOccupancyReported,
    PublicEventScheduled,
    RoadWorksAnnounced,
    TrafficCounted,
    TwinEntityUpdated,
    WaterLevelMeasured,
    WeatherObserved,
)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    value_schemas: tuple[str, ...]
    key: str
    partitions: int = 4
    retention_ms: int | None = 7 * DAY_MS
    compacted: bool = False
    doc: str = ""
    config: dict[str, str] = field(default_factory=dict)

    def kafka_config(self) -> dict[str, str]:
        cfg = dict(self.config)
        cfg["cleanup.policy"] = "compact" if self.compacted else "delete"
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


def _sensor(name: str, schema: str, doc: str) -> TopicSpec:
    return TopicSpec(name, (schema,), key="sensor entity id (batches: shard)", doc=doc)


SENSOR_TOPICS: dict[str, TopicSpec] = {
    "water_level": _sensor("sensor.water-level", WaterLevelMeasured.__name__, "water level above mean, gauges and staffs"),
    "traffic_count": _sensor("sensor.traffic-count", TrafficCounted.__name__, "vehicle counts per counting interval"),
    "parking": _sensor("sensor.parking", ParkingOccupancyReported.__name__, "car park occupancy"),
    "air_quality": _sensor("sensor.air-quality", AirQualityMeasured.__name__, "NO2, PM10, PM2.5"),
    "weather": _sensor("sensor.weather", WeatherObserved.__name__, "temperature, wind, precipitation"),
    "bike_share": _sensor("sensor.bike-share", BikeStationStatusReported.__name__, "GBFS-like station status"),
}
MUNICIPAL_TOPICS: dict[str, TopicSpec] = {
    "road_works": TopicSpec("municipal.road-works", (RoadWorksAnnounced.__name__,), key="road entity id", partitions=2,
                            retention_ms=365 * DAY_MS, doc="announced road works"),
    "defect_reports": TopicSpec("municipal.defect-reports", (DefectReported.__name__,), key="report entity id",
                                partitions=2, retention_ms=365 * DAY_MS, doc="citizen defect reports, no personal data"),
    "public_events": TopicSpec("municipal.public-events", (PublicEventScheduled.__name__,), key="event entity id",
                               partitions=2, retention_ms=365 * DAY_MS, doc="public events such as Kieler Woche"),
}
TWIN_UPDATES = TopicSpec("twin.updates", (TwinEntityUpdated.__name__,), key="entity id", compacted=True, retention_ms=None,
                         doc="latest state per entity, compacted: the read side's snapshot and deltas")
AGGREGATES = TopicSpec("twin.aggregates", ("AggregateUpdated",), key="metric|group|window|shard", compacted=True,
                       retention_ms=None, doc="partials of windowed aggregates, compacted; readers combine the shards")
SCENARIO_REQUESTS = TopicSpec("scenario.requests", ("ScenarioRequested", "ScenarioCancelRequested"), key="scenario id",
                              partitions=1, retention_ms=365 * DAY_MS, doc="what-if runs asked for, and cancellations")
SCENARIO_RESULTS = TopicSpec("scenario.results", ("ScenarioProgressed",), key="scenario id", partitions=1, compacted=True,
                             retention_ms=None, doc="progress and outcome of each scenario, latest per scenario")
ALERTS = TopicSpec("twin.alerts", (AlertRaised.__name__, AlertCleared.__name__), key="alert id", partitions=2,
                   retention_ms=90 * DAY_MS, doc="alerts raised and cleared")
DEAD_LETTERS = TopicSpec("dead-letters", (DeadLettered.__name__,), key="original topic", partitions=1,
                         retention_ms=90 * DAY_MS, doc="records that failed, with the original bytes and the reason")

AUDIT = TopicSpec("audit.events", (AuditRecorded.__name__,), key="actor", partitions=1, retention_ms=400 * DAY_MS,
                  doc="who did what through the API (scenarios, users, keys, logins); archived, read by operators")

# Feedback from the public (issue 12): submissions and the operators' decisions on one topic, keyed by the receipt code,
# so one partition keeps a feedback's decision after its submission. Not compacted (a decision must not erase its
# submission); kept two years. The API's feedback state is this topic, read from the start (api/feedback_store.py).
FEEDBACK = TopicSpec("feedback.events", (FeedbackSubmitted.__name__, FeedbackModerated.__name__), key="receipt code",
                     partitions=1, retention_ms=730 * DAY_MS,
                     doc="the public's feedback (personal data removed) and its moderation; the API's feedback state")

ALL_TOPICS: tuple[TopicSpec, ...] = (*SENSOR_TOPICS.values(), *MUNICIPAL_TOPICS.values(), TWIN_UPDATES, AGGREGATES, ALERTS,
                                     SCENARIO_REQUESTS, SCENARIO_RESULTS, DEAD_LETTERS, AUDIT, FEEDBACK)
BY_NAME: dict[str, TopicSpec] = {t.name: t for t in ALL_TOPICS}


class TopicSetupError(RuntimeError):
    pass


def ensure_topics(bootstrap_servers: str, topics: tuple[TopicSpec, ...] = ALL_TOPICS, replication_factor: int = 1,
                  timeout: float = 15.0) -> list[str]:
    """Create missing topics; existing ones are left as they are. Returns the names created."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, **kafka_security().librdkafka()})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise TopicSetupError(f"cannot reach Kafka at {bootstrap_servers!r} to list topics: {exc}. "
                              "Is the broker running? Check KAFKA_BOOTSTRAP_SERVERS.") from exc
    wanted = [NewTopic(t.name, t.partitions, replication_factor, config=t.kafka_config())
              for t in topics if t.name not in existing]
    if not wanted:
        return []
    created = []
    for name, fut in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS: another process won the race
                raise TopicSetupError(f"could not create topic {name!r}: {exc}") from exc
    return created
