"""The public's feedback (issue 12): submit without an account (kiosk or online), look a receipt up, moderation by
operators, the approved feedback for the public (a GeoJSON layer and counts, counts under 5 as "<5") and for planners
(pins with filters, export as GeoJSON or CSV). Errors a visitor can meet are in German.

Writes are events only: ``FeedbackSubmitted`` and ``FeedbackModerated`` on ``feedback.events`` (a decision is also its own
audit entry: api/audit.py); what the routes read is folded from that topic (api/feedback_store.py)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry import Point, Polygon
from shapely.prepared import prep

from api.auth.access import identify
from api.feedback import DeviceLimit, FeedbackSettings, new_code, normalise_code, scrub, show_code
from api.feedback_store import FeedbackStore, Item
from api.privacy import MIN_PARKING_SPACES, small
from streams.catalogue import FEEDBACK
from streams.serde import encode_event
from twin.events import FEEDBACK_CATEGORIES, FeedbackModerated, FeedbackSubmitted
from twin.ids import EntityId, InvalidEntityId

KINDS = ("idea", "problem", "rating")
LANGUAGES = ("de", "en", "da")
# White space as ECMA regexes (the OpenAPI document's patterns) know it; the route counts words by the same class, so
# the document and the route agree on what "a few words" is.
_WS = "[\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
_NS = "[^" + _WS[1:]
WORDS_PATTERN = f"{_NS}{_WS}*{_NS}{_WS}*{_NS}|{_NS}{_WS}+{_NS}"  # 3 characters or more once white space is collapsed
_WORDS = re.compile(WORDS_PATTERN)
SCENARIO_ID_PATTERN = r"^$|^[a-z0-9][a-z0-9-]{0,62}:(?:[a-z0-9][a-z0-9-]{0,62}|_):scenario:[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = getattr(app.state, "feedback_settings", None) or FeedbackSettings()
    app.state.feedback_settings = settings
    app.state.feedback_limit = DeviceLimit(settings.per_device_hour)
    pack = app.state.pack
    app.state.feedback_hoods = [(n.id.scope, n.name, prep(Polygon(n.polygon))) for n in pack.neighbourhoods.values()]
    store = app.state.feedback = FeedbackStore(app.state.settings.bootstrap_servers, app.state.read_model.codec,
                                               settings.delay_s)
    store.start()
    yield
    store.stop()


router = APIRouter(tags=["feedback"], lifespan=lifespan)


class FeedbackIn(BaseModel):
    """What a visitor sends. Checked by the route, so that every refusal says in German what to change."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description="idea, problem or rating", max_length=20, json_schema_extra={"enum": list(KINDS)})
    category: str = Field(description="one of: " + ", ".join(FEEDBACK_CATEGORIES), max_length=40,
                          json_schema_extra={"enum": list(FEEDBACK_CATEGORIES)})
    text: str = Field(default="", max_length=4000, description="the visitor's words (at most 1000 characters kept)")
    rating: int | None = Field(default=None, description="1 to 5, for a rating")
    lon: float | None = Field(default=None, description="the pin: longitude, WGS84, inside the region")
    lat: float | None = Field(default=None, description="the pin: latitude, WGS84, inside the region")
    scenario_id: str = Field(default="", max_length=200, description="a scenario or planning variant it is about",
                             json_schema_extra={"pattern": SCENARIO_ID_PATTERN})
    channel: Literal["kiosk", "online"] = "online"
    language: Literal["de", "en", "da"] = "de"


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approved", "rejected"]
    reason: str = Field(min_length=1, max_length=500, description="why; a rejected visitor reads it with the receipt")


def _store(request: Request) -> FeedbackStore:
    store: FeedbackStore | None = getattr(request.app.state, "feedback", None)
    if store is None or not store.ready.wait(20):
        why = store.error if store is not None else "not started"
        raise HTTPException(503, f"Rückmeldungen sind gerade nicht verfügbar ({why}). Bitte gleich noch einmal versuchen.")
    return store


def _refuse(message: str, status: int = 422) -> HTTPException:
    return HTTPException(status, message)


def _check(body: FeedbackIn, request: Request) -> tuple[str, str, int]:
    """The checked text (personal data removed), the neighbourhood of the pin, and how much was removed."""
    if body.kind not in KINDS:
        raise _refuse(f"Art {body.kind!r} gibt es nicht: bitte 'idea' (Idee), 'problem' (Problem) oder 'rating' (Bewertung).")
    if body.category not in FEEDBACK_CATEGORIES:
        raise _refuse(f"Thema {body.category!r} gibt es nicht; möglich sind: {', '.join(FEEDBACK_CATEGORIES)}.")
    limit = request.app.state.feedback_settings.max_text
    if len(body.text) > limit:
        raise _refuse(f"Der Text ist {len(body.text)} Zeichen lang; höchstens {limit} sind möglich. Bitte kürzen.")
    text = " ".join(body.text.split())
    if body.kind == "rating":
        if body.rating is None or not 1 <= body.rating <= 5:
            raise _refuse(f"Eine Bewertung braucht 1 bis 5 Sterne (bekommen: {body.rating!r}).")
    elif body.rating is not None:
        raise _refuse("Sterne gibt es nur bei einer Bewertung (Art 'rating').")
    if body.kind != "rating" and not _WORDS.search(body.text):
        raise _refuse("Bitte schreiben Sie ein paar Worte (mindestens 3 Zeichen) zu Ihrer Idee oder Ihrem Problem.")
    hood = ""
    if (body.lon is None) != (body.lat is None):
        raise _refuse("Für einen Ort auf der Karte braucht es Länge (lon) und Breite (lat), nicht nur eines davon.")
    if body.lon is not None and body.lat is not None:
        w, s, e, n = request.app.state.pack.manifest.bbox
        if not (w <= body.lon <= e and s <= body.lat <= n):
            raise _refuse(f"Der Ort {body.lon:.5f}, {body.lat:.5f} liegt außerhalb der Region (Länge {w} bis {e}, "
                          f"Breite {s} bis {n}). Bitte setzen Sie die Nadel in der Region.")
        p = Point(body.lon, body.lat)
        hood = next((slug for slug, _, poly in request.app.state.feedback_hoods if poly.contains(p)), "")
    if body.scenario_id:
        try:
            sid = EntityId.parse(body.scenario_id) if re.fullmatch(SCENARIO_ID_PATTERN, body.scenario_id) else None
        except InvalidEntityId:
            sid = None
        if sid is None:
            raise _refuse(f"{body.scenario_id!r} ist keine Szenario-Kennung (etwa kiel:_:scenario:s-1a2b3c4d5e). Bitte ohne "
                          "Szenario senden oder den Link aus der Planung verwenden.")
        if body.scenario_id not in request.app.state.read_model.scenarios:
            raise _refuse(f"Das Szenario {body.scenario_id!r} ist nicht bekannt. Bitte ohne Szenario senden oder den "
                          "Link aus der Planung verwenden.", 404)
    clean, removed = scrub(text)
    return clean, hood, removed


def _produce(request: Request, event: FeedbackSubmitted | FeedbackModerated) -> None:
    producer = request.app.state.producer()
    producer.produce(FEEDBACK.name, key=event.feedback_id.encode(), value=encode_event(request.app.state.read_model.codec, event))
    if producer.flush(10):
        raise HTTPException(503, "Die Rückmeldung konnte gerade nicht gespeichert werden (Kafka antwortet nicht). "
                                 "Bitte in einer Minute noch einmal senden.")


@router.post("/feedback", operation_id="submit_feedback", status_code=201,
             summary="Leave an idea, a problem or a rating (no account); personal data is removed first",
             responses={404: {"description": "scenario_id names no scenario (German)"},
                        422: {"description": "what to change, in German"}, 429: {"description": "too many from this device"}})
def submit(body: FeedbackIn, request: Request) -> dict[str, Any]:
    store = _store(request)
    text, hood, removed = _check(body, request)
    ua = request.headers.get("user-agent", "")
    limit: DeviceLimit = request.app.state.feedback_limit
    wait = limit.take(limit.device(request.client.host if request.client else "?", ua))
    if wait is not None:
        per = request.app.state.feedback_settings.per_device_hour
        raise HTTPException(429, f"Von diesem Gerät kamen in der letzten Stunde schon {per} Rückmeldungen; mehr sind nicht "
                                 f"möglich. Bitte in {max(1, wait // 60)} Minuten wieder versuchen.",
                            headers={"Retry-After": str(wait)})
    pack = request.app.state.pack
    code = new_code()
    while code in store.items:
        code = new_code()
    event = FeedbackSubmitted(
        entity_id=EntityId.of(pack.id, hood or "_", "report", f"fb-{code}"), region=pack.id, occurred_at=datetime.now(UTC),
        source=f"public:{body.channel}", feedback_id=code, kind=body.kind, category=body.category, text=text,  # type: ignore[arg-type]
        rating=body.rating, lon=body.lon, lat=body.lat, neighbourhood=hood, scenario_id=body.scenario_id,
        channel=body.channel, language=body.language, redactions=removed)
    _produce(request, event)
    store.wait(lambda: code in store.items, 10)
    return {"code": show_code(code), "status": "pending", "text": text, "removed": removed, "neighbourhood": hood,
            "message": "Danke! Ihre Rückmeldung ist angekommen. Mit dem Code sehen Sie, was daraus wird."}


def _item(store: FeedbackStore, raw: str) -> Item:
    code = normalise_code(raw)
    item = store.get(code) if code else None
    if item is None:
        raise HTTPException(404, f"Zum Code {raw!r} gibt es keine Rückmeldung. Bitte den Code prüfen (8 Zeichen, z. B. "
                                 "K7Q3-M9XP).")
    return item


@router.get("/feedback/receipt/{code}", operation_id="feedback_receipt",
            summary="What became of a feedback: pending, approved (to be published), published or rejected",
            responses={404: {"description": "no feedback with this code (German)"}})
def receipt(code: str, request: Request) -> dict[str, Any]:
    store = _store(request)
    item = _item(store, code)
    return {"code": show_code(item.code), **store.receipt(item)}


def _json(item: Item, store: FeedbackStore, now: datetime, *, public: bool) -> dict[str, Any]:
    s = item.sub
    at = item.publish_at(store.delay)
    if public:  # no free text on a public output, moderated or not, and no time that tells a visit apart: the day only
        return {"kind": s.kind, "category": s.category, "rating": s.rating, "neighbourhood": s.neighbourhood,
                "published_on": at.date().isoformat() if at else None}
    out: dict[str, Any] = {"kind": s.kind, "category": s.category, "text": s.text, "rating": s.rating,
                           "neighbourhood": s.neighbourhood, "submitted_at": s.occurred_at.isoformat()}
    out.update(code=show_code(item.code), status=item.status(store.delay, now), scenario_id=s.scenario_id,
               channel=s.channel, language=s.language, removed=s.redactions, lon=s.lon, lat=s.lat)
    if item.decision is not None:
        out.update(decision=item.decision.decision, reason=item.decision.reason, decided_at=item.decision.occurred_at.isoformat(),
                   moderator=item.decision.moderator, publish_at=at.isoformat() if at else None)
    return out


def _geojson(items: list[Item], store: FeedbackStore, *, public: bool) -> dict[str, Any]:
    now = datetime.now(UTC)
    feats = []
    for i in items:
        geom = {"type": "Point", "coordinates": [i.sub.lon, i.sub.lat]} if i.sub.lon is not None else None
        if public and geom is None:
            continue
        feats.append({"type": "Feature", "geometry": geom, "properties": _json(i, store, now, public=public)})
    return {"type": "FeatureCollection", "features": feats}


@router.get("/feedback/queue", operation_id="feedback_queue", summary="Moderation queue (operators): oldest first")
def queue(request: Request, status: Annotated[Literal["pending", "approved", "published", "rejected", "all"],
                                              Query(description="which feedback")] = "pending",
          limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict[str, Any]:
    store = _store(request)
    now = datetime.now(UTC)
    items = sorted(store.snapshot(), key=lambda i: i.sub.occurred_at)
    chosen = [i for i in items if status == "all" or i.status(store.delay, now) == status]
    return {"total": len(chosen), "delay_s": store.delay.total_seconds(),
            "items": [_json(i, store, now, public=False) for i in chosen[:limit]]}


@router.post("/feedback/{code}/moderation", operation_id="moderate_feedback",
             summary="Approve or reject a feedback, with a reason (operators); audited",
             responses={404: {"description": "no such feedback"}, 409: {"description": "already decided"}})
def moderate(code: str, body: Decision, request: Request) -> dict[str, Any]:
    store = _store(request)
    item = _item(store, code)
    if item.decision is not None:
        raise HTTPException(409, f"{show_code(item.code)} was already {item.decision.decision} by {item.decision.moderator} "
                                 f"at {item.decision.occurred_at.isoformat()}")
    who = identify(request)
    event = FeedbackModerated(entity_id=item.sub.entity_id, region=item.sub.region, occurred_at=datetime.now(UTC),
                              source="api", feedback_id=item.code, decision=body.decision, reason=body.reason.strip() or "-",
                              moderator=who.subject[:200])
    _produce(request, event)  # the decision and its audit entry in one record (api/audit.py)
    store.wait(lambda: item.decision is not None, 10)
    if item.decision is not None and item.decision.event_id != event.event_id:
        raise HTTPException(409, f"{show_code(item.code)} was decided at the same moment by {item.decision.moderator} "
                                 f"({item.decision.decision}); that decision counts")
    return _json(item, store, datetime.now(UTC), public=False)


@router.get("/public/feedback", operation_id="public_feedback",
            summary="Published feedback on the map (approved, after the delay): GeoJSON points")
def public_layer(request: Request) -> dict[str, Any]:
    store = _store(request)
    return _geojson(store.published(), store, public=True)


@router.get("/public/feedback/counts", operation_id="public_feedback_counts",
            summary='Published feedback counted per category and neighbourhood; counts under 5 as "<5"')
def public_counts(request: Request) -> dict[str, Any]:
    store = _store(request)
    pub = store.published()
    names = {slug: name for slug, name, _ in request.app.state.feedback_hoods}
    cats: dict[str, int] = dict.fromkeys(FEEDBACK_CATEGORIES, 0)
    hoods: dict[str, dict[str, int]] = {}
    for i in pub:
        cats[i.sub.category] += 1
        h = hoods.setdefault(i.sub.neighbourhood, {})
        h[i.sub.category] = h.get(i.sub.category, 0) + 1
    return {"total": small(len(pub)), "categories": {c: small(n) for c, n in cats.items()},
            "neighbourhoods": [{"id": slug, "name": names.get(slug, "ohne Ort") if slug else "ohne Ort",
                                "total": small(sum(h.values())), "categories": {c: small(n) for c, n in sorted(h.items())}}
                               for slug, h in sorted(hoods.items())]}


@router.get("/feedback", operation_id="list_feedback",
            summary="Approved feedback for planners, with filters; as GeoJSON (pins) or CSV (export)",
            responses={200: {"content": {"application/geo+json": {}, "text/csv": {}}}})
def planner_feedback(
    request: Request,
    kind: Annotated[Literal["idea", "problem", "rating"] | None, Query()] = None,
    category: Annotated[str | None, Query(description="one of: " + ", ".join(FEEDBACK_CATEGORIES),
                                          json_schema_extra={"enum": list(FEEDBACK_CATEGORIES)})] = None,
    neighbourhood: Annotated[str | None, Query(description="neighbourhood slug")] = None,
    scenario_id: Annotated[str | None, Query(description="feedback on this scenario only")] = None,
    format: Annotated[Literal["geojson", "csv"], Query(description="geojson (default) or csv")] = "geojson",
) -> Response:
    store = _store(request)
    if category is not None and category not in FEEDBACK_CATEGORIES:
        raise HTTPException(422, f"unknown category {category!r}; known: {', '.join(FEEDBACK_CATEGORIES)}")
    now = datetime.now(UTC)
    items = [i for i in sorted(store.snapshot(), key=lambda i: i.sub.occurred_at)
             if i.status(store.delay, now) in ("approved", "published")
             and (kind is None or i.sub.kind == kind) and (category is None or i.sub.category == category)
             and (neighbourhood is None or i.sub.neighbourhood == neighbourhood)
             and (scenario_id is None or i.sub.scenario_id == scenario_id)]
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    if format == "geojson":
        return Response(json.dumps(_geojson(items, store, public=False)), media_type="application/geo+json",
                        headers={"Content-Disposition": f'inline; filename="feedback-{stamp}.geojson"'})
    cols = ["code", "status", "kind", "category", "rating", "text", "lon", "lat", "neighbourhood", "scenario_id",
            "channel", "language", "submitted_at", "decided_at", "publish_at", "reason"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for i in items:
        row = _json(i, store, now, public=False)
        # a cell that starts with =, +, - or @ would be a formula in a spreadsheet: it is quoted as text
        w.writerow({k: ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v) for k, v in row.items()})
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="feedback-{stamp}.csv"'})


@router.get("/public/qr.svg", operation_id="public_qr", summary="QR code of the phone form (the kiosk shows it)",
            response_class=Response, responses={200: {"content": {"image/svg+xml": {}}}})
def qr(request: Request, lang: Annotated[Literal["de", "en", "da"], Query()] = "de") -> Response:
    import qrcode
    import qrcode.image.svg

    base = request.app.state.feedback_settings.public_url or str(request.base_url)
    url = base.rstrip("/") + f"/kiosk?phone=1&lang={lang}"
    img = qrcode.make(url, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    return Response(img.to_string(encoding="unicode"), media_type="image/svg+xml",
                    headers={"Cache-Control": "max-age=300", "X-QR-Target": url})


@router.get("/public/kiosk", operation_id="public_kiosk",
            summary="The Info-Cube's map and the day's curves: outlines, surge classes, hourly figures per neighbourhood")
def kiosk_data(request: Request) -> dict[str, Any]:
    """Public only (api/privacy.py): outlines of neighbourhoods, roads and the coast (geometry, no readings), the storm
    surge classes, and per neighbourhood the day's curves of aggregates: vehicles per 15 min (summed over its roads,
    under 5 as "<5"), hourly NO2 means and hourly parking occupancy in % (occupied over offered spaces, summed over the
    hour's readings; only where the neighbourhood has the spaces the public rule asks for), for the 24 h up to the
    newest window."""
    from twin.coast import SURGE_CLASSES

    pack = request.app.state.pack
    rm = request.app.state.read_model
    road_hood = {r.id: r.neighbourhood.scope for r in pack.roads.values() if r.neighbourhood is not None}
    hoods = {n.id.scope: n.id for n in pack.neighbourhoods.values()}
    traffic: dict[str, dict[str, float]] = {}
    no2: dict[str, dict[str, tuple[float, int]]] = {}
    newest = ""
    for a in rm.aggregates("traffic_vehicles"):
        hood = road_hood.get(a["group"])
        if hood and a.get("window"):
            traffic.setdefault(hood, {})[a["window"]] = traffic.get(hood, {}).get(a["window"], 0.0) + float(a["sum"])
            newest = max(newest, a["window"])
    def slug_of(group: Any) -> str:
        return str(group).split(":")[1] if str(group).count(":") == 3 else str(group)

    for a in rm.aggregates("air_no2_ugm3"):
        slug = slug_of(a["group"])
        if slug in hoods and a.get("window") and a["mean"] is not None:
            s, n = no2.setdefault(slug, {}).get(a["window"], (0.0, 0))
            no2[slug][a["window"]] = (s + float(a["sum"]), n + int(a["count"]))
            newest = max(newest, a["window"])
    parking: dict[str, dict[str, list[float]]] = {}  # slug -> window -> [occupied, offered], summed over readings
    for i, metric in enumerate(("parking_occupied_spaces", "parking_capacity_spaces")):
        for a in rm.aggregates(metric):
            slug = slug_of(a["group"])
            if slug in hoods and a.get("window"):
                parking.setdefault(slug, {}).setdefault(a["window"], [0.0, 0.0])[i] += float(a["sum"])
                newest = max(newest, a["window"])
    # the public rule for parking (api/privacy.py): the neighbourhood's car parks offer enough spaces today
    enough = {slug_of(a["group"]) for a in rm.aggregates("parking_occupancy")
              if (a.get("capacity") or 0) >= MIN_PARKING_SPACES}
    since = (datetime.fromisoformat(newest) - timedelta(hours=24)).isoformat() if newest else ""

    def line(points: list[tuple[float, float]]) -> list[list[float]]:
        return [[round(x, 5), round(y, 5)] for x, y in points]

    curves = {slug: {"traffic_vehicles_15min": [[w, small(v)] for w, v in sorted(traffic.get(slug, {}).items()) if w > since],
                     "air_no2_ugm3_hourly": [[w, round(s / n, 1)] for w, (s, n) in sorted(no2.get(slug, {}).items())
                                             if w > since and n],
                     "parking_occupancy_pct_hourly": [[w, round(100 * o / c)] for w, (o, c) in
                                                      sorted(parking.get(slug, {}).items())
                                                      if w > since and c > 0 and slug in enough]}
              for slug in hoods}
    from shapely.geometry import MultiLineString

    shapes = [Polygon(n.polygon) for n in pack.neighbourhoods.values()]
    shapes.append(MultiLineString([r.line for r in pack.roads.values()] + [c.line for c in pack.coast.values()]))
    w, s, e, n = pack.manifest.bbox
    bounds = [sh.bounds for sh in shapes if not sh.is_empty]
    view = [w, s, e, n]
    if bounds:  # what there is to see, with a margin, inside the region (a pin must lie in the region)
        x0, y0 = min(b[0] for b in bounds), min(b[1] for b in bounds)
        x1, y1 = max(b[2] for b in bounds), max(b[3] for b in bounds)
        mx, my = max(0.15 * (x1 - x0), 0.005), max(0.15 * (y1 - y0), 0.003)
        view = [max(w, x0 - mx), max(s, y0 - my), min(e, x1 + mx), min(n, y1 + my)]
    return {"region": pack.manifest.name, "bbox": pack.manifest.bbox, "view": view,
            "neighbourhoods": [{"id": n.id, "slug": n.id.scope, "name": n.name, "polygon": line(n.polygon)}
                               for n in pack.neighbourhoods.values()],
            "roads": [line(r.line) for r in pack.roads.values()],
            "coast": [line(c.line) for c in pack.coast.values()],
            "surge_classes": [{"from_m": b, "class": name} for b, name in SURGE_CLASSES],
            "curves": curves, "synthetic_layers": pack.synthetic_layers()}
