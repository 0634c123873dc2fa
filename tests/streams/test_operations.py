"""Operator tools over the real broker, through the real command: ``plietsch topics tail``, ``plietsch dead-letters``
(summary, list) and ``plietsch dead-letters replay`` (once per dead letter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, SingleObjectCodec, frame_batch
from streams.catalogue import DEAD_LETTERS
from streams.consume import drain
from streams.operations import REPLAY_HEADER
from streams.serde import encode_event
from twin.events import DeadLettered, WaterLevelMeasured

ROOT = Path(__file__).resolve().parents[2]
CODEC = SingleObjectCodec()


def plietsch(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def produce(bootstrap: str, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, key=key, value=value, headers=headers or [], partition=0)  # one partition: the order is the offsets'
    assert p.flush(15) == 0


def test_tail_prints_the_newest_records_decoded(topics: str) -> None:
    topic = f"ops-tail-{uuid.uuid4().hex[:6]}"
    reading = WaterLevelMeasured(entity_id="kiel:gaarden:sensor:water-level-001", region="kiel", source="ops-test",
                                 occurred_at=datetime(2026, 11, 1, 10, tzinfo=UTC), level_m=0.42)
    produce(topics, topic, frame_batch([encode_event(CODEC, reading)] * 2), b"k1",
            [(CONTENT_TYPE_HEADER, BATCH_CONTENT_TYPE)])
    produce(topics, topic, b"\x00\x01 not avro", b"k2")
    out = plietsch(topics, "topics", "tail", topic, "-n", "5")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [rec["key"] for rec in lines] == ["k1", "k2"]
    assert [d["type"] for d in lines[0]["datums"]] == ["WaterLevelMeasured"] * 2
    assert lines[0]["datums"][0]["level_m"] == 0.42
    assert "error" in lines[1]["datums"][0]  # what is not Avro is shown as such, not a crash
    missing = plietsch(topics, "topics", "tail", "no-such-topic")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_dead_letters_are_summed_up_listed_and_replayed_once(topics: str) -> None:
    agent = f"ops-{uuid.uuid4().hex[:6]}"
    letters = [DeadLettered(original_topic="sensor.parking", original_partition=0, original_offset=i, original_key=b"cp",
                            original_value=f"bytes {i}".encode(), error_type="unknown_entity",
                            reason=f"unknown car park {i}", processor=agent) for i in range(2)]
    letters.append(DeadLettered(original_topic="sensor.parking", original_partition=0, original_offset=9,
                                original_value=b"\x00", error_type="decode", reason="broken", processor=agent))
    for d in letters:
        produce(topics, DEAD_LETTERS.name, encode_event(CODEC, d), b"sensor.parking")

    table = plietsch(topics, "dead-letters")
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if agent in line]
    assert len(rows) == 2 and any("unknown_entity" in r and " 2 " in r for r in rows), table.stdout
    listed = [json.loads(line) for line in plietsch(topics, "dead-letters", "--list").stdout.splitlines()]
    mine = [d for d in listed if d["processor"] == agent]
    assert sorted(d["original_offset"] for d in mine) == [0, 1, 9]

    target = letters[1].dead_letter_id
    first = plietsch(topics, "dead-letters", "replay", target)
    assert first.returncode == 0, first.stderr
    replayed = [m for m in drain(topics, "sensor.parking", timeout=60)
                if (REPLAY_HEADER, target.encode()) in (m.headers() or [])]
    assert len(replayed) == 1 and replayed[0].value() == b"bytes 1" and replayed[0].key() == b"cp"

    again = plietsch(topics, "dead-letters", "replay", target)
    assert again.returncode == 2 and "replayed already" in again.stderr
    unknown = plietsch(topics, "dead-letters", "replay", "no-such-id")
    assert unknown.returncode == 2 and "no dead letter with id no-such-id" in unknown.stderr


def test_a_record_on_the_dead_letter_topic_that_is_no_dead_letter_is_skipped_with_the_reason() -> None:
    """Found by the stack fuzz drill: a valid reading produced onto dead-letters was listed (and summed, and offered for
    replay) as a dead letter with every field None."""
    from streams.operations import DeadLetter, parse_dead_letter
    from twin.events import DeadLettered

    good = DeadLettered(original_topic="sensor.parking", original_partition=1, original_offset=7, original_value=b"\x00",
                        error_type="decode", reason="broken", processor="twin-sensors")
    letter = parse_dead_letter(CODEC, encode_event(CODEC, good))
    assert isinstance(letter, DeadLetter) and letter.original_offset == 7 and letter.reason == "broken"
    reading = WaterLevelMeasured(entity_id="kiel:_:sensor:gauge-holtenau", region="kiel", source="test SYNTHETIC",
                                 occurred_at=datetime(2030, 1, 1, tzinfo=UTC), level_m=0.5)
    assert parse_dead_letter(CODEC, encode_event(CODEC, reading)) == "not a dead letter: a WaterLevelMeasured record"
    assert parse_dead_letter(CODEC, b"\x00junk").startswith("not a dead letter: ")
