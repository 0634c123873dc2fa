"""The GTFS-Realtime source against a real local HTTP server serving VehiclePositions and TripUpdates feeds built with
gtfs-realtime-bindings (ETags, scripted failures, a broken body), the SYNTHETIC Kiel schedule, and a real Kafka-protocol
broker (Tansu) of this module's own: buses and departure boards reach ``twin.updates``, dead letters ``dead-letters``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from google.transit import gtfs_realtime_pb2 as rt

from infra.broker import free_port
from schemas.codec import SingleObjectCodec
from streams.catalogue import DEAD_LETTERS, TWIN_UPDATES
from streams.publisher import EventPublisher
from streams.settings import StreamSettings
from streams.sources.gtfs.source import GtfsSettings, GtfsSource
from streams.sources.gtfs.static import load_schedule
from tests.helpers import wait_for
from tests.httpfake import LocalHttp
from tests.sources.test_gtfs_units import FIX, NOW, alert, feed, trip_update, vehicle
from tests.sources.threaded import SourceThread, decoded
from twin.region import load_pack

pytestmark = pytest.mark.broker

PACK = load_pack(StreamSettings().region_pack)
SCHEDULE = load_schedule(FIX)
TS = int(NOW.timestamp())


class FakeRealtime(LocalHttp):
    """``/vehicle_positions.pb`` and ``/trip_updates.pb`` with ETags; ``failures[name]`` are statuses answered first."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: dict[str, bytes] = {}
        self.failures: dict[str, list[int]] = {}
        self.requests: list[tuple[str, dict[str, str], int]] = []

    def set(self, name: str, msg: rt.FeedMessage | bytes) -> None:
        with self.lock:
            self.bodies[name] = msg if isinstance(msg, bytes) else msg.SerializeToString()

    def url(self, name: str) -> str:
        return f"{self.root}/{name}.pb"

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        name = h.path.rsplit("/", 1)[-1].removesuffix(".pb")
        with self.lock:
            fails = self.failures.get(name) or []
            status, body = (fails.pop(0), b"scripted failure") if fails else (200, self.bodies.get(name, b""))
            etag = '"' + hashlib.sha1(body).hexdigest() + '"'
            if status == 200 and h.headers.get("If-None-Match") == etag:
                status = 304
            self.requests.append((name, dict(h.headers.items()), status))
        self.send(h, status, body, {"ETag": etag} if status in (200, 304) else {}, "application/x-protobuf")

    def answered(self, name: str, status: int) -> list[dict[str, str]]:
        with self.lock:
            return [hd for n, hd, st in self.requests if n == name and st == status]


@pytest.fixture
def fake() -> Iterator[FakeRealtime]:
    f = FakeRealtime()
    yield f
    f.close()


class Running(SourceThread):
    """A GtfsSource in a thread of the test process (real HTTP, real Kafka), its clock fixed at NOW."""

    def __init__(self, fake: FakeRealtime, bootstrap: str, data_dir: Path | None = None, **extra: Any) -> None:
        values: dict[str, Any] = dict(static=FIX, vehicle_positions_url=fake.url("vehicle_positions"),
                                      trip_updates_url=fake.url("trip_updates"), interval_s=0.2, backoff_base_s=0.05,
                                      backoff_cap_s=1.0, metrics_port=free_port())
        settings = GtfsSettings(**{**values, **extra})
        self.lines: list[str] = []
        self._start(GtfsSource(settings, SCHEDULE, PACK, EventPublisher(bootstrap, SingleObjectCodec(), linger_ms=5),
                               report=self.lines.append, clock=lambda: NOW, data_dir=data_dir))


def updates(bootstrap: str, kind: str) -> list[dict[str, Any]]:
    return [{**rec, "state": json.loads(rec["state_json"])} for rec, _ in decoded(bootstrap, TWIN_UPDATES.name)
            if rec["entity_type"] == kind and rec["source"] == "gtfs"]


def dead_letters(bootstrap: str) -> list[dict[str, Any]]:
    return [{**rec, "_headers": headers} for rec, headers in decoded(bootstrap, DEAD_LETTERS.name)
            if rec["original_topic"].startswith("gtfs-rt:")]


def test_buses_and_boards_reach_the_twin_once_and_bad_input_is_dead_lettered(fake: FakeRealtime, bootstrap: str) -> None:
    fake.set("vehicle_positions", feed(vehicle("e1", "4711", "syn-11-a-1000", 54.3146, 10.139, TS),
                                       vehicle("e2", "666", "ghost-trip", 54.32, 10.14, TS)))
    fake.set("trip_updates", feed(trip_update("t1", "syn-11-a-1000", (1, "gaarden-vinetaplatz", 120), ts=TS)))
    fake.failures["trip_updates"] = [503, 429]  # transient: retried with backoff, never a dead letter
    src = Running(fake, bootstrap, stops="kiel-hbf,gaarden-vinetaplatz,friedrichsort-faehre")
    try:
        wait_for(lambda: src.value("plietsch_gtfs_updates_published_total", kind="stop") == 3, 20, "3 boards")
        wait_for(lambda: len(fake.answered("vehicle_positions", 304)) >= 2, 15, "conditional requests answered 304")
        assert fake.answered("vehicle_positions", 304)[-1]["If-None-Match"].startswith('"')
        assert src.value("plietsch_gtfs_updates_published_total", kind="vehicle") == 1
        assert src.value("plietsch_gtfs_retries_total", cause="http") == 2
        # the bus moves, the delay grows: one vehicle update, and the two boards the trip is still to reach (Hbf, the
        # terminus); Vinetaplatz's board stays as it was (the bus has left: 10:04 at 10:05)
        fake.set("vehicle_positions", feed(vehicle("e1", "4711", "syn-11-a-1000", 54.315, 10.132, TS + 30), ts=TS + 30))
        fake.set("trip_updates", feed(trip_update("t1", "syn-11-a-1000", (1, "gaarden-vinetaplatz", 240), ts=TS + 30),
                                      ts=TS + 30))
        wait_for(lambda: src.value("plietsch_gtfs_updates_published_total", kind="vehicle") == 2, 15, "the bus moved")
        wait_for(lambda: src.value("plietsch_gtfs_updates_published_total", kind="stop") == 5, 15, "the new delay")
        fake.set("trip_updates", b"<html>502 Bad Gateway</html>")  # a body that is not a FeedMessage
        wait_for(lambda: src.value("plietsch_gtfs_dead_letters_total", reason="decode") == 1, 15, "the decode dead letter")
        wait_for(lambda: len(fake.answered("trip_updates", 304)) >= 1, 15, "the broken body asked again")
        assert src.value("plietsch_gtfs_dead_letters_total", reason="decode") == 1  # once, though polled again
        assert src.value("plietsch_gtfs_dead_letters_total", reason="unknown_trip") == 1
        assert src.value("plietsch_gtfs_up") == 1
    finally:
        src.stop()
    buses = updates(bootstrap, "vehicle")
    assert [(b["entity_id"], b["revision"], b["state"]["lat"], b["state"]["route"]) for b in buses] == [
        ("kiel:_:vehicle:bus-4711", TS, 54.3146, "11"), ("kiel:_:vehicle:bus-4711", TS + 30, 54.315, "11")]
    boards = updates(bootstrap, "stop")
    hbf = [b for b in boards if b["entity_id"] == "kiel:_:stop:kiel-hbf"]  # outside every neighbourhood: scope _
    assert [b["state"]["departures"][0]["delay_s"] for b in hbf] == [120, 240]
    assert hbf[0]["state"]["departures"][0]["estimated"] == "2026-11-24T10:08:00+01:00"
    assert {b["entity_id"] for b in boards} == {"kiel:_:stop:kiel-hbf", "kiel:gaarden:stop:gaarden-vinetaplatz",
                                                "kiel:friedrichsort:stop:friedrichsort-faehre"}
    dead = {d["error_type"]: d for d in dead_letters(bootstrap)}
    assert set(dead) == {"decode", "unknown_trip"}
    assert dead["decode"]["original_value"] == b"<html>502 Bad Gateway</html>"
    assert "not a GTFS-Realtime FeedMessage" in dead["decode"]["reason"] and dead["decode"]["_headers"]["error-type"] == "decode"
    assert "'ghost-trip'" in dead["unknown_trip"]["reason"] and dead["unknown_trip"]["original_topic"] == "gtfs-rt:vehicle_positions"
    assert rt.FeedEntity.FromString(dead["unknown_trip"]["original_value"]).vehicle.vehicle.id == "666"


def test_a_refused_url_is_said_once_and_retried_at_the_cap(fake: FakeRealtime, bootstrap: str) -> None:
    fake.set("vehicle_positions", feed())
    fake.failures["trip_updates"] = [404] * 50
    src = Running(fake, bootstrap, backoff_cap_s=0.3)
    try:
        wait_for(lambda: src.value("plietsch_gtfs_retries_total", cause="refused") >= 3, 15, "3 refused requests")
        assert src.value("plietsch_gtfs_failing", feed="trip_updates") == 1
    finally:
        src.stop()
    said = [line for line in src.lines if "HTTP 404" in line]
    assert len(said) == 1 and "check PLIETSCH_GTFS_TRIP_UPDATES_URL" in said[0]


def test_unknown_board_stop_is_refused_at_start(fake: FakeRealtime, bootstrap: str) -> None:
    with pytest.raises(ValueError, match="PLIETSCH_GTFS_STOPS names stop.*'atlantis'"):
        GtfsSource(GtfsSettings(static=FIX, stops="kiel-hbf,atlantis"), SCHEDULE, PACK,
                   EventPublisher(bootstrap, SingleObjectCodec()))


def test_without_realtime_feeds_the_boards_follow_the_timetable(bootstrap: str, tmp_path: Path) -> None:
    settings = GtfsSettings(static=FIX, interval_s=0.2, metrics_port=free_port())
    times = iter([NOW, NOW, datetime.fromisoformat("2026-11-24T10:07:00+01:00")])
    clock_now = [NOW]

    def clock() -> datetime:
        clock_now[0] = next(times, clock_now[0])
        return clock_now[0]

    src = GtfsSource(settings, SCHEDULE, PACK, EventPublisher(bootstrap, SingleObjectCodec(), linger_ms=5), clock=clock)
    assert set(src.feeds) == {"schedule"} and len(src.stops) == 5  # every stop of the fixture lies in the Kiel bbox
    assert src.refresh_boards() == 5
    assert src.refresh_boards() == 0  # same minute, same boards: nothing written
    assert src.refresh_boards() >= 1  # 10:07: the 10:06 departure at Hbf has gone


def today_trip(dest: Path, minutes: tuple[int, ...]) -> Path:
    """The fixture schedule plus trip 'syn-11-now' from Vinetaplatz to Hbf leaving *minutes* from now (local service
    day of today, hours past 24 where it runs over midnight, as GTFS writes them)."""
    import shutil

    shutil.copytree(FIX, dest)
    base = SCHEDULE.day_start(datetime.now(SCHEDULE.timezone).date())
    secs = int((datetime.now(SCHEDULE.timezone) - base).total_seconds())

    def hms(s: int) -> str:
        return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"

    with (dest / "trips.txt").open("a") as f:
        f.write("syn-11,daily,syn-11-now,Friedrichsort (SYNTHETIC),0\n")
    with (dest / "calendar_dates.txt").open("a") as f:  # runs today whatever the date
        f.write(f"daily,{datetime.now(SCHEDULE.timezone).date():%Y%m%d},1\n")
    with (dest / "stop_times.txt").open("a") as f:
        for i, (stop, m) in enumerate((("gaarden-vinetaplatz", minutes[0]), ("kiel-hbf", minutes[1])), start=1):
            f.write(f"syn-11-now,{hms(secs + m * 60)},{hms(secs + m * 60)},{stop},{i}\n")
    return dest


def test_the_departure_board_is_public_in_the_api(bootstrap: str, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from api.settings import ApiSettings
    from streams.sources.gtfs.realtime import trip_updates as take_trip_updates

    schedule = load_schedule(today_trip(tmp_path / "gtfs", (10, 16)))
    src = GtfsSource(GtfsSettings(static=tmp_path / "gtfs", stops="kiel-hbf,gaarden-vinetaplatz"), schedule, PACK,
                     EventPublisher(bootstrap, SingleObjectCodec(), linger_ms=5))
    take_trip_updates(feed(trip_update("n", "syn-11-now", (1, "gaarden-vinetaplatz", 180))), schedule, src.updates, {})
    # a service alert on line 11 (German, English and French: the French is not taken) and one naming no known stop
    src.take("alerts", feed(alert("works", route="syn-11", texts=(("de", "Baustelle: Umleitung"), ("en", "Road works: "
                                  "diversion"), ("fr", "Travaux"))), alert("ghost", stop="atlantis", texts=(("de", "x"),))))
    assert src.refresh_boards() == 2
    assert src.metrics.registry.get_sample_value("plietsch_gtfs_dead_letters_total", {"reason": "unknown_stop"}) == 1
    app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, region_pack=PACK.path, data_dir=tmp_path / "api",
                                 public_rate=10_000, public_burst=10_000))
    with TestClient(app) as c:
        got = wait_for(lambda: (r := c.get("/stops/kiel-hbf/departures")).status_code == 200 and r.json(), 60,
                       "the board in the read model")  # no login: the public role
        assert got["entity_id"] == "kiel:_:stop:kiel-hbf" and got["synthetic"] is True
        mine = [d for d in got["departures"] if d["trip_id"] == "syn-11-now"]
        assert len(mine) == 1 and mine[0]["delay_s"] == 180 and mine[0]["realtime"] and mine[0]["route"] == "11"
        assert datetime.fromisoformat(mine[0]["estimated"]) - datetime.fromisoformat(mine[0]["scheduled"]) == timedelta(
            minutes=3)
        assert got["alerts"] == [{"alert_id": "works", "header": {"de": "Baustelle: Umleitung", "en": "Road works: diversion"},
                                  "cause": "CONSTRUCTION", "effect": "DETOUR", "routes": ["11"], "active_until": None}]
        assert all(datetime.fromisoformat(d["estimated"] or d["scheduled"]) >= datetime.fromisoformat(got["now"])
                   for d in got["departures"])  # nothing that has gone
        hood = c.get("/stops/gaarden-vinetaplatz/departures", params={"limit": 1}).json()
        assert hood["entity_id"] == "kiel:gaarden:stop:gaarden-vinetaplatz" and len(hood["departures"]) <= 1
        missing = c.get("/stops/atlantis/departures")
        assert missing.status_code == 404 and "keine Abfahrtstafel" in missing.json()["detail"]
        assert c.get("/stops/kiel-hbf/departures", params={"limit": 0}).status_code == 422
        doc = c.get("/openapi.json").json()
        props = doc["components"]["schemas"]["Departure"]["properties"]
        assert props["delay_s"]["description"].startswith("Verspätung in Sekunden")
        assert "404" in doc["paths"]["/stops/{stop_id}/departures"]["get"]["responses"]


def test_a_restart_with_the_same_feeds_repeats_nothing(fake: FakeRealtime, bootstrap: str, tmp_path: Path) -> None:
    """The dedupe state (<data_dir>/gtfs/state.json) outlives the process: the same feeds after a restart give no new
    bus, board or dead letter; without the state file (a fresh data dir) the same feeds are written again."""
    fake.set("vehicle_positions", feed(vehicle("e1", "4711", "syn-11-a-1000", 54.3146, 10.139, TS),
                                       vehicle("e2", "666", "ghost-trip", 54.32, 10.14, TS)))
    fake.set("trip_updates", feed(trip_update("t1", "syn-11-a-1000", (1, "gaarden-vinetaplatz", 120), ts=TS),
                                  trip_update("t2", "syn-60-a-0615", (1, "atlantis", 60), ts=TS)))
    stops = "kiel-hbf,gaarden-vinetaplatz,friedrichsort-faehre"

    def written() -> tuple[int, int]:
        return len(updates(bootstrap, "vehicle") + updates(bootstrap, "stop")), len(dead_letters(bootstrap))

    def run(data: Path, until: str) -> Running:
        src = Running(fake, bootstrap, data_dir=data, stops=stops)
        try:
            for name in ("vehicle_positions", "trip_updates"):  # polled twice after the first: nothing left to come
                wait_for(lambda n=name: src.value("plietsch_gtfs_feeds_total", feed=n, outcome="unchanged") >= 2, 20,
                         f"{name} polled again ({until})")
        finally:
            src.stop()
        return src

    before = written()
    first = run(tmp_path / "data", "first run")
    assert first.value("plietsch_gtfs_updates_published_total", kind="vehicle") == 1
    assert first.value("plietsch_gtfs_updates_published_total", kind="stop") == 3
    assert first.value("plietsch_gtfs_dead_letters_total", reason="unknown_trip") == 1
    assert first.value("plietsch_gtfs_dead_letters_total", reason="unknown_stop") == 1
    after_first = written()
    assert after_first == (before[0] + 4, before[1] + 2)
    state = json.loads((tmp_path / "data" / "gtfs" / "state.json").read_text())
    assert state["feeds"] == {"vehicle_positions": TS, "trip_updates": TS} and len(state["boards"]) == 3
    assert not list((tmp_path / "data" / "gtfs").glob("*.tmp"))  # written, then renamed

    again = run(tmp_path / "data", "after the restart")
    assert any("took up the state of the last run" in line for line in again.lines), again.lines
    for name, labels in (("plietsch_gtfs_updates_published_total", {"kind": "vehicle"}),
                         ("plietsch_gtfs_updates_published_total", {"kind": "stop"}),
                         ("plietsch_gtfs_dead_letters_total", {"reason": "unknown_trip"}),
                         ("plietsch_gtfs_dead_letters_total", {"reason": "unknown_stop"})):
        assert again.value(name, **labels) == 0, (name, labels)
    assert written() == after_first  # nothing new on twin.updates nor dead-letters

    run(tmp_path / "fresh", "a fresh data dir")  # the control: without the state the same feeds are written again
    assert written() == (after_first[0] + 4, after_first[1] + 2)


def test_a_broken_state_file_is_refused_with_what_to_do(fake: FakeRealtime, bootstrap: str, tmp_path: Path) -> None:
    (tmp_path / "gtfs").mkdir()
    (tmp_path / "gtfs" / "state.json").write_text('{"feeds": {"vehicle_positions": 1}, "last": ')
    with pytest.raises(ValueError, match=r"GTFS state .*state.json is not readable .*delete it"):
        GtfsSource(GtfsSettings(static=FIX, vehicle_positions_url=fake.url("vehicle_positions")), SCHEDULE, PACK,
                   EventPublisher(bootstrap, SingleObjectCodec()), data_dir=tmp_path)


def test_the_state_forgets_buses_and_trips_not_heard_of_for_two_days(bootstrap: str, tmp_path: Path) -> None:
    from streams.sources.gtfs.realtime import trip_updates as take_trip_updates
    from streams.sources.gtfs.source import KEEP_S

    src = GtfsSource(GtfsSettings(static=FIX, stops="kiel-hbf"), SCHEDULE, PACK,
                     EventPublisher(bootstrap, SingleObjectCodec()), data_dir=tmp_path)
    take_trip_updates(feed(trip_update("old", "syn-11-a-1000", (1, "gaarden-vinetaplatz", 60), ts=TS - KEEP_S - 1),
                           trip_update("new", "syn-11-a-0500", (1, "gaarden-vinetaplatz", 60), ts=TS)),
                      SCHEDULE, src.updates, src.last)
    src.last["kiel:_:vehicle:bus-1"] = TS - KEEP_S + 1  # within the two days: kept
    src.save_state()
    saved = json.loads((tmp_path / "gtfs" / "state.json").read_text())
    assert set(saved["last"]) == {"trip|syn-11-a-0500", "kiel:_:vehicle:bus-1"} and set(saved["updates"]) == {"syn-11-a-0500"}
