"""NGSI-LD subscriptions with a real local HTTP receiver: notifications from the read model's live deltas (entities,
watched attributes, q, attributes, keyValues), retried with backoff under the same notification id until the receiver
takes them, throttled, surviving an API restart (what was not acknowledged is sent after it), deleted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.auth.store import AuthStore
from api.main import create_app
from api.settings import ApiSettings
from streams.catalogue import TWIN_UPDATES
from streams.publisher import EventPublisher
from tests.api.ngsild_setup import GAUGE, GAUGE_URN, PARKING, T, sensor_state, twin_broker, update
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker
S = "/ngsi-ld/v1/subscriptions"


class Receiver:
    """An HTTP server that records every POST (headers and JSON body) and refuses the first ``fail`` with 503."""

    def __init__(self) -> None:
        self.got: list[tuple[float, dict[str, str], dict[str, Any], int]] = []
        self.fail = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code = 503 if outer.fail > 0 else 204
                outer.fail -= 1
                outer.got.append((time.monotonic(), dict(self.headers), body, code))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self, sid: str) -> list[dict[str, Any]]:
        return [b for _, _, b, code in list(self.got) if code == 204 and b["subscriptionId"] == sid]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[str, Path, Receiver, EventPublisher]]:
    with twin_broker() as (bootstrap, pub):
        r = Receiver()
        try:
            yield bootstrap, tmp_path, r, pub
        finally:
            r.server.shutdown()


def app_for(bootstrap: str, data: Path) -> Any:
    return create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, region_pack=BUNDLED_DIR / "kiel", data_dir=data))


def level(pub: EventPublisher, value: float, revision: int) -> None:
    pub.send(TWIN_UPDATES.name, GAUGE, update(GAUGE, "sensor", sensor_state(GAUGE, "water_level", {"level_m": value}, T,
                                                                               revision), revision))
    pub.flush()


def parking(pub: EventPublisher, occupied: int, revision: int) -> None:
    pub.send(TWIN_UPDATES.name, PARKING, update(PARKING, "sensor", sensor_state(
        PARKING, "parking", {"occupied": occupied, "capacity": 120}, T, revision), revision))
    pub.flush()


def gauge_sub(r: Receiver) -> dict[str, Any]:
    return {"id": "urn:ngsi-ld:Subscription:gauge-high", "type": "Subscription",
            "entities": [{"type": "WaterObserved", "id": GAUGE_URN}], "watchedAttributes": ["height"], "q": "height>1",
            "notification": {"attributes": ["height"], "format": "keyValues", "endpoint": {"uri": r.url}}}


def test_notifications_retried_throttled_and_surviving_a_restart(setup: tuple[str, Path, Receiver, EventPublisher]) -> None:
    bootstrap, data, r, pub = setup
    r.fail = 2  # the first two attempts are refused: the same notification comes again, under the same id
    with TestClient(app_for(bootstrap, data), headers=OPERATOR) as c:
        wait_for(lambda: c.app.state.read_model.ready.is_set(), 60, "the read model")  # type: ignore[attr-defined]
        made = c.post(S, json=gauge_sub(r))
        assert made.status_code == 201 and made.headers["Location"] == f"{S}/urn:ngsi-ld:Subscription:gauge-high"
        sid = "urn:ngsi-ld:Subscription:gauge-high"
        first = wait_for(lambda: r.delivered(sid), 60, "the first notification, after two refusals")[0]
        attempts = [b for _, _, b, _ in r.got if b["subscriptionId"] == sid]
        assert len(attempts) == 3 and {b["id"] for b in attempts} == {first["id"]}
        assert first["type"] == "Notification" and first["data"] == [{"id": GAUGE_URN, "type": "WaterObserved", "height": 1.42}]
        headers = next(h for _, h, b, code in r.got if code == 204)
        assert headers["Content-Type"] == "application/json" and "jsonldContexts/plietsch.jsonld" in headers["Link"]
        assert c.get(f"{S}/{sid}").json()["notification"]["timesSent"] == 1
        # a second subscription: car parks, throttled to one notification per 2 s, all attributes, normalized
        park = {"type": "Subscription", "entities": [{"type": "OffStreetParking", "idPattern": ".*:gaarden:.*"}],
                "throttling": 2, "notification": {"endpoint": {"uri": r.url, "accept": "application/ld+json"}}}
        psid = c.post(S, json=park).headers["Location"].rsplit("/", 1)[1]
        wait_for(lambda: r.delivered(psid), 60, "the car park's current state")
        level(pub, 0.5, 2)  # q no longer holds: no notification
        for i, occupied in enumerate((40, 41, 42)):
            parking(pub, occupied, 2 + i)
        level(pub, 1.8, 3)
        wait_for(lambda: len(r.delivered(sid)) == 2, 60, "the gauge's rise above 1 m")
        assert r.delivered(sid)[1]["data"] == [{"id": GAUGE_URN, "type": "WaterObserved", "height": 1.8}]
        wait_for(lambda: any(d["data"][0]["occupiedSpotNumber"]["value"] == 42 for d in r.delivered(psid)), 60,
                 "the newest car park state")
        park_notes = r.delivered(psid)
        assert park_notes[-1]["data"][0]["@context"].endswith("/ngsi-ld/v1/jsonldContexts/plietsch.jsonld")
        times = [t for t, _, b, code in r.got if code == 204 and b["subscriptionId"] == psid]
        # throttled: the next is sent 2 s after the previous was delivered, so never closer (a bound, not a timing)
        assert all(b - a >= 1.9 for a, b in zip(times, times[1:], strict=False)), times
        assert len(park_notes) <= 3  # the three quick changes were coalesced (the newest kept)
    # the API is down: the gauge changes; a new API process over the same data directory sends what was not acknowledged
    level(pub, 1.9, 4)
    with TestClient(app_for(bootstrap, data), headers=OPERATOR) as c:
        assert {s["id"] for s in c.get(S).json()} == {sid, f"urn:ngsi-ld:Subscription:{psid.split(':')[-1]}"}
        wait_for(lambda: len(r.delivered(sid)) == 3, 60, "the change made while the API was down")
        assert r.delivered(sid)[2]["data"][0]["height"] == 1.9
        assert c.delete(f"{S}/{sid}").status_code == 204
        assert c.get(f"{S}/{sid}").status_code == 404 and c.delete(f"{S}/{sid}").status_code == 404
        level(pub, 2.5, 5)
        parking(pub, 50, 5)  # a barrier: once the car park's change is delivered, the gauge's would have been too
        wait_for(lambda: any(d["data"][0]["occupiedSpotNumber"]["value"] == 50 for d in r.delivered(psid)), 60, "barrier")
        assert len(r.delivered(sid)) == 3  # nothing after the delete


def test_subscription_errors_and_roles(setup: tuple[str, Path, Receiver, EventPublisher]) -> None:
    bootstrap, data, r, _ = setup
    app = app_for(bootstrap, data)
    planner = AuthStore(data / "auth.sqlite3").add_key("p", "planner", "test")[1]
    with TestClient(app, headers=OPERATOR) as c:
        good = gauge_sub(r)
        for bad, says in (({**good, "notification": {"endpoint": {"uri": "ftp://x"}}}, "notification.endpoint.uri"),
                          ({**good, "q": "height>>1"}, "q"), ({**good, "entities": []}, "entities"),
                          ({k: v for k, v in good.items() if k != "notification"}, "notification")):
            res = c.post(S, json=bad)
            assert res.status_code == 400 and res.json()["type"].endswith("/BadRequestData") and says in res.json()["detail"]
        assert c.post(S, json=good).status_code == 201
        dup = c.post(S, json=good)
        assert dup.status_code == 409 and dup.json()["type"].endswith("/AlreadyExists")
        assert c.post(S, json=good, headers={"Authorization": f"Bearer {planner}"}).status_code == 403
        assert c.get(S, headers={"Authorization": ""}).status_code == 401
        assert c.get(f"{S}/urn:ngsi-ld:Subscription:nope").json()["type"].endswith("/ResourceNotFound")
