"""Issue 11 item 4, as far as it is done: bodies and lists bounded (413/422 naming the limit), the bbox area, live
streams capped per caller and in total (429), callers without a login rate-limited, a scenario quota per user."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.auth.store import AuthStore
from api.main import create_app
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker
from streams.catalogue import ensure_topics
from tests.api.test_roles import Served
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def own_broker() -> Iterator[str]:
    """No worker reads this broker: scenario requests stay queued."""
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap_servers)
        yield b.bootstrap_servers


def _app(bootstrap: str, data: Path, **limits: Any) -> Any:
    return create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, region_pack=BUNDLED_DIR / "kiel", data_dir=data, **limits))


def test_bodies_lists_and_areas_are_bounded_with_the_limit_named(own_broker: str, tmp_path: Path) -> None:
    c = TestClient(_app(own_broker, tmp_path, max_body_bytes=4096), headers=OPERATOR)
    r = c.post("/scenarios", content=b'{"name": "' + b"x" * 5000 + b'"}', headers={"content-type": "application/json"})
    assert r.status_code == 413 and "above the limit of 4,096 bytes (PLIETSCH_MAX_BODY_BYTES)" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body is counted as it comes
        yield b'{"name": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = c.post("/scenarios", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "PLIETSCH_MAX_BODY_BYTES" in r.json()["detail"]
    c = TestClient(_app(own_broker, tmp_path), headers=OPERATOR)
    curve = [{"hour": i / 10, "level_m": 0.5} for i in range(1001)]
    r = c.post("/scenarios", json={"curve": curve})
    assert r.status_code == 422 and "at most 1000 items" in r.text
    r = c.post("/scenarios", json={"preset": "kiel-2023-10-20", "breaches": [{"segment": "kiel:_:coast:gaarden-001"}] * 501})
    assert r.status_code == 422 and "at most 500 items" in r.text
    # a box costs at most what the whole region costs (entities and history are the region's): a larger box is the
    # region, corners in either order are the same box (issue 15 item 6: the document's bbox pattern is all the rule)
    west, south, east, north = c.get("/regions").json()[0]["bbox"]
    region = c.get("/entities", params={"bbox": f"{west},{south},{east},{north}", "limit": 1}).json()["total"]
    assert c.get("/entities", params={"bbox": "9,53,11,55", "limit": 1}).json()["total"] == region > 0
    assert c.get("/entities", params={"bbox": f"{east},{north},{west},{south}", "limit": 1}).json()["total"] == region
    r = c.get("/entities", params={"bbox": "9,53,11"})
    assert r.status_code == 422 and "4 are needed" in r.json()["detail"]
    assert c.get("/entities", params={"limit": 5000}).status_code == 422  # page size (PLIETSCH_MAX_PAGE_SIZE)


def test_scenario_quota_per_user(own_broker: str, tmp_path: Path) -> None:
    app = _app(own_broker, tmp_path, scenario_quota=2)
    store = AuthStore(tmp_path / "auth.sqlite3")
    anna = {"Authorization": f"Bearer {store.add_key('anna', 'planner', 'test')[1]}"}
    ben = {"Authorization": f"Bearer {store.add_key('ben', 'planner', 'test')[1]}"}
    c = TestClient(app)
    body = {"preset": "kiel-2023-10-20", "duration_h": 24}
    assert [c.post("/scenarios", json=body, headers=anna).status_code for _ in range(2)] == [202, 202]
    r = c.post("/scenarios", json=body, headers=anna)
    assert r.status_code == 429 and "PLIETSCH_SCENARIO_QUOTA=2" in r.json()["detail"]
    assert c.post("/scenarios", json=body, headers=ben).status_code == 202  # a quota per user


def test_live_streams_capped_per_caller_and_in_total(own_broker: str, tmp_path: Path) -> None:
    app = _app(own_broker, tmp_path, sse_per_caller=2, sse_total=3)
    store = AuthStore(tmp_path / "auth.sqlite3")
    planner = {"Authorization": f"Bearer {store.add_key('p', 'planner', 'test')[1]}"}
    with Served(app) as url, httpx.Client(base_url=url, timeout=30) as c, ExitStack() as streams:
        first = streams.enter_context(c.stream("GET", "/stream", headers=planner))
        second = streams.enter_context(c.stream("GET", "/public/stream", headers=planner))
        assert first.status_code == second.status_code == 200
        r = c.get("/stream", headers=planner)
        assert r.status_code == 429 and "limit per caller (PLIETSCH_SSE_PER_CALLER)" in r.json()["detail"]
        third = streams.enter_context(c.stream("GET", "/stream", headers=OPERATOR))  # another caller: 3 open in all
        assert third.status_code == 200
        r = c.get("/public/stream")
        assert r.status_code == 429 and "PLIETSCH_SSE_TOTAL" in r.json()["detail"] and r.headers["retry-after"]
        second.close()  # a closed stream gives its slot back (once the server notices, within a push interval)
        wait_for(lambda: sum(app.state.stream_slots.open.values()) == 2, 30, "the closed stream's slot to come back")
        with c.stream("GET", "/public/stream") as again:
            assert again.status_code == 200


def test_callers_without_login_are_rate_limited(own_broker: str, tmp_path: Path) -> None:
    c = TestClient(_app(own_broker, tmp_path, public_rate=0.5, public_burst=3))
    codes = [c.get("/public/summary").status_code for _ in range(3)]
    r = c.get("/public/summary")
    assert codes == [200, 200, 200] and r.status_code == 429
    assert "PLIETSCH_PUBLIC_RATE" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1
    assert c.post("/auth/login", json={"name": "x", "password": "y"}).status_code == 429  # the login too: no guessing
    assert c.get("/public/summary", headers=OPERATOR).status_code == 200  # a login is not limited
