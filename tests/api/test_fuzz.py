"""Issue 15 item 6 (after issue 11 item 8): schemathesis against the OpenAPI document with ALL its checks, as each role
(public, planner, operator), over real HTTP (uvicorn) on a real broker, through schemathesis' own engine - the phases
`st run` runs: examples, coverage (boundary values, missing parameters, methods the document does not list, OPTIONS),
fuzzing (valid and invalid data) and stateful (sequences along the links schemathesis infers from the document).
0 failures of any kind: no server error, no status, header, content type or body the document does not name, no
schema-valid request refused, no schema-invalid request accepted, a 405 with an Allow that lists the path's methods,
no use after free, no created resource missing, no ignored auth. Bounded: PLIETSCH_FUZZ_EXAMPLES examples per
operation and phase (default 8), a fixed seed.

Expected statuses, beyond schemathesis' defaults, each for a reason JSON Schema cannot state:
- 413 for valid and invalid data: PLIETSCH_MAX_BODY_BYTES limits the BYTES of a body (a transport limit; the schema
  limits values, and a body of valid values can be larger than the limit), and a storm-surge run can be too large for
  the terrain (cells x steps) or too long (steps, from duration_h / step_minutes). Every route that takes a body
  documents 413 (api/openapi.py); test_limits and test_scenarios check the limits and their messages.
The one rule of the API that JSON Schema cannot state at all, and that is therefore not in the document: a storm-surge
curve's hours must differ (twin/scenario.py; the API sorts the points by hour, so only repeated hours are refused).
A 422 for that reason alone is the only failure let through; any other failure fails the test.

The push channels (GET /stream, GET /public/stream) never end, so a generated call would not return: they are walked
by tests/api/test_roles.py and test_live.py instead. DELETE /auth/users/{name} and DELETE /auth/keys/{key_id} run on
this test's own user store."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

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
NEVER_ENDING = ["/stream", "/public/stream"]
NEGATIVE_OK = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
POSITIVE_OK = ["2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]
CURVE_HOURS = "curve hours must increase strictly"  # the rule JSON Schema cannot state (see above)


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


def _curve_hours(check: str, response: Any) -> bool:
    """A refusal of a curve with a repeated hour, and nothing else in the refusal."""
    if check != "positive_data_acceptance" or response is None or response.status_code != 422:
        return False
    try:
        detail = json.loads(response.content)["detail"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(detail, list) and len(detail) == 1 and CURVE_HOURS in str(detail[0].get("msg", ""))


@pytest.mark.parametrize("role", ["public", "planner", "operator"])
def test_every_operation_as_each_role_with_all_checks(served: tuple[str, dict[str, dict[str, str]]], role: str) -> None:
    url, headers = served
    load_all_checks()
    config = SchemathesisConfig.from_dict({
        "seed": 1, "headers": headers[role], "generation": {"max-examples": EXAMPLES},
        "checks": {"negative_data_rejection": {"expected-statuses": NEGATIVE_OK},
                   "positive_data_acceptance": {"expected-statuses": POSITIVE_OK}}})
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config).exclude(path=NEVER_ENDING)
    failures: dict[tuple[str, str, str], str] = {}
    errors: list[str] = []
    ran: set[str] = set()
    codes: Counter[int] = Counter()
    through: set[str] = set()  # operations that answered 2xx at least once
    let_through = 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.NonFatalError | events.FatalError):
            what = (f"{event.label} ({event.phase}): {event.value!r}" if isinstance(event, events.NonFatalError)
                    else f"engine error: {event.exception!r}")  # the events have __slots__, no __dict__ to print
            errors.append(" ".join(what.split())[:400])
        if not isinstance(event, events.ScenarioFinished):
            continue
        for cid, interaction in event.recorder.interactions.items():
            if interaction.response is not None:
                codes[interaction.response.status_code] += 1
                if interaction.response.status_code < 300:
                    through.add(event.recorder.cases[cid].value.operation.label)
        for cid, nodes in event.recorder.checks.items():
            for node in nodes:
                ran.add(node.name)
                if node.status != Status.FAILURE or node.failure_info is None:
                    continue
                interaction = event.recorder.interactions.get(cid)
                response = interaction.response if interaction is not None else None
                if _curve_hours(node.name, response):
                    let_through += 1
                    continue
                f = node.failure_info.failure
                body = (response.content or b"")[:300].decode(errors="replace") if response is not None else ""
                failures.setdefault((event.recorder.label, node.name, f.title),
                                    f"{' '.join(str(f.message).split())[:300]} | answered {getattr(response, 'status_code', None)} "
                                    f"{body} | {node.failure_info.code_sample[:500]}")
    every = {c.__name__ for c in CHECKS.get_all()}
    print(f"{role}: {len(through)} operations answered 2xx, {sum(codes.values())} calls, status codes "
          f"{dict(sorted(codes.items()))}, {len(ran)} checks ran, {let_through} refusals of repeated curve hours")
    assert not errors, f"schemathesis could not run as {role}:\n" + "\n".join(errors)
    assert ran == every, f"checks that never ran as {role}: {sorted(every - ran)}"
    least = {"public": 4, "planner": 9, "operator": 12}[role]  # the fuzz reached past the login and the validation
    assert len(through) >= least, f"only {sorted(through)} answered 2xx as {role}: {codes}"
    assert not failures, f"{len(failures)} failure(s) as {role}:\n" + "\n".join(
        f"{op} [{check}] {title}: {why}" for (op, check, title), why in failures.items())
