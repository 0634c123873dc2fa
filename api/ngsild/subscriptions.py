"""NGSI-LD subscriptions (ETSI GS CIM 009, 5.8 and 5.11): ``POST/GET/DELETE /ngsi-ld/v1/subscriptions`` and HTTP
notifications delivered from the read model's live deltas.

A subscription names entities (type, and optionally id or idPattern), watched attributes (a change of one of them
notifies; none named: any change), a ``q`` (the query language of ``api.ngsild.query``), the notification's
attributes, format (normalized or keyValues) and endpoint (``uri``, ``accept``), and a ``throttling`` in seconds (at
most one notification per period; changes in between are coalesced per entity, the newest kept, never dropped).

Delivery is at-least-once: each notification has an id (``urn:ngsi-ld:Notification:<uuid>``) that stays the same
while it is retried (backoff from 0.5 s, doubling, at most 30 s, as long as the subscription exists); the receiver
deduplicates by it. Subscriptions live in ``<data_dir>/ngsild/subscriptions.json`` (written atomically) with, per
subscription, the revision of each entity last acknowledged by the receiver: after an API restart the notifier, once
the read model has caught up, sends every matching entity whose revision is newer than the acknowledged one, then
follows the live deltas."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from api.ngsild import context as ctx
from api.ngsild.entities import SENSOR_TYPES, coast_entity, key_values, select_attrs, sensor_entity
from api.ngsild.problems import PROBLEM_SCHEMA, NgsiError
from api.ngsild.query import NAME, Q_PATTERN, parse_q
from api.ngsild.web import ERRORS, ID_REGEX_PATTERN, URI_PATTERN
from api.readmodel import Subscriber
from streams.files import atomic_write

log = logging.getLogger("plietsch.api.ngsild")
router = APIRouter(tags=["ngsi-ld"])
BASE = "/ngsi-ld/v1/subscriptions"
MAX_SUBSCRIPTIONS = 1000
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0
HTTP_URL = r"^https?://[A-Za-z0-9.-]+(?::\d{1,5})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$"
Name = Annotated[str, Field(pattern=rf"^{NAME}$")]


class EntitySelector(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Name
    id: Annotated[str | None, Field(pattern=URI_PATTERN)] = None
    idPattern: Annotated[str | None, Field(pattern=ID_REGEX_PATTERN)] = None


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    uri: Annotated[str, Field(pattern=HTTP_URL, max_length=2000)]
    accept: Literal["application/json", "application/ld+json"] = "application/json"


class NotificationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    attributes: Annotated[list[Name] | None, Field(max_length=50)] = None
    format: Literal["normalized", "keyValues"] = "normalized"
    endpoint: Endpoint


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)
    id: Annotated[str | None, Field(pattern=URI_PATTERN, max_length=300)] = None
    type: Literal["Subscription"]
    description: Annotated[str | None, Field(max_length=500)] = None
    entities: Annotated[list[EntitySelector], Field(min_length=1, max_length=20)]
    watchedAttributes: Annotated[list[Name] | None, Field(min_length=1, max_length=50)] = None
    q: Annotated[str | None, Field(pattern=Q_PATTERN, max_length=2000)] = None
    notification: NotificationParams
    throttling: Annotated[float, Field(ge=0, le=86_400, description="seconds between notifications, at least")] = 0
    isActive: bool = True
    context: Annotated[Any, Field(alias="@context")] = None


class Store:
    """The subscriptions and what each receiver acknowledged, in one JSON file (atomic replace on every change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.subs: dict[str, dict[str, Any]] = {}
        if path.is_file():
            try:
                self.subs = json.loads(path.read_text())["subscriptions"]
            except (ValueError, KeyError, TypeError) as exc:
                raise RuntimeError(f"{path} is not a subscriptions file ({exc}); move it away to start with none") from None

    def save(self) -> None:
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps({"subscriptions": self.subs}).encode())


def store(app: FastAPI) -> Store:
    s: Store = app.state.ngsild_subscriptions
    return s


def _public(sid: str, rec: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in rec["subscription"].items() if v is not None and k != "@context"}
    st = rec["status"]
    body["id"] = sid
    body["status"] = "active" if body.get("isActive", True) else "paused"
    body["notification"] = {**body["notification"], **{k: v for k, v in st.items() if v is not None},
                            "status": "failed" if st.get("lastFailure") and (st.get("lastSuccess") or "") < st["lastFailure"]
                            else "ok"}
    return body


SUB_SCHEMA = {"type": "object", "required": ["id", "type", "entities", "notification"],
              "properties": {"id": {"type": "string"}, "type": {"const": "Subscription"}}}


@router.post(BASE, operation_id="ngsild_create_subscription", summary="NGSI-LD: subscribe to changes",
             status_code=201, response_class=Response,
             responses={201: {"description": "created; Location names it", "content": None,
                              "headers": {"Location": {"schema": {"type": "string"}, "required": True}}},
                        409: {"description": "AlreadyExists: a subscription with that id exists, or there are "
                                             f"{MAX_SUBSCRIPTIONS} already",
                              "content": {"application/json": {"schema": PROBLEM_SCHEMA}}}, **ERRORS})
def create_subscription(request: Request, body: SubscriptionIn) -> Response:
    s = store(request.app)
    sid = body.id or f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"
    with s.lock:
        if sid in s.subs:
            raise NgsiError(409, "AlreadyExists", f"a subscription {sid!r} exists; delete it first or leave out the id")
        if len(s.subs) >= MAX_SUBSCRIPTIONS:
            raise NgsiError(409, "AlreadyExists", f"there are {MAX_SUBSCRIPTIONS} subscriptions already (the limit); "
                                                  "delete some first")
        s.subs[sid] = {"subscription": body.model_dump(mode="json", by_alias=True, exclude={"id"}),
                       "status": {"timesSent": 0, "lastNotification": None, "lastSuccess": None, "lastFailure": None},
                       "acked": {}, "created": time.time(),
                       "context": ctx.context_url(str(request.base_url))}
    s.save()
    notifier = getattr(request.app.state, "ngsild_notifier", None)
    if notifier is not None:
        notifier.added(sid)
    return Response(status_code=201, headers={"Location": f"{BASE}/{sid}"})


@router.get(BASE, operation_id="ngsild_list_subscriptions", summary="NGSI-LD: the subscriptions",
            responses={200: {"content": {"application/json": {"schema": {"type": "array", "items": SUB_SCHEMA}}}},
                       **ERRORS})
def list_subscriptions(request: Request) -> JSONResponse:
    s = store(request.app)
    with s.lock:
        return JSONResponse([_public(sid, rec) for sid, rec in sorted(s.subs.items())])


@router.get(f"{BASE}/{{subscriptionId}}", operation_id="ngsild_retrieve_subscription", summary="NGSI-LD: one subscription",
            responses={200: {"content": {"application/json": {"schema": SUB_SCHEMA}}}, **ERRORS,
                       404: {"description": "ResourceNotFound", "content": {"application/json": {"schema": PROBLEM_SCHEMA}}}})
def retrieve_subscription(request: Request, subscriptionId: Annotated[str, PathParam(
        json_schema_extra={"pattern": URI_PATTERN})]) -> JSONResponse:
    s = store(request.app)
    with s.lock:
        rec = s.subs.get(subscriptionId)
        if rec is None:
            raise NgsiError(404, "ResourceNotFound", f"no subscription {subscriptionId!r}; list them with GET {BASE}")
        return JSONResponse(_public(subscriptionId, rec))


@router.delete(f"{BASE}/{{subscriptionId}}", operation_id="ngsild_delete_subscription", status_code=204,
               summary="NGSI-LD: end a subscription", response_class=Response,
               responses={204: {"description": "deleted"}, **ERRORS,
                          404: {"description": "ResourceNotFound", "content": {"application/json": {"schema": PROBLEM_SCHEMA}}}})
def delete_subscription(request: Request, subscriptionId: Annotated[str, PathParam(
        json_schema_extra={"pattern": URI_PATTERN})]) -> Response:
    s = store(request.app)
    with s.lock:
        if s.subs.pop(subscriptionId, None) is None:
            raise NgsiError(404, "ResourceNotFound", f"no subscription {subscriptionId!r}; list them with GET {BASE}")
    s.save()
    return Response(status_code=204)


# -- delivery -------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _query(q: str) -> Any:
    return parse_q(q)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Notifier:
    """Follows the read model's entity deltas and delivers notifications (one asyncio task in the API's loop)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.store = store(app)
        self.rm = app.state.read_model
        self.pack = app.state.pack
        self.last: dict[str, dict[str, Any]] = {}  # entity id -> its NGSI-LD entity as last seen
        self.pending: dict[str, dict[str, tuple[dict[str, Any], int]]] = {}  # sub -> entity id -> (entity, revision)
        self.busy: set[str] = set()
        self.next_at: dict[str, float] = {}
        self.fresh: set[str] = set()  # subscriptions created since the last pass: sent the current state
        self.fresh_lock = threading.Lock()
        self.stopping = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.client = httpx.AsyncClient(timeout=10.0)

    def added(self, sid: str) -> None:
        """Called from a request's thread: the loop sends the new subscription the current state."""
        with self.fresh_lock:
            self.fresh.add(sid)

    def render(self, eid: str, rec: dict[str, Any]) -> dict[str, Any] | None:
        if rec.get("entity_type") == "coast":
            c = self.pack.coast.get(eid)
            return None if c is None else coast_entity(c, rec)
        s = self.pack.sensors.get(eid)
        if rec.get("entity_type") != "sensor" or s is None or s.sensor_kind not in SENSOR_TYPES:
            return None
        return sensor_entity(s, rec)

    @staticmethod
    def matches(sub: dict[str, Any], e: dict[str, Any], before: dict[str, Any] | None) -> bool:
        if not sub.get("isActive", True):
            return False
        if not any(sel["type"] == e["type"] and (sel.get("id") is None or sel["id"] == e["id"])
                   and (sel.get("idPattern") is None or re.search(sel["idPattern"], e["id"]))
                   for sel in sub["entities"]):
            return False
        watched = sub.get("watchedAttributes")
        if watched and before is not None and all(before.get(a) == e.get(a) for a in watched):
            return False
        return sub.get("q") is None or _query(sub["q"])(e)

    def offer(self, eid: str, rec: dict[str, Any], only: set[str] | None = None, acked_check: bool = False) -> None:
        e = self.render(eid, rec)
        if e is None:
            return
        before = None if only is not None else self.last.get(eid)
        self.last[eid] = e
        with self.store.lock:
            subs = list(self.store.subs.items())
        for sid, srec in subs:
            if only is not None and sid not in only:
                continue
            if acked_check and srec["acked"].get(eid, -1) >= rec["revision"]:
                continue
            if self.matches(srec["subscription"], e, before):
                self.pending.setdefault(sid, {})[eid] = (e, rec["revision"])

    def catch_up(self, sids: set[str] | None, acked_check: bool) -> None:
        """Every entity of the read model to the given subscriptions (all: None), skipping what they acknowledged."""
        state = self.rm.state.copy()  # one C-level copy: atomic against the read model's thread
        for eid, rec in state.items():
            self.offer(eid, rec, only=sids if sids is not None else set(self.store.subs), acked_check=acked_check)

    async def run(self) -> None:
        """Follows the read model only while there are subscriptions (a follower counts as a live subscriber on
        /health and /metrics); when it starts following, every subscription gets what it has not acknowledged."""
        while not self.rm.ready.is_set() and not self.stopping:
            await asyncio.sleep(0.2)
        sub: Subscriber | None = None
        try:
            while not self.stopping:
                with self.store.lock:
                    wanted = bool(self.store.subs)
                if wanted and sub is None:
                    sub = Subscriber(asyncio.get_running_loop(), lambda d: d.kind == "entity", maxsize=100_000)
                    self.rm.subscribe(sub, None)
                    with self.fresh_lock:
                        self.fresh.clear()  # covered by the catch-up below
                    self.catch_up(None, acked_check=True)  # e.g. after a restart: what was not acknowledged
                elif not wanted and sub is not None and not self.busy:
                    self.rm.unsubscribe(sub)
                    sub, self.last = None, {}
                if sub is None:
                    await asyncio.sleep(0.2)
                    continue
                if sub.overflowed:  # too far behind: take the state again (what was acknowledged is skipped)
                    sub.reset()
                    self.catch_up(None, acked_check=True)
                with self.fresh_lock:
                    new, self.fresh = self.fresh, set()
                if new:
                    self.catch_up(new, acked_check=False)
                if await sub.wait(0.1):
                    for d in sub.take():
                        self.offer(d.entity_id, d.data)
                self.dispatch()
        finally:
            if sub is not None:
                self.rm.unsubscribe(sub)
            for t in list(self.tasks):  # a delivery waiting out its backoff: the next start sends it again
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.client.aclose()

    def dispatch(self) -> None:
        now = time.monotonic()
        for sid in [s for s, items in self.pending.items() if items]:
            if sid in self.busy or now < self.next_at.get(sid, 0.0):
                continue
            with self.store.lock:
                srec = self.store.subs.get(sid)
            if srec is None:
                self.pending.pop(sid, None)
                continue
            batch, self.pending[sid] = self.pending[sid], {}
            self.busy.add(sid)
            task = asyncio.get_running_loop().create_task(self.deliver(sid, srec, batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def deliver(self, sid: str, srec: dict[str, Any], batch: dict[str, tuple[dict[str, Any], int]]) -> None:
        sub = srec["subscription"]
        params = sub["notification"]
        media = params["endpoint"]["accept"]
        data = []
        for e, _ in batch.values():
            e = select_attrs(e, params.get("attributes"))
            e = key_values(e) if params.get("format") == "keyValues" else e
            data.append({**e, "@context": srec["context"]} if media == "application/ld+json" else e)
        note = {"id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}", "type": "Notification", "subscriptionId": sid,
                "notifiedAt": _now(), "data": data}
        headers = {"Content-Type": media}
        if media == "application/json":
            headers["Link"] = f'<{srec["context"]}>; rel="{ctx.LINK_REL}"; type="application/ld+json"'
        wait, failures = BACKOFF_START_S, 0
        try:
            while not self.stopping:
                with self.store.lock:
                    if sid not in self.store.subs:
                        return  # deleted meanwhile: nothing to deliver to
                try:
                    r = await self.client.post(params["endpoint"]["uri"], json=note, headers=headers)
                    ok, why = 200 <= r.status_code < 300, f"HTTP {r.status_code}: {r.text[:200]!r}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                with self.store.lock:
                    live = self.store.subs.get(sid)
                    if live is not None:
                        st = live["status"]
                        st["lastNotification"] = note["notifiedAt"]
                        if ok:
                            st["timesSent"] = st.get("timesSent", 0) + 1
                            st["lastSuccess"] = _now()
                            for eid, (_, rev) in batch.items():
                                live["acked"][eid] = max(rev, live["acked"].get(eid, -1))
                        else:
                            st["lastFailure"] = _now()
                            st["lastFailureReason"] = why
                if ok:
                    if failures:
                        log.info("ngsi-ld notification %s to %s delivered after %d failed attempts", note["id"],
                                 params["endpoint"]["uri"], failures)
                    await asyncio.to_thread(self.store.save)
                    return
                failures += 1
                if failures == 1:
                    log.warning("ngsi-ld notification %s of subscription %s to %s failed (%s); retrying with backoff "
                                "(at most %.0f s) until it is delivered or the subscription is deleted", note["id"], sid,
                                params["endpoint"]["uri"], why, BACKOFF_MAX_S)
                await asyncio.sleep(wait)
                wait = min(wait * 2, BACKOFF_MAX_S)
        finally:
            self.busy.discard(sid)
            self.next_at[sid] = time.monotonic() + float(sub.get("throttling") or 0)


def attach(app: FastAPI) -> None:
    """The store (read now, so a broken file stops the API with a clear message) and the notifier, started and stopped
    with the app's lifespan."""
    app.state.ngsild_subscriptions = Store(app.state.settings.data_dir / "ngsild" / "subscriptions.json")
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state:
            notifier = app.state.ngsild_notifier = Notifier(app)
            task = asyncio.get_running_loop().create_task(notifier.run())
            try:
                yield state
            finally:
                notifier.stopping = True
                try:
                    await asyncio.wait_for(task, 5)
                except (TimeoutError, asyncio.CancelledError):
                    task.cancel()

    app.router.lifespan_context = lifespan
