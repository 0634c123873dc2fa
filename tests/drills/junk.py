"""Junk records for every topic a process of the stack reads, made from a valid event of the topic's type: the fuzz
drill over the whole stack (tests/drills/test_fuzz_stack.py) and the NGSI-LD sink's test use them."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, SINGLE_OBJECT_MAGIC, frame_batch
from streams.catalogue import AGGREGATES, ALERTS, AUDIT, FEEDBACK, SCENARIO_REQUESTS, SCENARIO_RESULTS, TWIN_UPDATES
from streams.serde import encode_event
from streams.simulator import ReadingFactory
from tests.drills import kit
from twin.events import (
    AggregateUpdated,
    AlertRaised,
    AuditRecorded,
    DefectReported,
    Event,
    FeedbackSubmitted,
    PublicEventScheduled,
    RoadWorksAnnounced,
    ScenarioProgressed,
    ScenarioRequested,
    TwinEntityUpdated,
)
from twin.region import RegionPack

BATCH = [(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE)]


def templates(pack: RegionPack) -> dict[str, Event]:
    """A valid event of the type each topic carries (not produced itself: the junk is made from it)."""
    t0, gauge = kit.T0, next(iter(pack.coast_by_gauge))
    road = sorted(pack.roads)[0]
    env: dict[str, Any] = {"region": pack.id, "occurred_at": t0, "source": "fuzz-drill SYNTHETIC"}
    scenario = f"{pack.id}:_:scenario:fuzz-1"
    return {
        "municipal.road-works": RoadWorksAnnounced(entity_id=road, starts_at=t0, ends_at=t0 + timedelta(days=3),
                                                   lanes_closed=1, description="SYNTHETIC", **env),
        "municipal.defect-reports": DefectReported(entity_id=f"{pack.id}:_:report:fuzz-1", category="pothole",
                                                   description="SYNTHETIC", lon=10.13, lat=54.32, **env),
        "municipal.public-events": PublicEventScheduled(entity_id=f"{pack.id}:_:event:fuzz-1", title="SYNTHETIC",
                                                        starts_at=t0, ends_at=t0 + timedelta(hours=5),
                                                        expected_visitors=10, lon=10.13, lat=54.32, **env),
        SCENARIO_REQUESTS.name: ScenarioRequested(entity_id=scenario, request_json="{}", **env),
        TWIN_UPDATES.name: TwinEntityUpdated(entity_id=gauge, entity_type="sensor", revision=0, state_json="{}",
                                             cause_event_id="fuzz", **env),
        ALERTS.name: AlertRaised(entity_id=gauge, alert_id="fuzz", severity="warning", category="storm_surge",
                                 message="SYNTHETIC", value=1.0, threshold=0.5, public=False, **env),
        AGGREGATES.name: AggregateUpdated(entity_id=f"{pack.id}:_:region:{pack.id}", metric="traffic_vehicles",
                                          window_start="", window_s=0, shard=0, partial_json="{}", **env),
        SCENARIO_RESULTS.name: ScenarioProgressed(entity_id=scenario, status="running", step=0, steps=2, **env),
        FEEDBACK.name: FeedbackSubmitted(entity_id=f"{pack.id}:_:report:fb-FUZZ1", feedback_id="FUZZ1", kind="idea",
                                         category="other", text="SYNTHETIC", channel="online", **env),
        AUDIT.name: AuditRecorded(entity_id=f"{pack.id}:_:region:{pack.id}", action="login", actor="fuzz",
                                  actor_role="operator", **env),
    }


# one field per type that the schema carries but the event rules bound: set beyond the bound
OUT_OF_RANGE = {"RoadWorksAnnounced": ("lanes_closed", 99), "DefectReported": ("lat", 95.0),
                "PublicEventScheduled": ("expected_visitors", -1), "ScenarioRequested": ("actor_role", "x" * 21),
                "TwinEntityUpdated": ("revision", -1), "AlertRaised": ("value", float("nan")),
                "AggregateUpdated": ("shard", -1), "ScenarioProgressed": ("step", -1), "FeedbackSubmitted": ("rating", 9),
                "AuditRecorded": ("actor", "")}


def junk(pack: RegionPack, topic: str, rng: random.Random) -> list[tuple[str, bytes | None, list[Any]]]:
    """(kind, value, headers) of one junk record of each kind for *topic*."""
    gauge = next(iter(pack.coast_by_gauge))
    reading = ReadingFactory(pack, seed=rng.randrange(1 << 30), interval_s=60).reading(pack.sensors[gauge], kit.T0)
    wrong = encode_event(kit.CODEC, reading)  # valid, but no topic here carries readings
    out: list[tuple[str, bytes | None, list[Any]]] = [
        ("random bytes", rng.randbytes(rng.randint(1, 300)), []),
        ("empty value", b"", []),
        ("JSON, not Avro", json.dumps({"entity_id": gauge, "level_m": 1.0}).encode(), []),
        ("unknown fingerprint", SINGLE_OBJECT_MAGIC + rng.randbytes(8) + rng.randbytes(40), []),
        ("truncated batch frame", frame_batch([wrong] * 3)[:-7], BATCH),
        ("junk batch frame", rng.randbytes(200), BATCH),
        ("wrong type for the topic", wrong, []),
    ]
    if topic != AGGREGATES.name:  # a null value on twin.aggregates is a tombstone: valid there
        out.append(("null value", None, []))
    good = templates(pack).get(topic)
    if good is not None:
        name, rec = type(good).__name__, good.model_dump(mode="json")
        field, value = OUT_OF_RANGE[name]
        enc = kit.CODEC.encode
        out += [("malformed entity id", enc(name, {**rec, "entity_id": "not an id"}), []),
                ("value out of range", enc(name, {**rec, field: value}), []),
                ("far future", enc(name, {**rec, "occurred_at": "9999-12-31T23:59:59+00:00"}), []),
                ("far past", enc(name, {**rec, "occurred_at": "1900-01-01T00:00:00+00:00"}), []),
                ("huge string", enc(name, {**rec, "source": "x" * 200_000}), [])]
        if isinstance(good, RoadWorksAnnounced):  # well formed, but no road segment of the pack
            out.append(("unknown entity", enc(name, {**rec, "entity_id": f"{pack.id}:gaarden:road:fuzz-999"}), []))
    return out
