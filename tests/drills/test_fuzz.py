"""Fuzz drill (issue 15 item 2, the worker's side): while good readings stream, junk of every kind goes to every
sensor topic: random bytes, empty and null values, JSON instead of Avro, an unknown schema fingerprint, truncated and
junk batch frames, a valid datum of the wrong type, unknown and malformed entity ids, values out of range, times far
ahead and far back, a huge string, and a batch with one bad datum among good ones. Afterwards the worker is alive,
the twin (sensor and coast state, every aggregate, the alert history) equals the offline fold of the good readings
alone, each bad record has exactly one dead letter (with the reason), and a restarted worker recovers the same twin.

Bounded in ``make test`` (2 junk records of each kind per sensor topic, 4,600 good readings); ``PLIETSCH_DRILL=full``:
20 of each kind, 46,000 good readings. The other topics (municipal, scenarios, the output topics, feedback, audit,
dead letters), their readers, the archive and history: tests/drills/test_fuzz_stack.py."""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from infra.broker import EmbeddedBroker
from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, SINGLE_OBJECT_MAGIC, frame_batch
from streams.catalogue import DEAD_LETTERS, SENSOR_TOPICS
from streams.consume import drain
from streams.serde import encode_event
from tests.drills import kit
from tests.helpers import Worker, wait_for
from twin.events import AirQualityMeasured
from twin.region import RegionPack, load_pack

pytestmark = [pytest.mark.broker, pytest.mark.drill]

EACH = 20 if kit.FULL else 2
ROUNDS = 200 if kit.FULL else 20  # x 230 sensors
SEED = int(os.environ.get("PLIETSCH_DRILL_SEED", "20261123"))
BATCH = [(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE)]


def junk(pack: RegionPack, topic: str, rng: random.Random) -> list[tuple[str, bytes | None, list[Any], bytes]]:
    """(kind, value, headers, key) of one junk record of each kind for *topic*."""
    kind = next(k for k, t in SENSOR_TOPICS.items() if t.name == topic)
    sensor = rng.choice(sorted((s for s in pack.sensors.values() if s.sensor_kind == kind), key=lambda s: s.id))
    other = next(t for k, t in SENSOR_TOPICS.items() if k != kind)
    other_sensor = next(s for s in pack.sensors.values() if s.sensor_kind == next(
        k for k, t in SENSOR_TOPICS.items() if t is other))
    from streams.simulator import ReadingFactory

    factory = ReadingFactory(pack, seed=rng.randrange(1 << 30), interval_s=60)
    good = factory.reading(sensor, kit.T0)
    if isinstance(good, AirQualityMeasured):  # values in quarters, as the feeder's: sums exact in any order
        good = good.model_copy(update={k: kit.quarter(getattr(good, k)) for k in ("no2_ugm3", "pm10_ugm3", "pm25_ugm3")})
    rec = good.model_dump(mode="json")
    name = type(good).__name__
    enc = kit.CODEC.encode
    first_number = next(f for f, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                        and f not in ("interval_s",))
    wrong = factory.reading(other_sensor, kit.T0)
    key = sensor.id.encode()
    return [
        ("random bytes", rng.randbytes(rng.randint(1, 300)), [], key),
        ("empty value", b"", [], key),
        ("null value", None, [], key),
        ("JSON, not Avro", json.dumps(rec).encode(), [], key),
        ("unknown fingerprint", SINGLE_OBJECT_MAGIC + rng.randbytes(8) + rng.randbytes(40), [], key),
        ("truncated batch frame", frame_batch([encode_event(kit.CODEC, good)] * 3)[:-7], BATCH, key),
        ("junk batch frame", rng.randbytes(200), BATCH, key),
        ("wrong type for the topic", encode_event(kit.CODEC, wrong), [], key),
        ("unknown entity", enc(name, {**rec, "entity_id": sensor.id.rsplit(":", 1)[0] + ":fuzz-999"}), [], key),
        ("malformed entity id", enc(name, {**rec, "entity_id": "not an id"}), [], key),
        ("value out of range", enc(name, {**rec, first_number: 1e12 if isinstance(rec[first_number], float)
                                          else 10**9}), [], key),
        ("far future", enc(name, {**rec, "occurred_at": "9999-12-31T23:59:59+00:00"}), [], key),
        ("far past", enc(name, {**rec, "occurred_at": "1900-01-01T00:00:00+00:00"}), [], key),
        ("huge string", enc(name, {**rec, "source": "x" * 200_000}), [], key),
        ("one bad datum in a batch", frame_batch([encode_event(kit.CODEC, good.model_copy(update={"event_id": f"g{i}"}))
                                                  for i in range(2)] + [b"\x00bad"]), BATCH, key),
    ]


def changelog_junk(prod: Producer, app_id: str, rng: random.Random) -> int:
    """Junk on every partition of every changelog of the worker's tables: random bytes, an empty value, text that is
    not JSON, a marker that is not an integer and a transaction number header that is not one (each skipped and counted
    by the load). The twin of the good records stays what it was. (A well-formed record under a real key is a forgery
    no reader can tell from the worker's own: ACLs on the changelogs keep foreign clients out.)"""
    from streams.agents import MunicipalUnit, SensorUnit
    from streams.tables import MARKER_PREFIX, SEQ_HEADER

    topics = [f"{app_id}-{t}-changelog" for unit in (SensorUnit, MunicipalUnit) for t in unit.tables]
    n = 0
    for topic in topics:
        parts = prod.list_topics(topic, timeout=10).topics[topic].partitions
        assert parts, f"no partitions of {topic}"
        for part in sorted(parts):
            junk_records: list[tuple[bytes, bytes, list[tuple[str, str | bytes | None]] | None]] = [
                (b"fuzz:_:sensor:junk-1", b"\xff" + rng.randbytes(rng.randint(1, 200)), None),
                (b"fuzz:_:sensor:junk-2", b"", None),
                (b"fuzz:_:sensor:junk-3", b"not json {", None),
                (MARKER_PREFIX + b"fuzz|sensor.fuzz|0", b'"zz"', None),
                (b"fuzz:_:sensor:junk-6", b"{}", [(SEQ_HEADER, b"not a number")]),
            ]
            for key, value, headers in junk_records:
                prod.produce(topic, key=key, value=value, partition=part, headers=headers)
                n += 1
    assert prod.flush(60) == 0
    return n


def test_junk_on_every_sensor_topic_changes_nothing_but_dead_letters(broker: EmbeddedBroker, big_pack_dir: Path) -> None:
    bootstrap = broker.bootstrap_servers
    pack = load_pack(big_pack_dir)
    rng = random.Random(SEED)
    app_id = f"plietsch-fuzz-{uuid.uuid4().hex[:6]}"
    worker = Worker(bootstrap, big_pack_dir, app_id)
    worker.start()
    feeder = kit.Feeder(bootstrap, pack, ROUNDS, 20.0, SEED).start()
    # keyed by sensor and partitioned like the project's publishers (murmur2): a sender that partitions otherwise splits a
    # sensor over two partitions, which the worker does not detect yet (noted in the closing note of session 5)
    prod = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "message.max.bytes": 4_000_000,
                     "partitioner": "murmur2_random"})
    kinds: Counter[str] = Counter()
    try:
        for _ in range(EACH):
            for topic in SENSOR_TOPICS.values():
                for kind, value, headers, key in junk(pack, topic.name, rng):
                    prod.produce(topic.name, key=key, value=value, headers=headers)
                    kinds[kind] += 1
            prod.poll(0)
            time.sleep(0.5)
        assert prod.flush(60) == 0
        feeder.join(300)

        bad: list[tuple[str, int, int]] = []
        events = kit.produced(bootstrap, bad, pack)
        assert len(events) == feeder.total + 2 * sum(1 for k in kinds.elements() if k == "one bad datum in a batch"), \
            "the good readings and the good datums of the mixed batches"
        assert len(bad) == sum(kinds.values()), f"{len(bad)} bad records found, {sum(kinds.values())} sent ({kinds})"
        want = kit.offline(pack, events)
        kit.settle(bootstrap, app_id, pack, want, 600 if kit.FULL else 240, "after the junk\n" + worker.output()[-1500:])
        assert worker.alive(), worker.output()[-3000:]

        def letters() -> Counter[tuple[str, int, int]]:
            out: Counter[tuple[str, int, int]] = Counter()
            for m in drain(bootstrap, DEAD_LETTERS.name, missing_ok=True, timeout=60):
                _, d = kit.CODEC.decode(m.value())
                assert d["reason"], d
                out[(d["original_topic"], d["original_partition"], d["original_offset"])] += 1
            return out

        got = wait_for(lambda: (c := letters()) and set(c) >= set(bad) and c, 120, "a dead letter for every bad record")
        doubled = {k: n for k, n in got.items() if n > 1}
        assert not doubled, f"more than one dead letter for a record: {doubled}"
        assert set(got) == set(bad), f"dead letters for records that were not bad: {sorted(set(got) - set(bad))[:5]}"

        worker.stop()  # a restart recovers the same twin from the changelogs
        # ... also with junk on every changelog partition (a foreign client's; the topics are compacted, so it stays):
        # the load skips and counts it instead of ending the worker at every start
        junked = changelog_junk(prod, app_id, rng)
        again = Worker(bootstrap, big_pack_dir, app_id)
        again.start()
        try:
            kit.settle(bootstrap, app_id, pack, want, 240, "after the restart\n" + again.output()[-1500:])
            assert again.alive(), again.output()[-3000:]
            assert sum(letters().values()) == len(bad), "the restart wrote dead letters again"
            assert "skipping a record no worker wrote" in again.output(), again.output()[-3000:]
            assert junked
        finally:
            again.stop()
    finally:
        worker.stop()
