"""FastAPI app factory: ``uvicorn api.main:create_app --factory``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api.readmodel import ReadModel
from api.routes import entities
from api.settings import ApiSettings
from streams.serde import make_codec
from twin.region import load_pack


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    if not settings.bootstrap_servers:
        raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set; the API reads the twin from Kafka. Use 'make run'.")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.read_model.start()
        yield
        app.state.read_model.stop()

    app = FastAPI(title="Plietsch Twin API", version="0.1.0", lifespan=lifespan,
                  description="The live digital twin of the KielRegion. Layers marked synthetic are made up.")
    app.state.settings = settings
    app.state.pack = load_pack(settings.region_pack)
    app.state.read_model = ReadModel(settings.bootstrap_servers, make_codec(settings.schema_registry_url))
    app.include_router(entities.router)

    @app.get("/health", operation_id="health", tags=["meta"])
    def health() -> dict[str, Any]:
        rm: ReadModel = app.state.read_model
        return {"status": "degraded" if rm.error else ("ok" if rm.ready.is_set() else "starting"),
                "read_model": {"entities": len(rm.state), "applied": rm.applied, "error": rm.error}}

    @app.get("/regions", operation_id="list_regions", tags=["regions"])
    def regions() -> list[dict[str, Any]]:
        pack = app.state.pack
        return [{"id": pack.id, "name": pack.manifest.name, "bbox": pack.manifest.bbox,
                 "neighbourhoods": [{"id": n.id, "name": n.name} for n in pack.neighbourhoods.values()],
                 "layers": {k: v.model_dump() for k, v in pack.manifest.layers.items()},
                 "synthetic_layers": pack.synthetic_layers()}]

    return app
