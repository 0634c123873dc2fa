"""The API's state of the public's feedback (issue 12): folded from the topic ``feedback.events`` by a read_committed
consumer that reads it from the start, so a restarted API has every submission and decision again. Nothing is kept
anywhere else: the topic is the store.

A feedback is *pending* until an operator decides; *rejected* feedback is never public; *approved* feedback becomes
*published* once the publication delay (``PLIETSCH_FEEDBACK_DELAY_S``) has passed since the decision. The first
decision on the topic counts (the API refuses a second one; two operators deciding at the same instant: the topic's
order decides, and the route tells the loser)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.kafka_security import secured
from schemas.codec import BATCH_CONTENT_TYPE, CONTENT_TYPE_HEADER, CodecError, iter_batch
from streams.catalogue import FEEDBACK
from streams.serde import Codec
from twin.events import FeedbackModerated, FeedbackSubmitted

log = logging.getLogger("plietsch.api.feedback")


@dataclass
class Item:
    sub: FeedbackSubmitted
    decision: FeedbackModerated | None = None

    @property
    def code(self) -> str:
        return self.sub.feedback_id

    def publish_at(self, delay: timedelta) -> datetime | None:
        d = self.decision
        return d.occurred_at + delay if d is not None and d.decision == "approved" else None

    def status(self, delay: timedelta, now: datetime) -> str:
        if self.decision is None:
            return "pending"
        if self.decision.decision == "rejected":
            return "rejected"
        at = self.publish_at(delay)
        return "published" if at is not None and at <= now else "approved"


class FeedbackStore:
    def __init__(self, bootstrap_servers: str, codec: Codec, delay_s: float) -> None:
        self.bootstrap_servers, self.codec = bootstrap_servers, codec
        self.delay = timedelta(seconds=delay_s)
        self.items: dict[str, Item] = {}
        self.broken = 0  # records on the topic that did not decode (kept on the topic, counted, skipped)
        self.ready = threading.Event()
        self.error: str | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading the topic -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="feedback-store", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer(secured({
            "bootstrap.servers": self.bootstrap_servers, "group.id": f"plietsch-api-feedback-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": "read_committed",
            "fetch.wait.max.ms": 20}))  # read-your-writes: a submitter waits for this consumer (500 ms by default)
        try:
            ends: dict[int, int] | None = None
            while not self._stop.is_set():
                if ends is None:
                    try:  # where the topic ends now: the store is ready once it has read that far
                        meta = consumer.list_topics(FEEDBACK.name, timeout=5).topics[FEEDBACK.name]
                        parts = list(meta.partitions)
                        if meta.error is not None or not parts:
                            raise KafkaException(meta.error or "no partitions")
                        ends = {p: consumer.get_watermark_offsets(TopicPartition(FEEDBACK.name, p), timeout=5)[1]
                                for p in parts}
                        consumer.assign([TopicPartition(FEEDBACK.name, p, 0) for p in parts])
                        self.error = None
                    except KafkaException as exc:
                        self.error = f"cannot read {FEEDBACK.name}: {exc}"
                        time.sleep(1.0)
                        continue
                msg = consumer.poll(0.2)
                if msg is not None:
                    if msg.error():
                        self.error = str(msg.error())
                    elif (dict(msg.headers() or []).get(CONTENT_TYPE_HEADER)) == BATCH_CONTENT_TYPE:
                        try:  # a replay from the archive may frame several datums in one record
                            for datum in iter_batch(msg.value() or b""):
                                self._apply(datum)
                        except CodecError as exc:
                            self.broken += 1
                            log.warning("feedback: a batch on %s does not frame: %s", FEEDBACK.name, exc)
                    else:
                        self._apply(msg.value())
                if not self.ready.is_set():
                    pos = {tp.partition: tp.offset for tp in consumer.position(
                        [TopicPartition(FEEDBACK.name, p) for p in ends])}
                    if all(end == 0 or pos.get(p, -1) >= end for p, end in ends.items()):
                        self.ready.set()
                        log.info("feedback: %d submissions read from %s", len(self.items), FEEDBACK.name)
        except Exception as exc:  # the route answers 503 with this reason; the API itself keeps running
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("feedback store stopped")
        finally:
            consumer.close()

    def stopped(self) -> str | None:
        """Why the store no longer reads its topic (its thread ended by an error), None while it does."""
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            return f"the feedback store stopped reading {FEEDBACK.name}: {self.error or 'its thread ended'}"
        return None

    def health(self) -> dict[str, Any]:
        """For /health (operators): read up to the topic's end, the records skipped as not feedback, the last error."""
        return {"ready": self.ready.is_set(), "items": len(self.items), "broken": self.broken, "error": self.error}

    def _apply(self, value: bytes | None) -> None:
        try:
            name, rec = self.codec.decode(value or b"")
            event: FeedbackSubmitted | FeedbackModerated
            if name == "FeedbackSubmitted":
                event = FeedbackSubmitted.model_validate(rec)
            elif name == "FeedbackModerated":
                event = FeedbackModerated.model_validate(rec)
            else:
                raise CodecError("schema", f"{name} does not belong on {FEEDBACK.name}")
        except (CodecError, ValueError) as exc:
            self.broken += 1
            log.warning("feedback: a record on %s is not feedback and is skipped: %s", FEEDBACK.name, exc)
            return
        with self._changed:
            if isinstance(event, FeedbackSubmitted):
                self.items.setdefault(event.feedback_id, Item(event))  # a redelivered submission changes nothing
            else:
                item = self.items.get(event.feedback_id)
                if item is not None and item.decision is None:
                    item.decision = event
            self._changed.notify_all()

    def wait(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Until *done()* holds for the folded state (read-your-writes after a produce), at most *timeout_s*."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
            return True

    # -- views -------------------------------------------------------------------------------------------------------
    def get(self, code: str) -> Item | None:
        return self.items.get(code)

    def snapshot(self) -> list[Item]:
        with self._changed:
            return list(self.items.values())

    def published(self, now: datetime | None = None) -> list[Item]:
        now = now or datetime.now(UTC)
        return [i for i in self.snapshot() if i.status(self.delay, now) == "published"]

    def receipt(self, item: Item, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        status = item.status(self.delay, now)
        out: dict[str, Any] = {"status": status, "submitted_at": item.sub.occurred_at.isoformat(),
                               "kind": item.sub.kind, "category": item.sub.category}
        if item.decision is not None:
            out["decided_at"] = item.decision.occurred_at.isoformat()
            if status == "rejected":
                out["reason"] = item.decision.reason
            at = item.publish_at(self.delay)
            if at is not None:
                out["published_at" if status == "published" else "publish_at"] = at.isoformat()
        return out
