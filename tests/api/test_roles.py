"""Issue 11 item 1: every route and push channel answers each role exactly as the table in api/auth/access.py says.

The walk covers the OpenAPI document, the routes outside it (pages, docs) and the mounted static files, against the
real app served by uvicorn over a real broker; a route without a rule fails the test (and the app refuses to start)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from api.auth.access import LEVEL, MOUNTS, RULES, check_coverage, rule
from api.auth.store import AuthStore
from api.main import create_app
from api.settings import ApiSettings
from infra.broker import free_port
from tests.credentials import OPERATOR
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker
SID = "kiel:_:scenario:s-nonexistent"
PARAMS = {"region_id": "kiel", "entity_id": "kiel:gaarden:sensor:traffic-count-001", "sid": SID, "other": SID, "step": "0",
          "key_id": "nokey", "path": "Cesium.js"}
CESIUM_FALLBACK = ("GET", "/cesium/{path:path}")  # exists only when CesiumJS is not installed


class Served:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start within 60 s")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def app_dir(topics: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    data = tmp_path_factory.mktemp("roles")
    return create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=topics, region_pack=BUNDLED_DIR / "kiel", data_dir=data)), data


@pytest.fixture(scope="module")
def served(app_dir: tuple[Any, Path]) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    app, data = app_dir
    store = AuthStore(data / "auth.sqlite3")
    _, planner_key = store.add_key("planner machine", "planner", "test")
    headers = {"public": {}, "planner": {"Authorization": f"Bearer {planner_key}"}, "operator": OPERATOR}
    with Served(app) as url:
        yield url, headers


def _routes(app: Any) -> list[tuple[str, str, str]]:
    """(method, route path, a concrete URL) of every route: OpenAPI, pages outside it, and a file of every mount."""
    out = []
    doc = app.openapi()
    for path, ops in doc["paths"].items():
        out += [(m.upper(), path, path) for m in ops]
    for r in app.routes:
        if isinstance(r, APIRoute | Route) and not getattr(r, "include_in_schema", True) or type(r) is Route:
            out += [(m, r.path, r.path) for m in sorted(r.methods or ()) if m != "HEAD"]
        elif isinstance(r, Mount):
            out.append(("GET", r.path, r.path + ("/kiosk.js" if r.path == "/static" else "/Cesium.js")))
    filled = []
    for method, path, url in out:
        for k, v in PARAMS.items():
            url = url.replace(f"{{{k}:path}}", v).replace(f"{{{k}}}", v)
        if path == "/auth/users/{name}":
            url = "/auth/users/nobody"
        url = url.replace("{name}", "max_depth")
        filled.append((method, path, url))
    return sorted(set(filled))


def test_every_route_has_a_rule_and_every_rule_a_route(app_dir: tuple[Any, Path]) -> None:
    app, _ = app_dir
    routes = _routes(app)
    assert [(m, p) for m, p, _ in routes if rule(m, p) is None and p not in MOUNTS] == []
    known = {(m, p) for m, p, _ in routes}
    assert set(RULES) - known - {CESIUM_FALLBACK} == set(), "rules for routes that do not exist"
    assert {p for m, p, _ in routes if p in MOUNTS} == set(MOUNTS)
    assert len(routes) >= 45  # the walk really walks: every route of the API


def test_a_route_without_a_rule_stops_the_app(app_dir: tuple[Any, Path]) -> None:
    app, _ = app_dir
    app.add_api_route("/new-and-unruled", lambda: {"x": 1}, methods=["GET"])
    try:
        with pytest.raises(RuntimeError, match="GET /new-and-unruled"):
            check_coverage(app)
    finally:
        app.router.routes.pop()
    check_coverage(app)


def _call(c: httpx.Client, method: str, url: str, headers: dict[str, str]) -> int:
    if url in ("/stream", "/public/stream"):  # push channels: the status of the opened stream, then hang up
        with c.stream(method, url, headers=headers) as r:
            return r.status_code
    return c.request(method, url, headers=headers, json={} if method in ("POST", "PUT", "PATCH") else None).status_code


def test_each_role_gets_exactly_what_the_table_says(app_dir: tuple[Any, Path], served: tuple[str, dict]) -> None:
    app, _ = app_dir
    url, headers = served
    wrong = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for method, path, concrete in _routes(app):
            need = rule(method, path) or MOUNTS[path]
            for role, h in headers.items():
                status = _call(c, method, concrete, h)
                denied = 401 if role == "public" else 403
                if (status in (401, 403)) if LEVEL[role] >= LEVEL[need] else status != denied:
                    wrong.append(f"{role} {method} {concrete} (needs {need}) -> {status}")
    assert wrong == []


def test_public_feed_and_health_show_the_public_only_what_is_public(served: tuple[str, dict]) -> None:
    url, headers = served
    with httpx.Client(base_url=url, timeout=30) as c:
        assert set(c.get("/health").json()) == {"status", "reason"}
        assert "read_model" in c.get("/health", headers=headers["operator"]).json()
        with c.stream("GET", "/public/stream") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            assert next(lines) == "event: summary"
            assert '"neighbourhoods"' in next(lines)
        for denied in ("/stream", "/entities", "/alerts", "/history/range", "/scenarios", "/metrics"):
            r = c.get(denied)
            assert r.status_code == 401 and "needs a login" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        r = c.get("/auth/users", headers=headers["planner"])
        assert r.status_code == 403 and "needs the role operator" in r.json()["detail"]
        r = c.get("/entities", headers={"Authorization": "Bearer pk_forged_key_that_nobody_made_000000000000"})
        assert r.status_code == 401 and "unknown" in r.json()["detail"]


def test_security_headers_on_every_response(served: tuple[str, dict]) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=30) as c:
        for path in ("/", "/kiosk", "/static/kiosk.js", "/public/summary", "/entities", "/nowhere"):
            h = c.get(path).headers
            assert "script-src 'self'" in h["content-security-policy"] and "frame-ancestors 'none'" in h["content-security-policy"]
            assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
            assert h["referrer-policy"] == "no-referrer"
