"""Server-sent events over the real API process: snapshot, ordered deltas, filters, resume without gaps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from schemas.codec import SingleObjectCodec
from streams.catalogue import SENSOR_TOPICS
from streams.publisher import EventPublisher
from tests.api.readside import metric
from tests.credentials import OPERATOR
from tests.helpers import SSE_SENSORS, Worker, wait_for
from twin.events import BikeStationStatusReported

pytestmark = pytest.mark.broker
FR1, FR2, GA = SSE_SENSORS


def sse(response: httpx.Response) -> Iterator[dict]:
    ev: dict = {}
    for line in response.iter_lines():
        if not line:
            if "event" in ev:
                ev["data"] = json.loads(ev["data"]) if ev.get("data") else None
                yield ev
            ev = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(": ")
            ev[k] = v


def send(worker: Worker, t: datetime, bikes: int, *sensors: str) -> None:
    pub = EventPublisher(worker.bootstrap, SingleObjectCodec())
    for sid in sensors:
        pub.send(SENSOR_TOPICS["bike_share"].name, sid, BikeStationStatusReported(
            entity_id=sid, region="kiel", occurred_at=t, source="sse-test", bikes_available=bikes, docks_available=3))
    pub.flush()


def test_snapshot_then_filtered_deltas_and_resume(api_url: str, worker: Worker) -> None:
    t = datetime(2031, 1, 1, tzinfo=UTC)
    send(worker, t, 1, FR1, FR2, GA)
    params = {"type": "sensor", "neighbourhood": "friedrichsort"}
    with httpx.Client(base_url=api_url, timeout=30, headers=OPERATOR) as client:
        wait_for(lambda: all(client.get(f"/entities/{s}").json()["properties"].get("reported", {}).get("observed_at", "")
                             .startswith("2031") for s in SSE_SENSORS), 60, "the first readings in the API")
        with client.stream("GET", "/stream", params=params) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse(r)
            snap = []
            for ev in events:
                if ev["event"] == "snapshot_end":
                    at = int(ev["id"])
                    break
                snap.append(ev)
            assert snap and all(e["event"] == "snapshot" for e in snap)
            ids = {e["data"]["entity_id"] for e in snap}
            assert all(":friedrichsort:sensor:" in i for i in ids) and GA not in ids
            send(worker, t + timedelta(minutes=1), 2, GA, FR1)
            first = next(events)
            assert first["event"] == "entity" and first["data"]["entity_id"] == FR1 and int(first["id"]) > at
            assert first["data"]["data"]["state"]["values"]["bikes_available"] == 2
            last_seen = int(first["id"])
            assert (metric(client.get("/metrics").text, "plietsch_sse_subscribers") or 0) >= 1
        # disconnected: what happens now must arrive on resume, in order and without gaps
        send(worker, t + timedelta(minutes=2), 3, FR2)
        send(worker, t + timedelta(minutes=3), 4, FR1)
        send(worker, t + timedelta(minutes=4), 5, FR2)
        with client.stream("GET", "/stream", params=params, headers={"Last-Event-ID": str(last_seen)}) as r:
            got = []
            latest: dict[str, int] = {}
            for ev in sse(r):
                assert ev["event"] == "entity", ev  # no snapshot on resume
                sid, bikes = ev["data"]["entity_id"], ev["data"]["data"]["state"]["values"]["bikes_available"]
                got.append(int(ev["id"]))
                assert bikes > latest.get(sid, 0), f"{sid} went back from {latest.get(sid)} to {bikes}"
                latest[sid] = bikes
                if latest == {FR1: 4, FR2: 5}:
                    break
        # what changed while away arrived, after the last id seen, in order (a worker batch may fold two readings of
        # one sensor into one update, so FR2's 3 may be folded into its 5)
        assert got == sorted(got) and len(set(got)) == len(got) and got[0] > last_seen
        with client.stream("GET", "/stream", params={"after": 10**9}) as r:
            assert next(sse(r))["event"] == "resync"
        assert client.get("/stream", params={"neighbourhood": "mars"}).status_code == 404
        assert client.get("/stream", params={"bbox": "1,2"}).status_code == 422


def test_rest_coast_alerts_aggregates_history_and_openapi(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=30, headers=OPERATOR) as c:
        coast = c.get("/coast").json()
        assert coast["type"] == "FeatureCollection" and coast["features"][0]["geometry"]["type"] == "LineString"
        surface = c.get("/regions/kiel/surface").json()
        assert {f["properties"]["kind"] for f in surface["features"]} == {"water", "land"}
        assert isinstance(c.get("/alerts", params={"public": True}).json(), list)
        assert isinstance(c.get("/aggregates", params={"latest": True}).json(), list)
        summary = c.get("/public/summary").json()
        assert {n["name"] for n in summary["neighbourhoods"]} == {"Gaarden", "Friedrichsort"}
        assert set(summary) == {"region", "synthetic_layers", "neighbourhoods", "coast", "alerts"}
        bad = c.get("/history/entities/kiel:gaarden:sensor:parking-001", params={"start": "2026-01-01T00:00:00",
                                                                                 "end": "2026-01-02T00:00:00+00:00"})
        assert bad.status_code == 422 and "no UTC offset" in bad.json()["detail"]
        backwards = c.get("/history/area", params={"bbox": "10,54,11,55", "start": "2026-01-02T00:00:00Z",
                                                   "end": "2026-01-01T00:00:00Z"})
        assert backwards.status_code == 200 and backwards.json()["total"] == 0  # an empty range (issue 15 item 6)
        ops = {op["operationId"] for path in c.get("/openapi.json").json()["paths"].values() for op in path.values()}
        assert {"list_entities", "get_entity", "stream_deltas", "list_coast_segments", "list_alerts", "list_aggregates",
                "entity_history", "area_history", "state_at", "public_summary", "health", "list_regions"} <= ops
