"""Server-sent events over the real API process: snapshot, ordered deltas, filters, resume without gaps."""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from schemas.codec import SingleObjectCodec
from streams.catalogue import SENSOR_TOPICS
from streams.publisher import EventPublisher
from tests.api.readside import metric
from tests.credentials import OPERATOR
from tests.helpers import SSE_SENSORS, Worker, sse_burst_station, start_api, wait_for
from twin.events import BikeStationStatusReported
from twin.region import load_pack

pytestmark = pytest.mark.broker
FR1, FR2, GA = SSE_SENSORS


def sse(response: httpx.Response) -> Iterator[dict]:
    return _sse_lines(response.iter_lines())


def _sse_lines(lines: Iterator[str]) -> Iterator[dict]:
    ev: dict = {}
    for line in lines:
        if not line:
            if "event" in ev:
                ev["data"] = json.loads(ev["data"]) if ev.get("data") else None
                yield ev
            ev = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(": ")
            ev[k] = v


def send(worker: Worker, t: datetime, bikes: int, *sensors: str, times: int = 1) -> None:
    """A reading of each of *sensors* at *t*, *bikes* bikes; with *times*, that many rounds a minute apart (bikes + i)."""
    pub = EventPublisher(worker.bootstrap, SingleObjectCodec())
    for i in range(times):
        for sid in sensors:
            pub.send(SENSOR_TOPICS["bike_share"].name, sid, BikeStationStatusReported(
                entity_id=sid, region="kiel", occurred_at=t + timedelta(minutes=i), source="sse-test",
                bikes_available=bikes + i, docks_available=3))
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



def _raw_stream(url: str, path: str) -> socket.socket:
    """A live stream opened on a socket with a small receive window, not read yet."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window stays small
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {OPERATOR['Authorization']}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    return sock


def _follow(client: httpx.Client, params: dict, after: int, until: dict[str, str],
            events: Iterator[dict] | None = None) -> list[int]:
    """Deltas after *after* (from *events*, a stream already open, if given) until every sensor in *until* has its
    reading of that time, resuming with Last-Event-ID whenever the stream says ``resume`` (as a browser's EventSource
    does by itself); the sequence numbers seen, asserting that no sensor's time goes back."""
    seen: dict[str, str] = {}
    seqs: list[int] = []

    def take(evs: Iterator[dict]) -> bool:
        nonlocal after
        for ev in evs:
            if ev["event"] == "resume":
                assert ev["data"]["after"] == after
                return False
            assert ev["event"] == "entity", ev  # no snapshot: the read model still buffers what was missed
            after = int(ev["id"])
            seqs.append(after)
            sid, at = ev["data"]["entity_id"], ev["data"]["data"]["state"]["observed_at"]
            assert at > seen.get(sid, ""), f"{sid} went back from {seen.get(sid)} to {at}"
            seen[sid] = at
            if all(seen.get(k) == v for k, v in until.items()):
                return True
        return False

    if events is not None and take(events):
        return seqs
    while True:
        with client.stream("GET", "/stream", params=params, headers={"Last-Event-ID": str(after)}) as r:
            if take(sse(r)):
                return seqs


def test_slow_clients_are_cut_off_told_to_resume_and_never_hold_up_the_others(
        worker: Worker, big_pack_dir: Path, tmp_path: Path) -> None:
    """An API whose subscribers may queue 5 deltas, and a burst of 1,000 readings of Friedrichsort's 25 bike stations:
    a client that read nothing during the burst is told to resume from the last sequence it has and gets the rest from
    there; a client beside it gets every station's newest reading, in order and without a gap (resuming where the
    stream tells it to, as EventSource does). The cut-off of a connection that takes nothing is
    ``test_live_cutoff.py``'s."""
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=worker.bootstrap, PLIETSCH_REGION_PACK=str(big_pack_dir),
               PLIETSCH_DATA_DIR=str(tmp_path), **worker.api_env(), PLIETSCH_SUBSCRIBER_QUEUE="5")
    proc, url = start_api(env, tmp_path / "api.log", 90, lambda r: r.json()["status"] == "ok")
    stations = sorted(s.id for s in load_pack(big_pack_dir).sensors.values() if sse_burst_station(s))
    t, rounds = datetime(2032, 1, 1, tzinfo=UTC), 40
    until = dict.fromkeys(stations, (t + timedelta(minutes=rounds - 1)).isoformat())
    params = {"type": "sensor", "neighbourhood": "friedrichsort"}
    try:
        with httpx.Client(base_url=url, timeout=60, headers=OPERATOR) as client:
            slow = _raw_stream(url, "/stream?type=sensor&neighbourhood=friedrichsort")
            slow.settimeout(60)
            wait_for(lambda: metric(client.get("/metrics").text, "plietsch_sse_subscribers") == 1, 30, "the slow client")
            with client.stream("GET", "/stream", params=params) as r:
                events = sse(r)
                at = next(int(ev["id"]) for ev in events if ev["event"] == "snapshot_end")
                send(worker, t, 1, *stations, times=rounds)
                seqs = _follow(client, params, at, until, events)
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            # the slow client reads now: what it was sent, then the word to resume from the last of it
            resp = http.client.HTTPResponse(slow)
            resp.begin()
            assert resp.status == 200
            last, told = None, None
            for ev in _sse_lines(line.decode().rstrip("\r\n") for line in iter(resp.readline, b"")):
                if ev["event"] == "resume":
                    told = ev["data"]
                    break
                if "id" in ev:
                    last = int(ev["id"])
            assert told is not None and last is not None, "the slow client was never told to resume"
            assert told["after"] == last and f"Last-Event-ID {last}" in told["reason"]
            slow.close()
            rest = _follow(client, params, told["after"], until)
            assert rest == sorted(rest) and rest[0] > last
            assert (metric(client.get("/metrics").text, "plietsch_sse_cut_off_total", reason="fell_behind") or 0) >= 1
            wait_for(lambda: metric(client.get("/metrics").text, "plietsch_sse_subscribers") == 0, 10,
                     "no subscriber left")
        assert proc.poll() is None
        assert "Traceback" not in (tmp_path / "api.log").read_text()
    finally:
        proc.terminate()
        proc.wait(20)
