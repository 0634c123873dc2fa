"""Issue 11 item 8: schemathesis against the OpenAPI document, as each role (public, planner, operator), over real HTTP
(uvicorn) on a real broker, with valid and invalid data (schemathesis' positive and negative modes): no server error
(5xx), no status code the document does not name for the route, no body outside the documented schema, no undocumented
content type. Bounded: PLIETSCH_FUZZ_EXAMPLES valid examples per operation and role (default 8), half as many invalid.

The push channels (GET /stream, GET /public/stream) never end, so a generated call would not return: they are walked
by tests/api/test_roles.py and test_live.py instead. DELETE /auth/users/{name} and DELETE /auth/keys/{key_id} run on
this test's own user store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.auth.store import AuthStore
from api.main import create_app
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker
from streams.catalogue import ensure_topics
from tests.api.test_roles import Served
from tests.credentials import OPERATOR
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker
EXAMPLES = int(os.environ.get("PLIETSCH_FUZZ_EXAMPLES", "8"))
NEVER_ENDING = {("GET", "/stream"), ("GET", "/public/stream")}
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, dict[str, str]]]]:
    """The API over its own broker (no worker: scenarios stay queued), with a planner key; no rate limit in the way of
    the public role (the limit itself is tested in test_limits)."""
    data = tmp_path_factory.mktemp("fuzz")
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, region_pack=BUNDLED_DIR / "kiel",
                                     data_dir=data, public_rate=10_000, public_burst=10_000, scenario_quota=1000))
        planner = AuthStore(data / "auth.sqlite3").add_key("fuzz planner", "planner", "test")[1]
        with Served(app) as url:
            yield url, {"public": {}, "planner": {"Authorization": f"Bearer {planner}"}, "operator": OPERATOR}


def _failures(url: str, headers: dict[str, str], op: Any, codes: dict[int, int], through: set[str],
              mode: GenerationMode) -> list[str]:
    found: list[str] = []

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES if mode is GenerationMode.POSITIVE else max(2, EXAMPLES // 2), deadline=None,
              database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        try:
            response = case.call(base_url=url, headers=headers, timeout=60)
            codes[response.status_code] = codes.get(response.status_code, 0) + 1
            if response.status_code < 300:
                through.add(op.label)
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # one line per distinct failure, with the call that caused it
            why = " ".join(str(exc).split())[:400]
            if why not in found:
                found.append(f"{op.label}: {why}")

    try:
        run()
    except Unsatisfiable:  # an operation without parameters or body has no invalid form
        assert mode is GenerationMode.NEGATIVE, f"{op.label}: no valid call can be made"
    return found


@pytest.mark.parametrize("role", ["public", "planner", "operator"])
def test_every_operation_as_each_role(served: tuple[str, dict[str, dict[str, str]]], role: str) -> None:
    url, headers = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    codes: dict[int, int] = {}
    through: set[str] = set()  # operations that answered 2xx at least once
    walked = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) in NEVER_ENDING:
            continue
        walked += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += _failures(url, headers[role], op, codes, through, mode)
    assert walked >= 30, f"only {walked} operations in the OpenAPI document"
    print(f"{role}: {walked} operations, {len(through)} answered 2xx, {sum(codes.values())} calls, "
          f"status codes {dict(sorted(codes.items()))}")
    least = {"public": 4, "planner": 9, "operator": 12}[role]  # the fuzz reached past the login and the validation
    assert len(through) >= least, f"only {sorted(through)} answered 2xx as {role}: {codes}"
    assert not failures, f"{len(failures)} failure(s) as {role}:\n" + "\n".join(failures)
