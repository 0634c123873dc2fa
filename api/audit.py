"""Audit (issue 11 item 6): every launch, cancel, share and deletion of a scenario, every user and key created or
deleted, every login, failed login and logout becomes an ``AuditRecorded`` event on ``audit.events``. The archive sink
keeps them with the input events (``streams.archive.ARCHIVED_TOPICS``); ``GET /audit`` reads them back from the archive,
for operators only.

A moderation decision (issue 12) is its own audit record: the ``FeedbackModerated`` event on ``feedback.events`` names
the operator, the decision and the reason, and ``GET /audit`` reads it from the archive as a ``moderate`` entry. So the
decision and its audit entry are one record, written or not written together, on any broker (Tansu shows an aborted
transaction's records, so a transaction over two topics would not give that).

The actor is the caller's subject (user name, ``key:<id>``, the token's subject), never a password, token or key secret;
the client address is kept only as a keyed hash (the key, ``<data_dir>/audit.salt``, stays on this machine), so the same
client is recognisable across the log while the address cannot be recovered by trying all addresses."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from api.auth.access import identify
from schemas.codec import CodecError, SingleObjectCodec
from streams.catalogue import AUDIT, FEEDBACK
from streams.history.store import Manifest
from streams.serde import encode_event
from twin.events import AuditRecorded, FeedbackModerated

SOURCE = "api"
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
    producer.produce(AUDIT.name, key=event.actor.encode(), value=encode_event(app.state.read_model.codec, event))
    if producer.flush(10):
        raise HTTPException(503, "Kafka did not take the audit record within 10 s; is the broker up? Try again.")


def record(request: Request, action: str, target: str = "", *, outcome: str = "ok", detail: str = "",
           actor: str | None = None, role: str | None = None, entity: str | None = None) -> None:
    """One audit event for what the caller of *request* did; *actor* and *role* for a login (the request has none
    yet, or has one about to end)."""
    who = identify(request)
    pack = request.app.state.pack
    event = AuditRecorded(entity_id=entity or region_entity(pack.id), region=pack.id, occurred_at=datetime.now(UTC),  # type: ignore[arg-type]
                          source=SOURCE, action=action, actor=(actor or who.subject)[:200], actor_role=role or who.role,  # type: ignore[arg-type]
                          target=target[:300], outcome=outcome, detail=detail[:500],  # type: ignore[arg-type]
                          client=client_hash(request.app.state.settings.data_dir, request.client.host if request.client else None))
    produce(request.app, event)


@dataclass
class Page:
    total: int
    items: list[dict[str, Any]]


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
    topics = {AUDIT.name} if action not in (None, "moderate") else {AUDIT.name, FEEDBACK.name}
    files = [str(manifest.root / f.path) for f in manifest.files.values()
             if f.topic in topics and f.t_max >= lo and f.t_min <= hi]
    if not files:
        return Page(0, [])
    flt = (pc.field("occurred_at") >= start) & (pc.field("occurred_at") <= end) & pc.field("event_type").isin(
        [AuditRecorded.__name__, FeedbackModerated.__name__])
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
            e = moderation_entry(FeedbackModerated.model_validate(rec)) if name == FeedbackModerated.__name__ \
                else AuditRecorded.model_validate(rec)
        except (CodecError, ValueError):
            continue  # the sink archived only valid events; a record that no longer reads is not an audit entry
        if (action and e.action != action) or (actor and e.actor != actor) or (target and e.target != target):
            continue
        rows.append((e.occurred_at, seq, e.model_dump(mode="json")))
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return Page(len(rows), [r[2] for r in rows[offset:offset + limit]])
