"""FastAPI app factory: ``uvicorn api.main:create_app --factory``."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from api.audit import Relay as AuditRelay
from api.audit import encoded as audit_row
from api.auth.access import allowed, check_coverage, enforce, identify
from api.auth.oidc import OidcVerifier
from api.auth.store import AuthStore
from api.limits import BodyLimit, RateLimit, StreamSlots
from api.metrics import RequestMetrics, metrics_registry, render
from api.openapi import allow_all_methods, document_contract, document_errors
from api.pipeline import Group, PipelineWatch
from api.places import places
from api.readmodel import ReadModel
from api.retention import Retention, Sweeper
from api.routes import (
    audit,
    auth,
    coast,
    entities,
    feedback,
    history,
    live,
    ngsild,
    opendata,
    scenarios,
    sensorthings,
    transit,
)
from api.routes.history import engine_of
from api.security import CESIUM_CSP, SecurityHeaders, hide_client_addresses
from api.settings import ApiSettings
from infra.kafka_security import secured
from streams.catalogue import AUDIT, FEEDBACK, MUNICIPAL_TOPICS, SENSOR_TOPICS
from streams.serde import make_codec
from twin.events import AuditRecorded
from twin.region import load_pack

log = logging.getLogger("plietsch.api")
ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "viewer" / "static"


def cesium_dir() -> Path:
    return Path(os.environ.get("PLIETSCH_CESIUM_DIR", ROOT / "node_modules" / "cesium" / "Build" / "Cesium"))


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    if not settings.bootstrap_servers:
        raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set; the API reads the twin from Kafka. Use 'make run'.")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.read_model.start()
        app.state.audit_relay.start()
        app.state.sweeper.start()
        app.state.pipeline.start()
        yield
        app.state.pipeline.stop()
        app.state.sweeper.stop()
        app.state.audit_relay.stop()
        app.state.read_model.stop()

    app = FastAPI(title="Plietsch Twin API", version="0.1.0", lifespan=lifespan, dependencies=[Depends(enforce)],
                  description="The live digital twin of the KielRegion. Layers marked synthetic are made up. "
                              "Roles: public (no login), planner, operator; see api/auth/access.py.")
    app.state.settings = settings
    hide_client_addresses()
    live.quiet_cut_offs()
    store = app.state.auth_store = AuthStore(settings.auth_db)
    if settings.operator_api_key:
        store.ensure_key("env", settings.operator_api_key, "operator")
    first = store.ensure_first_operator(settings.first_operator)
    if first is not None:
        log.warning("first start: created the operator %r with the one-time password %s; log in at / and create your "
                    "own users (POST /auth/users) - this password is not shown again", *first)
    if settings.oidc_issuer and not settings.oidc_audience:
        raise RuntimeError("PLIETSCH_OIDC_ISSUER is set but PLIETSCH_OIDC_AUDIENCE is not: tokens must name this API's audience")
    app.state.oidc = OidcVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_roles_claim,
                                  settings.oidc_jwks_url or None) if settings.oidc_issuer else None
    app.state.pack = pack = load_pack(settings.region_pack)
    app.state.places = places(pack)
    app.state.entity_index = entities.EntityIndex(pack.entities())
    producer: list[Any] = []

    def get_producer() -> Any:
        """The API writes only by producing events (scenario requests and cancellations)."""
        if not producer:
            from confluent_kafka import Producer

            producer.append(Producer(secured({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 0})))
        return producer[0]

    cells: list[int] = []

    def terrain_cells() -> int:
        """Cells of the pack's terrain, read once (the pack does not change while the API runs)."""
        if not cells:
            from twin.importers import read_geotiff

            has = pack.terrain_path is not None and pack.terrain_path.is_file()
            cells.append(int(read_geotiff(pack.terrain_path).heights.size) if has else 0)  # type: ignore[arg-type]
        return cells[0]

    app.state.producer = get_producer
    app.state.audit_relay = AuditRelay(store, get_producer)
    app.state.terrain_cells = terrain_cells
    rm = app.state.read_model = ReadModel(settings.bootstrap_servers, make_codec(settings.schema_registry_url),
                                          history=settings.delta_buffer,
                                          aggregate_horizon=timedelta(hours=settings.aggregate_horizon_h),
                                          subscriber_queue=settings.subscriber_queue,
                                          scenario_keep=2 * timedelta(hours=settings.scenario_result_ttl_h))
    retention = app.state.retention = Retention(settings.data_dir, settings.scenario_result_ttl_h, settings.scenario_disk_mb)

    def sweep() -> None:
        """Expired and over-the-cap results go (files, summaries in memory), long-expired runs are forgotten."""
        if not rm.ready.is_set():
            return  # the records say which runs have ended: wait until the read model has caught up
        done = retention.sweep(dict(rm.scenarios))
        names = {n for n, _ in done.expired}
        rm.drop_summaries([sid for sid in list(rm.scenarios) if retention.folder(sid).name in names])
        if done.forgotten:
            rm.forget_scenarios(done.forgotten)
            store.forget_scenarios(done.forgotten)
        store.forget_scenarios_before(time.time() - 2 * 3600 * settings.scenario_result_ttl_h, set(rm.scenarios))
        sids = {retention.folder(sid).name: sid for sid in rm.scenarios}
        for name, why in done.expired:
            gone = AuditRecorded(
                entity_id=sids.get(name, f"{pack.id}:_:scenario:{name}"), region=pack.id, occurred_at=datetime.now(UTC),  # type: ignore[arg-type]
                source="api", action="scenario.delete", actor="system:retention", actor_role="system", target=sids.get(name, name),
                detail="older than PLIETSCH_SCENARIO_RESULT_TTL_H" if why == "ttl" else "PLIETSCH_SCENARIO_DISK_MB full")
            store.enqueue(audit_row(rm.codec, gone))
            log.info("scenario results %s deleted (%s); results now take %.1f MB",
                     name, "older than PLIETSCH_SCENARIO_RESULT_TTL_H" if why == "ttl" else "PLIETSCH_SCENARIO_DISK_MB full",
                     done.bytes_after / 2**20)
        if done.expired:
            app.state.audit_relay.send(wait_s=5.0)

    app.state.sweeper = Sweeper(sweep, settings.scenario_sweep_s)
    inputs = [t.name for t in (*SENSOR_TOPICS.values(), *MUNICIPAL_TOPICS.values())]
    watched = [g for g in (Group("the worker", settings.app_id, inputs),
                           Group("the archive sink", settings.archive_group, [*inputs, AUDIT.name, FEEDBACK.name]))
               if g.group_id and settings.health_lag_limit]
    watch = app.state.pipeline = PipelineWatch(settings.bootstrap_servers, watched, settings.health_lag_limit,
                                               settings.health_lag_grace_s, settings.health_every_s)
    registry = app.state.metrics_registry = metrics_registry(rm, store.outbox_state,
                                                             archive=lambda: engine_of(app.state).manifest())
    app.add_middleware(RequestMetrics, registry=registry)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders, hsts=settings.cookie_secure)
    app.state.stream_slots = StreamSlots(settings.sse_per_caller, settings.sse_total)
    app.state.public_rate = RateLimit(settings.public_rate, settings.public_burst)
    for router in (auth.router, entities.router, coast.router, live.router, history.router, scenarios.router,
                   audit.router, feedback.router, opendata.router, transit.router):
        app.include_router(router)
    ngsild.install(app)  # NGSI-LD: its routes, ProblemDetails errors on /ngsi-ld/ and its part of the OpenAPI document
    sensorthings.install(app)  # OGC SensorThings API 1.1 read side at /sta/v1.1 (api/routes/sensorthings.py)

    def archive_health() -> dict[str, Any]:
        """The archive's manifest, for operators: the records the sink skipped as invalid, the events kept."""
        try:
            m = engine_of(app.state).manifest()
        except ValueError as exc:
            return {"error": str(exc)}
        return {"invalid_skipped": m.invalid_skipped, "events": m.summary()["events"]}

    @app.get("/health", operation_id="health", tags=["meta"], summary="Status of the platform (503 when degraded)",
             responses={503: {"description": "the read model has stopped or cannot reach Kafka, or the worker or the "
                                             "archive sink is falling behind its input topics"}})
    def health(request: Request, response: Response) -> dict[str, Any]:
        """Status and reason for everyone (probes); the read model's details, the consumer lag of the worker and the
        archive sink, and the viewer's state for operators."""
        status, reason = rm.status()
        if status != "degraded":
            pipe, why = watch.status()
            if pipe == "degraded":
                status, reason = pipe, why
        fb = getattr(request.app.state, "feedback", None)
        if status != "degraded" and fb is not None and (why := fb.stopped()):
            status, reason = "degraded", why
        if status == "degraded":
            response.status_code = 503
        if not allowed(identify(request), "operator"):
            return {"status": status, "reason": reason}
        return {"status": status, "reason": reason,
                "read_model": {"status": status, "reason": reason, "entities": len(rm.state), "alerts": len(rm.alerts),
                               "aggregate_partials": len(rm.aggs), "seq": rm.seq, "error": rm.error,
                               "applied": sum(dict(rm.applied).values()), "broken": rm.broken_by_topic(),
                               "broken_total": sum(dict(rm.broken).values()), "lag": rm.lag_by_topic(),
                               "sse_subscribers": rm.subscribers},
                "consumer_lag": watch.lags(),
                "feedback": fb.health() if fb is not None else None,
                "archive": archive_health(),
                "viewer": "ok" if (cesium_dir() / "Cesium.js").is_file() else f"CesiumJS missing at {cesium_dir()}: run 'make run'"}

    @app.get("/metrics", operation_id="metrics", tags=["meta"], summary="Prometheus metrics of this API process",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def metrics() -> Response:
        body, content_type = render(registry)
        return Response(body, media_type=content_type)

    @app.get("/regions", operation_id="list_regions", tags=["regions"])
    def regions() -> list[dict[str, Any]]:
        return [{"id": pack.id, "name": pack.manifest.name, "bbox": pack.manifest.bbox,
                 "neighbourhoods": [{"id": n.id, "name": n.name} for n in pack.neighbourhoods.values()],
                 "layers": {k: v.model_dump() for k, v in pack.manifest.layers.items()},
                 "synthetic_layers": pack.synthetic_layers(),
                 "real_layers": [k for k, v in pack.manifest.layers.items() if not v.synthetic],
                 "districts": len(pack.districts),
                 "surge_presets": {k: v.model_dump(mode="json") for k, v in pack.manifest.surge_presets.items()}}]

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if (cesium_dir() / "Cesium.js").is_file():
        app.mount("/cesium", StaticFiles(directory=cesium_dir()), name="cesium")
    else:
        log.warning("CesiumJS not found at %s: the viewer cannot load; 'make run' installs it (npm)", cesium_dir())

        @app.get("/cesium/{path:path}", include_in_schema=False)
        def no_cesium(path: str) -> None:
            raise HTTPException(503, f"CesiumJS is not installed at {cesium_dir()}; run 'make run' (it runs npm install)")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/scene", include_in_schema=False)
    def scene() -> HTMLResponse:
        from viewer.scene import build_scene

        states = {cid: rec["state"] for cid in pack.coast if (rec := rm.get(cid))}
        nonce = secrets.token_urlsafe(16)  # cesiumpy writes inline scripts: this response allows those it carries, no others
        page = build_scene(pack, states).replace("<script", f'<script nonce="{nonce}"')
        csp = CESIUM_CSP.replace("script-src 'self'", f"script-src 'self' 'nonce-{nonce}'")
        return HTMLResponse(page, headers={"Content-Security-Policy": csp})

    @app.get("/kiosk", include_in_schema=False)
    def kiosk() -> FileResponse:
        return FileResponse(STATIC / "kiosk.html")

    check_coverage(app)
    document_errors(app)
    document_contract(app, settings.max_page_size)
    allow_all_methods(app)
    return app
