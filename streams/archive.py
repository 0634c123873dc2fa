"""The archive: every input event in Avro container files, by topic and day, for history, replay and time travel.

Layout: ``<root>/<topic>/<YYYY-MM-DD>/<EventName>-p<partition>-o<first offset>.avro`` (day of occurrence, UTC).
Each flush writes new files (written to a temporary name, then renamed), so a crash never leaves a half file; offsets
are committed only after the files are on disk (at least once; replay is idempotent because the fold ignores repeats).
Records replayed into the broker carry the header ``plietsch-replay`` and are not archived again.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException
from fastavro import reader as avro_reader
from fastavro import writer as avro_writer

from schemas.codec import CodecError, SchemaStore, is_batch, iter_batch
from streams.catalogue import MUNICIPAL_TOPICS, SENSOR_TOPICS
from streams.publisher import EventPublisher
from streams.serde import Codec
from twin.events import BY_NAME, Event
from twin.region import RegionPack
from twin.state import TwinState, fold

log = logging.getLogger("plietsch.archive")
ARCHIVED_TOPICS = tuple(t.name for t in (*SENSOR_TOPICS.values(), *MUNICIPAL_TOPICS.values()))
REPLAY_HEADER = "plietsch-replay"
REPLAY_HEADERS = [(REPLAY_HEADER, b"1")]


class ArchiveWriter:
    def __init__(self, root: Path, store: SchemaStore | None = None) -> None:
        self.root = Path(root)
        self.store = store or SchemaStore()
        self._buf: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
        self._first: dict[tuple[str, str, str, int], int] = {}
        self.pending = 0
        self.written = 0

    def add(self, topic: str, partition: int, offset: int, name: str, record: dict[str, Any]) -> None:
        day = str(record["occurred_at"])[:10]
        key = (topic, day, name, partition)
        self._first.setdefault(key, offset)
        self._buf[key].append(record)
        self.pending += 1

    def flush(self) -> list[Path]:
        paths = []
        for (topic, day, name, partition), records in self._buf.items():
            folder = self.root / topic / day
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}-p{partition}-o{self._first[(topic, day, name, partition)]:012d}-{uuid.uuid4().hex[:6]}.avro"
            tmp = path.with_suffix(".tmp")
            with tmp.open("wb") as fh:
                avro_writer(fh, self.store.schema(name).parsed, records, codec="deflate",
                            metadata={"plietsch.topic": topic, "plietsch.partition": str(partition)})
                fh.flush()
                os.fsync(fh.fileno())
            tmp.rename(path)
            paths.append(path)
            self.written += len(records)
        self._buf.clear()
        self._first.clear()
        self.pending = 0
        return paths


def run_sink(bootstrap: str, codec: Codec, root: Path, group: str = "plietsch-archive", flush_every_s: float = 2.0,
             should_stop: Callable[[], bool] = lambda: False) -> int:
    """Consume the input topics into the archive until *should_stop*; returns the number of events archived."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    writer = ArchiveWriter(root)
    consumer.subscribe(list(ARCHIVED_TOPICS))
    last_flush = time.monotonic()
    try:
        while not should_stop():
            for msg in consumer.consume(1000, 0.2):
                if msg.error():
                    continue
                headers = msg.headers() or []
                value = msg.value()
                names = headers.keys() if isinstance(headers, dict) else [k for k, _ in headers]
                if value is None or REPLAY_HEADER in names:
                    continue
                datums = iter_batch(value) if is_batch(headers) else (value,)
                try:
                    for d in datums:
                        try:
                            name, rec = codec.decode(d)
                        except CodecError:
                            continue  # kept in the dead-letter topic by the worker
                        if name in BY_NAME:
                            writer.add(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0), name, rec)
                except CodecError:
                    continue  # broken batch frame: the worker dead-letters it
            if writer.pending and time.monotonic() - last_flush >= flush_every_s:
                writer.flush()
                consumer.commit(asynchronous=False)
                last_flush = time.monotonic()
    except KafkaException as exc:
        log.error("archive sink stopped: %s", exc)
        raise
    finally:
        if writer.pending:
            writer.flush()
            consumer.commit(asynchronous=False)
        consumer.close()
    return writer.written


def archive_files(root: Path) -> list[Path]:
    return sorted(Path(root).glob("*/*/*.avro"))


def read_events(root: Path, until: datetime | None = None) -> Iterator[tuple[str, Event]]:
    """Every archived event (topic, event), in occurrence order; files of days after *until* are not opened."""
    items: list[tuple[datetime, int, str, Event]] = []
    seq = 0
    for path in archive_files(root):
        day = path.parent.name
        if until is not None and day > until.date().isoformat():
            continue
        topic = path.parent.parent.name
        with path.open("rb") as fh:
            for rec in avro_reader(fh):
                model = BY_NAME[path.name.split("-p")[0]]
                event = model.model_validate(rec)
                if isinstance(event, Event):
                    items.append((event.occurred_at, seq, topic, event))
                    seq += 1
    items.sort(key=lambda t: (t[0], t[1]))
    for _, _, topic, event in items:
        yield topic, event


def rebuild(root: Path, pack: RegionPack, at: datetime | None = None) -> TwinState:
    """The twin as it stood at *at* (or now), folded from the archive."""
    return fold(TwinState.empty(pack), (e for _, e in read_events(root, at)), until=at)


def replay(root: Path, publisher: EventPublisher, on_progress: Callable[[int], None] | None = None) -> int:
    """Produce every archived event into its topic again (batched); returns the count. Give a publisher made with
    ``extra_headers=REPLAY_HEADERS`` so that the archive sink does not archive them twice."""
    n = 0
    for topic, event in read_events(root):
        publisher.add(topic, event.entity_id, event)
        n += 1
        if n % 20_000 == 0:
            publisher.tick()
            if on_progress:
                on_progress(n)
    publisher.flush()
    return n


