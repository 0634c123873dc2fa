"""The OpenAPI document names the app-wide error answers on every route (issue 11 item 8), and the rule table's
completeness check sees routes inside included routers (FastAPI keeps an included router as one entry)."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI

from api.auth.access import RULES, check_coverage
from api.main import create_app
from api.settings import ApiSettings
from twin.region import BUNDLED_DIR


def test_a_route_without_a_rule_in_an_included_router_stops_the_app() -> None:
    app, router = FastAPI(), APIRouter()

    @router.get("/nobody-wrote-a-rule")
    def unruled() -> dict[str, str]:
        return {}

    app.include_router(router)
    with pytest.raises(RuntimeError, match="GET /nobody-wrote-a-rule"):
        check_coverage(app)


def test_every_route_documents_the_errors_the_rules_give(tmp_path: object) -> None:
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9", region_pack=BUNDLED_DIR / "kiel", data_dir=tmp_path))
    doc = app.openapi()
    seen = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            need, codes = RULES[(method.upper(), path)], set(op["responses"])
            assert {"401", "503"} <= codes, (method, path, codes)
            assert ("403" in codes) == (need != "public"), (method, path, codes)
            assert "429" in codes or need != "public", (method, path, codes)  # the rate limit without a login
            if method == "post":
                assert "413" in codes, (method, path)
            assert "detail" in op["responses"]["401"]["content"]["application/json"]["schema"]["properties"], (method, path)
            seen += 1
    assert seen >= 30
    for tail in ("summary", "assets", "flooded", "depth/{step}.tif", "rasters/{name}.tif", "compare/{other}"):
        assert {"404", "409", "410"} <= set(doc["paths"][f"/scenarios/{{sid}}/{tail}"]["get"]["responses"])
