"""Audit (issue 11 item 6): every launch, cancel, share and deletion of a scenario, every user and key created or
deleted, every login, failed login and logout is recorded; the archive sink keeps the records with the input events
(``streams.archive.ARCHIVED_TOPICS``); ``GET /audit`` reads them back from the archive, for operators only.

An action that is an event anyway is its own audit record, so the action and its audit entry are one record, written
or not written together, on any broker (Tansu shows an aborted transaction's records, so a transaction over two topics
would not give that): a scenario's launch and cancellation (``ScenarioRequested``, ``ScenarioCancelRequested`` on
``scenario.requests`` carry the actor, role and client hash; read as ``scenario.launch`` and ``scenario.cancel``) and a
moderation decision (issue 12: ``FeedbackModerated`` on ``feedback.events`` names the operator, the decision and the
reason; read as ``moderate``). Everything else is an ``AuditRecorded`` event on ``audit.events``. Where the action
changes the API's own SQLite store (users, keys, a scenario shared), the event is written into that store's outbox in
the same transaction as the change (``api.auth.store``), and the ``Relay`` hands it to Kafka: an action whose audit
record is lost, or an audit record of an action that did not happen, cannot occur. Logins, failed logins and logouts
are produced directly (a refused login changes nothing to be atomic with).

The actor is the caller's subject (user name, ``key:<id>``, the token's subject), never a password, token or key secret;
the client address is kept only as a keyed hash (the key, ``<data_dir>/audit.salt``, stays on this machine), so the same
client is recognisable across the log while the address cannot be recovered by trying all addresses."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from fastapi import HTTPException, Request

from api.auth.access import identify
from api.auth.store import AuthStore, Outgoing
from api.retention import Sweeper
from schemas.codec import CodecError, SingleObjectCodec
from streams.catalogue import AUDIT, FEEDBACK, SCENARIO_REQUESTS
from streams.history.store import Manifest
from streams.serde import encode_event
from twin.events import AuditRecorded, FeedbackModerated, ScenarioCancelRequested, ScenarioRequested

SOURCE = "api"
log = logging.getLogger(__name__)
_salt_lock = threading.Lock()


def _salt(data_dir: Path) -> bytes:
    path = data_dir / "audit.salt"
    with _salt_lock:
        if not path.is_file():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        return path.read_bytes()


def client_hash(data_dir: Path, host: str | None) -> str:
    if not host:
        return ""
    return "client-" + hashlib.blake2b(host.encode(), key=_salt(data_dir), digest_size=8).hexdigest()


def region_entity(region: str) -> str:
    return f"{region}:_:region:{region}"


def produce(app: Any, event: AuditRecorded) -> None:
    """Hands the event to Kafka and waits for it (an action whose audit record cannot be written is answered 503)."""
    producer = app.state.producer()
    row = encoded(app.state.read_model.codec, event)
    producer.produce(AUDIT.name, key=row.key, value=row.value)
    if producer.flush(10):
        raise HTTPException(503, "Kafka did not take the audit record within 10 s; is the broker up? Try again.")


def who(request: Request) -> dict[str, str]:
    """The actor fields of an event that is its own audit record (a scenario request or cancellation)."""
    caller = identify(request)
    return {"actor": caller.subject[:200], "actor_role": caller.role,
            "client": client_hash(request.app.state.settings.data_dir, request.client.host if request.client else None)}


def entry(request: Request, action: str, target: str = "", *, outcome: str = "ok", detail: str = "",
          actor: str | None = None, role: str | None = None, entity: str | None = None) -> AuditRecorded:
    """The audit event for what the caller of *request* did; *actor* and *role* for a login (the request has none
    yet, or has one about to end)."""
    who = identify(request)
    pack = request.app.state.pack
    return AuditRecorded(entity_id=entity or region_entity(pack.id), region=pack.id, occurred_at=datetime.now(UTC),  # type: ignore[arg-type]
                         source=SOURCE, action=action, actor=(actor or who.subject)[:200], actor_role=role or who.role,  # type: ignore[arg-type]
                         target=target[:300], outcome=outcome, detail=detail[:500],  # type: ignore[arg-type]
                         client=client_hash(request.app.state.settings.data_dir, request.client.host if request.client else None))


def record(request: Request, action: str, target: str = "", **kw: Any) -> None:
    """Produces the audit event of an action that changes nothing in the API's store (a login, a refused login)."""
    produce(request.app, entry(request, action, target, **kw))


def outgoing(request: Request, action: str, target: str = "", **kw: Any) -> Outgoing:
    """The audit event of an action on the API's store, encoded for its outbox; after the store's transaction,
    ``relay_now(request)`` sends it."""
    return encoded(request.app.state.read_model.codec, entry(request, action, target, **kw))


def encoded(codec: Any, event: AuditRecorded) -> Outgoing:
    """*event* as a row of the store's outbox (keyed by actor, as ``produce`` keys it)."""
    return Outgoing(event.event_id, event.actor.encode(), encode_event(codec, event))


def relay_now(request: Request) -> None:
    """Hands the outbox to Kafka now, so that the entry is on its topic when the response goes out; what Kafka does
    not take within a few seconds stays in the outbox for the relay's next pass (the action itself is done)."""
    request.app.state.audit_relay.send(wait_s=5.0)


class Relay:
    """Sends the store's audit outbox to ``audit.events``: at once after an action (``send``) and every *every_s*
    seconds in a thread (what a broker outage or a crash left behind). A row is deleted once Kafka has acknowledged it,
    and is not produced again while an earlier produce of it is still under way in the producer (a broker outage
    holds it there until it is delivered or times out), so an outage alone sends nothing twice."""

    def __init__(self, store: AuthStore, producer: Callable[[], Any], every_s: float = 5.0) -> None:
        self.store, self.producer, self.every_s = store, producer, every_s
        self._lock = threading.Lock()  # one pass at a time
        self._flight = threading.Lock()  # the set below; never held while calling the producer
        self._inflight: set[str] = set()
        self._passes = Sweeper(self._pass, every_s, name="audit-outbox", what="sending the audit outbox")

    def start(self) -> None:
        self._passes.start()

    def stop(self) -> None:
        self._passes.stop()
        self.send(wait_s=5.0)

    def _delivered(self, err: Any, event_id: str) -> None:
        """Kafka's answer for one row (in whichever thread polls the shared producer)."""
        if err is None:
            self.store.sent([event_id])
        with self._flight:
            self._inflight.discard(event_id)

    def send(self, wait_s: float) -> int:
        """One pass: every waiting event not already under way produced, then Kafka's acknowledgements awaited up to
        *wait_s*; returns how many events are still waiting."""
        with self._lock:
            rows = self.store.outbox()
            with self._flight:
                rows = [r for r in rows if r.event_id not in self._inflight]
                self._inflight.update(r.event_id for r in rows)
            producer = self.producer()
            for row in rows:
                try:
                    producer.produce(AUDIT.name, key=row.key, value=row.value,
                                     on_delivery=lambda err, msg, e=row.event_id: self._delivered(err, e))
                except (BufferError, KafkaException) as exc:  # not taken: it stays in the outbox for the next pass
                    self._delivered(exc, row.event_id)
            producer.flush(wait_s)
            return self.store.outbox_state()[0]

    def _pass(self) -> None:
        """A pass of the thread (at start: what a crash left behind; then every *every_s*)."""
        if self.send(wait_s=10.0):
            n, age = self.store.outbox_state()
            log.warning("%d audit events wait for Kafka (the oldest %.0f s); is the broker up? They are kept in the "
                        "outbox of %s and sent when it is.", n, age or 0, self.store.path)


@dataclass
class Page:
    total: int
    items: list[dict[str, Any]]


def scenario_entry(e: ScenarioRequested | ScenarioCancelRequested) -> AuditRecorded:
    """The audit entry a scenario request or cancellation is (see the module's docstring)."""
    if isinstance(e, ScenarioRequested):
        try:
            body = json.loads(e.request_json)
        except ValueError:
            body = {}
        if not isinstance(body, dict):  # a request the service refused (failed), still an audited launch
            body = {}
        detail = "traffic" if body.get("kind") == "traffic" else f"{scenario_steps(body)} steps"
        action = "scenario.launch"
    else:
        detail, action = e.reason, "scenario.cancel"
    return AuditRecorded(event_id=e.event_id, entity_id=e.entity_id, region=e.region, occurred_at=e.occurred_at,
                         source=e.source, action=action, actor=e.actor or "unknown", actor_role=e.actor_role or "unknown",  # type: ignore[arg-type]
                         target=e.entity_id, detail=detail[:500], client=e.client)


def scenario_steps(body: dict[str, Any]) -> int | str:
    from twin.scenario import ScenarioRequest

    try:
        return ScenarioRequest.model_validate(body).steps
    except ValueError:
        return "?"


def moderation_entry(m: FeedbackModerated) -> AuditRecorded:
    """The audit entry a moderation decision is (see the module's docstring); only operators moderate."""
    from api.feedback import show_code

    return AuditRecorded(event_id=m.event_id, entity_id=m.entity_id, region=m.region, occurred_at=m.occurred_at,
                         source=m.source, action="moderate", actor=m.moderator, actor_role="operator",
                         target=show_code(m.feedback_id), detail=f"{m.decision}: {m.reason}"[:500])


def query(archive: Path, start: datetime, end: datetime, *, action: str | None = None, actor: str | None = None,
          target: str | None = None, limit: int = 100, offset: int = 0) -> Page:
    """Archived audit events between *start* and *end* (newest first), filtered, paged. Reads only the files of those
    days of the audit topic and (for moderation decisions) of the feedback topic; a record archived twice (a
    redelivery) is shown once."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from streams.history.store import to_us

    manifest = Manifest.load(archive)
    lo, hi = to_us(start), to_us(end)
    topics = {AUDIT.name, *([FEEDBACK.name] if action in (None, "moderate") else []),
              *([SCENARIO_REQUESTS.name] if action in (None, "scenario.launch", "scenario.cancel") else [])}
    files = [str(manifest.root / f.path) for f in manifest.files.values()
             if f.topic in topics and f.t_max >= lo and f.t_min <= hi]
    if not files:
        return Page(0, [])
    flt = (pc.field("occurred_at") >= start) & (pc.field("occurred_at") <= end) & pc.field("event_type").isin(
        [AuditRecorded.__name__, FeedbackModerated.__name__, ScenarioRequested.__name__, ScenarioCancelRequested.__name__])
    table = ds.dataset(files, format="parquet").to_table(columns=["seq", "event_id", "datum"], filter=flt)
    codec = SingleObjectCodec()
    seen: set[str] = set()
    rows: list[tuple[datetime, int, dict[str, Any]]] = []
    for seq, eid, datum in zip(*(table.column(c).to_pylist() for c in ("seq", "event_id", "datum")), strict=True):
        if eid in seen:
            continue
        seen.add(eid)
        try:
            name, rec = codec.decode(datum)
            e = (moderation_entry(FeedbackModerated.model_validate(rec)) if name == FeedbackModerated.__name__
                 else scenario_entry(ScenarioRequested.model_validate(rec)) if name == ScenarioRequested.__name__
                 else scenario_entry(ScenarioCancelRequested.model_validate(rec)) if name == ScenarioCancelRequested.__name__
                 else AuditRecorded.model_validate(rec))
        except (CodecError, ValueError):
            continue  # the sink archived only valid events; a record that no longer reads is not an audit entry
        if (action and e.action != action) or (actor and e.actor != actor) or (target and e.target != target):
            continue
        rows.append((e.occurred_at, seq, e.model_dump(mode="json")))
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return Page(len(rows), [r[2] for r in rows[offset:offset + limit]])
