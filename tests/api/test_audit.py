"""Issue 11 item 6: who launched, cancelled or shared a scenario, who created or deleted a user or key, who logged in,
failed to or logged out: AuditRecorded events on audit.events (real broker), archived by the real archive sink, read
back by operators only through GET /audit (paging, filters); never a password or key secret, no client address."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker
from streams.archive import read_events, run_sink
from streams.catalogue import AUDIT, FEEDBACK, SCENARIO_REQUESTS, SCENARIO_RESULTS, ensure_topics
from streams.serde import encode_event, make_codec
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.events import AuditRecorded, FeedbackModerated, ScenarioProgressed
from twin.region import BUNDLED_DIR, bundled_pack

pytestmark = pytest.mark.broker
PASSWORD = "correct-horse-battery-staple-1"


@pytest.fixture(scope="module")
def own_broker() -> Iterator[str]:
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap_servers)
        yield b.bootstrap_servers


@pytest.fixture
def sink(own_broker: str, tmp_path: Path) -> Iterator[Path]:
    """The archive sink over the broker, writing <tmp>/archive (the API's archive dir)."""
    root, stop, done = tmp_path / "archive", threading.Event(), []
    th = threading.Thread(target=lambda: done.append(run_sink(own_broker, make_codec(""), root, group="audit-sink",
                                                              flush_every_s=0.3, should_stop=stop.is_set,
                                                              pack=bundled_pack(), epoch="t")))
    th.start()
    yield root
    stop.set()
    th.join(60)
    assert not th.is_alive() and done


def _running(bootstrap: str, sid: str) -> None:
    """The worker's first progress record of *sid* (no worker here), so the API can see the run."""
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(SCENARIO_RESULTS.name, key=sid.encode(), value=encode_event(make_codec(""), ScenarioProgressed(
        entity_id=sid, region="kiel", occurred_at=datetime.now(UTC), source="test", status="running", step=1, steps=25)))
    assert p.flush(30) == 0


def test_actions_are_audited_archived_and_read_by_operators_only(own_broker: str, sink: Path, tmp_path: Path) -> None:
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=own_broker, region_pack=BUNDLED_DIR / "kiel", data_dir=tmp_path))
    with TestClient(app) as c:
        assert c.post("/auth/users", json={"name": "anna", "role": "planner", "password": PASSWORD},
                      headers=OPERATOR).status_code == 201
        assert c.post("/auth/login", json={"name": "anna", "password": "wrong-password-1"}).status_code == 401
        assert c.post("/auth/login", json={"name": "my-secret-typed-in-the-name", "password": "x"}).status_code == 401
        assert c.post("/auth/login", json={"name": "anna", "password": PASSWORD}).status_code == 200  # session cookie
        sid = c.post("/scenarios", json={"preset": "kiel-2023-10-20", "duration_h": 24}).json()["id"]
        _running(own_broker, sid)
        wait_for(lambda: c.get(f"/scenarios/{sid}").status_code == 200, 60, "the run to show")
        assert c.post(f"/scenarios/{sid}/share").status_code == 200
        assert c.delete(f"/scenarios/{sid}").status_code == 202
        assert c.get("/audit").status_code == 403  # a planner
        assert c.post("/auth/logout").status_code == 200
        assert c.get("/audit").status_code == 401  # the public
        key = c.post("/auth/keys", json={"name": "gauge-bridge", "role": "planner"}, headers=OPERATOR).json()
        assert c.delete(f"/auth/keys/{key['id']}", headers=OPERATOR).status_code == 204
        assert c.delete("/auth/users/anna", headers=OPERATOR).status_code == 204
        code = c.post("/feedback", json={"kind": "idea", "category": "other", "text": "Mehr Bänke"}).json()["code"]
        wait_for(lambda: c.get(f"/feedback/receipt/{code}").status_code == 200, 60, "the feedback to be read back")
        decided = c.post(f"/feedback/{code}/moderation", json={"decision": "rejected", "reason": "doppelt"}, headers=OPERATOR)
        assert decided.status_code == 200, decided.text

        expected = ["user.create", "login.failed", "login.failed", "login", "scenario.launch", "scenario.share",
                    "scenario.cancel", "logout", "key.create", "key.delete", "user.delete", "moderate"]

        def page(**params: Any) -> dict[str, Any]:
            r = c.get("/audit", params=params, headers=OPERATOR)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        wait_for(lambda: page()["total"] >= len(expected), 60, "the audit events to be archived")
        items = page()["items"]
        assert [i["action"] for i in reversed(items)] == expected  # newest first
        by = {(i["action"], i["target"]): i for i in items}
        assert by[("user.create", "anna")]["actor"] == "key:env" and by[("user.create", "anna")]["actor_role"] == "operator"
        assert by[("scenario.launch", sid)]["actor"] == "anna" and by[("scenario.launch", sid)]["entity_id"] == sid
        assert by[("scenario.cancel", sid)]["actor"] == "anna" and by[("login", "anna")]["actor_role"] == "planner"
        assert by[("key.create", key["id"])]["detail"] == "gauge-bridge, role planner"
        # the decision is its own audit entry: the same record (event id) as the FeedbackModerated event
        moderated = [e for topic, e in read_events(sink) if topic == FEEDBACK.name and isinstance(e, FeedbackModerated)]
        assert [e.event_id for e in moderated] == [by[("moderate", code)]["event_id"]]
        assert by[("moderate", code)]["actor"] == "key:env" and by[("moderate", code)]["detail"] == "rejected: doppelt"
        assert [i["action"] for i in page(action="moderate")["items"]] == ["moderate"]
        # a scenario's launch and cancellation too: the request events themselves, nothing beside them on audit.events
        asked = {type(e).__name__: e.event_id for topic, e in read_events(sink) if topic == SCENARIO_REQUESTS.name}
        assert asked == {"ScenarioRequested": by[("scenario.launch", sid)]["event_id"],
                         "ScenarioCancelRequested": by[("scenario.cancel", sid)]["event_id"]}
        assert not [e for topic, e in read_events(sink) if topic == AUDIT.name and e.action.startswith(("scenario.launch",
                                                                                                       "scenario.cancel"))]
        assert by[("scenario.launch", sid)]["client"].startswith("client-") and by[("scenario.launch", sid)]["detail"] == "25 steps"
        failed = page(action="login.failed")["items"]
        assert {i["actor"] for i in failed} == {"anna"} | {i["actor"] for i in failed if i["actor"].startswith("unknown:")}
        assert len(failed) == 2 and all(i["outcome"] == "refused" for i in failed)
        assert [i["action"] for i in page(target=sid)["items"]] == ["scenario.cancel", "scenario.share", "scenario.launch"]
        assert page(actor="anna")["total"] == 6  # her failed login, login, launch, share, cancel, logout
        first, second = page(limit=4)["items"], page(limit=4, offset=4)["items"]
        assert len(first) == len(second) == 4 and not {i["event_id"] for i in first} & {i["event_id"] for i in second}
        assert page(end="2000-01-01T00:00:00Z", start="1999-01-01T00:00:00Z")["total"] == 0
        assert c.get("/audit", params={"action": "nonsense"}, headers=OPERATOR).status_code == 422

        # no secret and no client address anywhere: not in the answers, not in the archived events
        text = c.get("/audit", headers=OPERATOR).text
        archived = [e for topic, e in read_events(sink) if topic == "audit.events"]
        kept = "".join(e.model_dump_json() for topic, e in read_events(sink) if topic in ("audit.events", SCENARIO_REQUESTS.name))
        for secret in (PASSWORD, "wrong-password-1", "my-secret-typed-in-the-name", key["key"], "testclient"):
            assert secret not in text and secret not in kept
        assert all(i["client"].startswith("client-") for i in items if i["action"] != "moderate")
        # not "moderate", "scenario.launch", "scenario.cancel": those are their own events
        assert len(archived) == len(expected) - 3 and all(isinstance(e, AuditRecorded) for e in archived)


def test_an_audited_change_and_its_entry_are_kept_together_through_a_broker_outage(
        paused_broker: EmbeddedBroker, tmp_path: Path) -> None:
    """A user created while the broker is stopped (SIGSTOP): the change is done and answered, its audit event waits
    in the store's outbox (shown on /metrics), and once the broker is back it is on ``audit.events`` exactly once. A
    change that is refused leaves no audit event; a change and its event are one SQLite transaction, so an event whose
    insert fails undoes the change."""
    import os
    import signal

    from api.auth.store import AuthError, Outgoing
    from streams.consume import drain
    from tests.api.readside import metric

    assert paused_broker._proc is not None
    bs = paused_broker.bootstrap_servers
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=bs, region_pack=BUNDLED_DIR / "kiel", data_dir=tmp_path))
    store = app.state.auth_store
    with TestClient(app) as c:
        assert c.delete("/auth/users/nobody", headers=OPERATOR).status_code == 404
        assert store.outbox_state()[0] == 0
        os.kill(paused_broker._proc.pid, signal.SIGSTOP)
        try:
            assert c.post("/auth/users", json={"name": "berit", "role": "planner", "password": PASSWORD},
                          headers=OPERATOR).status_code == 201
            assert store.outbox_state()[0] == 1
            assert metric(c.get("/metrics", headers=OPERATOR).text, "plietsch_audit_outbox_pending") == 1
            assert [u["name"] for u in store.users()].count("berit") == 1
        finally:
            os.kill(paused_broker._proc.pid, signal.SIGCONT)
        wait_for(lambda: store.outbox_state()[0] == 0, 60, "the outbox to be sent after the outage")
        codec = make_codec("")
        entries = [codec.decode(m.value())[1] for m in drain(bs, AUDIT.name)]
        created = [e for e in entries if e["action"] == "user.create" and e["target"] == "berit"]
        assert len(created) == 1, created
        assert created[0]["actor"] and created[0]["detail"] == "role planner"
    # the change and its event in one transaction: an event that cannot be written (its id taken) undoes the change,
    # and a change that is refused leaves no event behind (a store of its own: nothing here is relayed)
    import sqlite3

    from api.auth.store import AuthStore

    own = AuthStore(tmp_path / "own.sqlite3")
    own.add_key("first", "planner", "test", audit=Outgoing("same-id", b"k", b"v"))
    with pytest.raises(sqlite3.IntegrityError):
        own.add_key("second", "planner", "test", audit=Outgoing("same-id", b"k", b"v"))
    listed = own.keys()
    assert [k["name"] for k in listed] == ["first"]
    own.add_user("berit", "planner", PASSWORD)
    with pytest.raises(AuthError):
        own.add_user("berit", "planner", PASSWORD, audit=Outgoing("another-id", b"k", b"v"))
    assert not own.delete_user("nobody", audit=Outgoing("third-id", b"k", b"v"))
    assert [o.event_id for o in own.outbox()] == ["same-id"]


@pytest.mark.parametrize("request_json", ["[]", '"text"', "5", "null", "not JSON", '{"kind": 5}'])
def test_a_launch_whose_request_is_no_scenario_is_still_an_audit_entry(request_json: str) -> None:
    """Found by the stack fuzz drill: an archived request whose JSON was a list made GET /audit answer 500."""
    from api.audit import scenario_entry
    from twin.events import ScenarioRequested

    req = ScenarioRequested(entity_id="kiel:_:scenario:fuzz-1", region="kiel", occurred_at=datetime(2030, 1, 1, tzinfo=UTC),
                            source="test SYNTHETIC", request_json=request_json, actor="planer", actor_role="planner")
    e = scenario_entry(req)
    assert e.action == "scenario.launch" and e.actor == "planer" and e.detail == "? steps"
