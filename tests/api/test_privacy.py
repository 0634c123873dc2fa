"""Issue 11 item 3: what the public sees. Aggregates only, counts under 5 as "<5", parking only where enough spaces
hide who is parked, no free text (an alert's message never, a fixed text instead), non-public alerts never; the public
live feed carries the same document; the access log keeps no client address in clear."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.security import HashClientAddress
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker, free_port
from schemas.codec import SingleObjectCodec
from streams.catalogue import AGGREGATES, ALERTS, ensure_topics
from streams.serde import encode_event
from tests.api.readside import HOOD, ROAD, SEGMENT, Out, T, aggregate_record, partial
from tests.helpers import wait_for
from twin.aggregates import Partial
from twin.events import AlertRaised
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]
FRIEDRICHSORT, F_ROAD = "kiel:friedrichsort:neighbourhood:friedrichsort", "kiel:friedrichsort:road:r0001"
PERSONAL = "Herr Jansen, Werftstr. 5, meldet"


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        ensure_topics(b.bootstrap_servers)
        yield b


def _alert(aid: str, public: bool, message: str) -> bytes:
    return encode_event(SingleObjectCodec(), AlertRaised(
        event_id=str(uuid.uuid4()), entity_id=SEGMENT, region="kiel", occurred_at=T, source="test", alert_id=aid,
        severity="severe", category="storm_surge", message=message, value=1.2, threshold=1.0, public=public))


def _parking(group: str, occupied: float, capacity: float) -> tuple[str, bytes]:
    p = Partial("parking_occupancy", group, None, 0, 0, members={f"{group}-car-park": (occupied, capacity)}, rev=1)
    return p.key, aggregate_record(p, json.dumps(p.to_json()))


def test_the_public_sees_aggregates_only_small_counts_masked_and_no_free_text(broker: EmbeddedBroker, tmp_path: Path) -> None:
    out = Out(broker.bootstrap_servers)
    out.send(AGGREGATES.name, *partial(T, 0, 3.0, 3, group=ROAD, rev=1))  # 3 vehicles in Gaarden: "<5"
    out.send(AGGREGATES.name, *partial(T, 0, 7.0, 7, group=F_ROAD, rev=1))  # 7 in Friedrichsort: shown
    out.send(AGGREGATES.name, *_parking(HOOD, 3, 8))  # a car park of 8 spaces: who is parked could be told
    out.send(AGGREGATES.name, *_parking(FRIEDRICHSORT, 30, 120))
    out.send(ALERTS.name, "a-public", _alert(f"{SEGMENT}:storm_surge", True, f"{PERSONAL} <b>Wasser</b>"))
    out.send(ALERTS.name, "a-internal", _alert(f"{SEGMENT}:internal", False, "internal: pump 3 failed"))
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, region_pack=BUNDLED_DIR / "kiel", data_dir=tmp_path))
    with TestClient(app) as c:  # no credentials: the public
        def ready() -> dict | None:
            s = c.get("/public/summary").json()
            hoods = {n["id"]: n for n in s["neighbourhoods"]}
            done = "traffic_vehicles_15min" in hoods[FRIEDRICHSORT] and "parking_occupancy_pct" in hoods[HOOD] and s["alerts"]
            return s if done else None

        summary = wait_for(ready, 60, "the aggregates and the alert in the public summary")
        hoods = {n["id"]: n for n in summary["neighbourhoods"]}
        assert hoods[HOOD]["traffic_vehicles_15min"] == "<5"
        assert hoods[FRIEDRICHSORT]["traffic_vehicles_15min"] == 7
        assert hoods[HOOD]["parking_occupancy_pct"] is None  # 8 spaces: under the 20 the rule asks for
        assert hoods[FRIEDRICHSORT]["parking_occupancy_pct"] == 25
        assert summary["alerts"] == [{"category": "storm_surge", "severity": "severe", "where": "Gaarden shore 1",
                                      "text": "Storm surge warning (severe): Gaarden shore 1"}]
        doc = json.dumps(summary)
        assert "Jansen" not in doc and "<b>" not in doc and "pump" not in doc  # no free text, no internal alert
        assert ":sensor:" not in doc and ":road:" not in doc and "car-park" not in doc  # aggregates only, no sensor
        with c.stream("GET", "/public/stream") as r:  # the public live feed: the same document
            lines = r.iter_lines()
            assert next(lines) == "event: summary"
            assert json.loads(next(lines).removeprefix("data: ")) == summary
        assert c.get("/alerts").status_code == 401 and c.get("/aggregates").status_code == 401


def test_access_log_names_clients_by_a_salted_hash_only() -> None:
    f = HashClientAddress()

    def line(addr: str) -> str:
        rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                                (addr, "GET", "/kiosk", "1.1", 200), None)
        f.filter(rec)
        return rec.getMessage()

    a, b, other = line("203.0.113.7:51234"), line("203.0.113.7:40000"), line("198.51.100.2:51234")
    assert "203.0.113.7" not in a and a.startswith("client-") and a.endswith('"GET /kiosk HTTP/1.1" 200')
    assert a == b and a != other  # one client stays one pseudonym (any port); another differs
    assert "2001:db8::1" not in line("[2001:db8::1]:443")
    assert HashClientAddress().pseudonym("203.0.113.7:1") != f.pseudonym("203.0.113.7:1")  # salted per process


def test_the_running_api_logs_no_client_address(topics: str, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "api.log"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": topics, "PLIETSCH_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "info"], cwd=ROOT, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/public/summary"), 60, "the API")
        access = wait_for(lambda: [x for x in log.read_text().splitlines() if "GET /public/summary" in x], 30,
                          "the access log line")
        assert all("127.0.0.1" not in x and "client-" in x for x in access), access
    finally:
        proc.terminate()
        proc.wait(20)


def _get(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _hour(metric: str, group: str, start: datetime, shard: int, total: float, count: int) -> tuple[str, bytes]:
    p = Partial(metric, group, start, 3600, shard, total=total, count=count, minimum=0.0, maximum=total, rev=1)
    return p.key, aggregate_record(p, json.dumps(p.to_json()))


def test_the_kiosk_curve_of_parking_is_the_hours_occupancy_and_only_where_enough_spaces_hide_who_parked(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The day's parking curve on the Info-Cube: per hour occupied over offered spaces, summed over both shards'
    readings of the hour; none for a neighbourhood whose car parks offer fewer than 20 spaces."""
    out = Out(broker.bootstrap_servers)
    out.send(AGGREGATES.name, *_parking(HOOD, 3, 8))
    out.send(AGGREGATES.name, *_parking(FRIEDRICHSORT, 30, 120))
    hours = [T + timedelta(hours=h) for h in range(3)]
    for h, start in enumerate(hours):  # Friedrichsort: shard 0 and 1 each; occupied (30 + 10 h) of 120 per reading
        for shard, readings in ((0, 2), (1, 1)):
            out.send(AGGREGATES.name, *_hour("parking_occupied_spaces", FRIEDRICHSORT, start, shard,
                                             (30 + 10 * h) * readings, readings))
            out.send(AGGREGATES.name, *_hour("parking_capacity_spaces", FRIEDRICHSORT, start, shard, 120 * readings, readings))
        out.send(AGGREGATES.name, *_hour("parking_occupied_spaces", HOOD, start, 0, 3, 1))
        out.send(AGGREGATES.name, *_hour("parking_capacity_spaces", HOOD, start, 0, 8, 1))
    out.send(AGGREGATES.name, *_hour("parking_capacity_spaces", FRIEDRICHSORT, T - timedelta(hours=30), 0, 120, 1))
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, region_pack=BUNDLED_DIR / "kiel", data_dir=tmp_path))
    with TestClient(app) as c:  # no credentials: the public
        def curves() -> dict | None:
            doc = c.get("/public/kiosk").json()["curves"]
            return doc if len(doc["friedrichsort"]["parking_occupancy_pct_hourly"]) == 3 else None

        got = wait_for(curves, 60, "three hours of Friedrichsort's parking curve on the kiosk")
        assert got["friedrichsort"]["parking_occupancy_pct_hourly"] == [[t.isoformat(), pct] for t, pct in
                                                                        zip(hours, (25, 33, 42), strict=True)]
        assert got["gaarden"]["parking_occupancy_pct_hourly"] == []  # 8 spaces: under the 20 the rule asks for
        assert "car-park" not in json.dumps(got)
