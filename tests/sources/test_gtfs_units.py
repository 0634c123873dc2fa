"""GTFS static schedule and GTFS-Realtime conversion without I/O: the SYNTHETIC Kiel fixture (tests/fixtures/gtfs/kiel,
5 stops in Gaarden, Friedrichsort and at the Hauptbahnhof, 2 routes) and FeedMessages built with gtfs-realtime-bindings."""

from __future__ import annotations

import shutil
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from google.transit import gtfs_realtime_pb2 as rt

from streams.sources.gtfs.realtime import (
    FeedError,
    board,
    decode,
    entity_name,
    service_alerts,
    trip_updates,
    vehicle_positions,
)
from streams.sources.gtfs.static import GtfsError, Schedule, load_schedule
from tests.helpers import ROOT

FIX = ROOT / "tests" / "fixtures" / "gtfs" / "kiel"
BERLIN = ZoneInfo("Europe/Berlin")
# Tuesday 24 Nov 2026, 10:05 in Kiel: trip syn-11-a-1000 left Gaarden, Vinetaplatz at 10:00, is due at Hbf at 10:06
NOW = datetime(2026, 11, 24, 10, 5, tzinfo=BERLIN)


def zipped(src: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as z:
        for p in sorted(src.glob("*.txt")):
            z.write(p, f"feed/{p.name}")  # in a folder inside the zip, as some publishers do
    return dest


@pytest.fixture(scope="module")
def schedule(tmp_path_factory: pytest.TempPathFactory) -> Schedule:
    return load_schedule(zipped(FIX, tmp_path_factory.mktemp("gtfs") / "kiel.zip"))


def feed(*entities: rt.FeedEntity, ts: int | None = None) -> rt.FeedMessage:
    msg = rt.FeedMessage()
    msg.header.gtfs_realtime_version = "2.0"
    msg.header.timestamp = ts if ts is not None else int(NOW.timestamp())
    msg.entity.extend(entities)
    return rt.FeedMessage.FromString(msg.SerializeToString())  # through the wire format, as the source gets it


def trip_update(eid: str, trip: str, *stops: tuple[int, str, int | None], ts: int = 0, cancelled: bool = False,
                skipped: int | None = None) -> rt.FeedEntity:
    """A TripUpdate entity; *stops* are (stop_sequence, stop_id, departure delay in s or None for NO_DATA)."""
    e = rt.FeedEntity(id=eid)
    tu = e.trip_update
    tu.trip.trip_id = trip
    if cancelled:
        tu.trip.schedule_relationship = rt.TripDescriptor.CANCELED
    if ts:
        tu.timestamp = ts
    for seq, stop, delay in stops:
        u = tu.stop_time_update.add(stop_sequence=seq, stop_id=stop)
        if seq == skipped:
            u.schedule_relationship = rt.TripUpdate.StopTimeUpdate.SKIPPED
        elif delay is None:
            u.schedule_relationship = rt.TripUpdate.StopTimeUpdate.NO_DATA
        else:
            u.departure.delay = delay
    return e


def vehicle(eid: str, vid: str, trip: str, lat: float, lon: float, ts: int) -> rt.FeedEntity:
    e = rt.FeedEntity(id=eid)
    v = e.vehicle
    v.vehicle.id, v.vehicle.label = vid, f"Wagen {vid}"
    if trip:
        v.trip.trip_id = trip
    v.position.latitude, v.position.longitude, v.position.bearing = lat, lon, 90.0
    v.timestamp = ts
    return e


def test_the_synthetic_kiel_schedule_loads_from_a_zip(schedule: Schedule) -> None:
    assert len(schedule.stops) == 5 and schedule.routes == {"syn-11": "11", "syn-60": "60"}
    assert all("SYNTHETIC" in s.name for s in schedule.stops.values())
    assert schedule.timezone.key == "Europe/Berlin" and len(schedule.trips) == 114
    assert schedule.runs_on("daily", NOW.date())
    assert not schedule.runs_on("daily", datetime(2026, 12, 25).date())  # calendar_dates.txt removes Christmas Day
    assert [st.stop_id for st in schedule.by_trip["syn-11-a-1000"]] == [
        "gaarden-vinetaplatz", "kiel-hbf", "friedrichsort-pries", "friedrichsort-faehre"]


@pytest.mark.parametrize(("file", "edit", "expected"), [
    ("stops.txt", lambda t: t.replace("54.3937,", "north,"), "stops.txt row 5, field stop_lat: 'north' is not a number"),
    ("stop_times.txt", lambda t: t.replace("10:06:00,10:06:00", "10:6,10:6"),
     "stop_times.txt row "),
    ("stop_times.txt", lambda t: t.replace("syn-11-a-0500,", "nope,", 1), "stop_times.txt row 1, field trip_id: 'nope' "
                                                                         "is not in trips.txt"),
    ("trips.txt", lambda t: t.replace("syn-60,", "syn-99,", 1), "field route_id: 'syn-99' is not in routes.txt"),
    ("calendar.txt", lambda t: t.replace("20301231", "2030-12-31"), "calendar.txt row 1, field end_date: '2030-12-31' "
                                                                    "is not a date YYYYMMDD"),
    ("agency.txt", lambda t: t.replace("Europe/Berlin", "Europe/Kiel"), "agency_timezone: 'Europe/Kiel' is not a time zone"),
    ("routes.txt", None, "routes.txt missing"),
])
def test_a_defect_of_the_schedule_names_file_row_and_field(tmp_path: Path, file: str, edit: object, expected: str) -> None:
    feed_dir = tmp_path / "feed"
    shutil.copytree(FIX, feed_dir)
    if edit is None:
        (feed_dir / file).unlink()
    else:
        (feed_dir / file).write_text(edit((feed_dir / file).read_text()))  # type: ignore[operator]
    with pytest.raises(GtfsError) as err:
        load_schedule(feed_dir)
    assert expected in str(err.value) and str(feed_dir) in str(err.value)
    if file == "stop_times.txt" and "10:6" in (feed_dir / file).read_text():
        assert "field departure_time: '10:6' is not a time HH:MM:SS" in str(err.value)


def test_not_a_zip_and_a_missing_feed_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "feed.zip"
    bad.write_text("<html>404</html>")
    with pytest.raises(GtfsError, match="is not a zip file"):
        load_schedule(bad)
    with pytest.raises(GtfsError, match="does not exist; set PLIETSCH_GTFS_STATIC"):
        load_schedule(tmp_path / "none.zip")


def test_undecodable_bytes_and_a_message_without_header_are_refused() -> None:
    with pytest.raises(FeedError, match="not a GTFS-Realtime FeedMessage"):
        decode(b"\xff\xff\xff not protobuf")
    with pytest.raises(FeedError, match="gtfs_realtime_version"):
        decode(b"")  # an empty body parses as an empty message: no header


def test_the_board_shows_schedule_estimate_and_delay_with_propagation(schedule: Schedule) -> None:
    updates: dict = {}
    last: dict[str, int] = {}
    # 2 minutes late at Vinetaplatz (seq 1), which propagates to Hbf (seq 2) and on; NO_DATA from Pries (seq 3)
    out = trip_updates(feed(trip_update("u1", "syn-11-a-1000", (1, "gaarden-vinetaplatz", 120),
                                        (3, "friedrichsort-pries", None))), schedule, updates, last)
    assert out.trips == 1 and not out.dead
    hbf = board(schedule, updates, "kiel-hbf", NOW, horizon_s=1800)
    first = hbf[0]
    assert first == {"trip_id": "syn-11-a-1000", "route": "11", "headsign": "Friedrichsort, Fähre",
                     "scheduled": "2026-11-24T10:06:00+01:00", "estimated": "2026-11-24T10:08:00+01:00", "delay_s": 120,
                     "realtime": True, "cancelled": False, "service_day": "2026-11-24"}
    assert all(not d["realtime"] for d in hbf[1:])  # the others by the timetable only
    assert [d["scheduled"][11:16] for d in hbf] == ["10:06", "10:15", "10:22", "10:24"]
    pries = board(schedule, updates, "friedrichsort-pries", NOW, horizon_s=1800)
    assert pries[0]["trip_id"] == "syn-11-a-1000" and pries[0]["estimated"] is None  # NO_DATA: no estimate


def test_cancelled_trips_and_skipped_stops_are_marked_and_gone_departures_left_out(schedule: Schedule) -> None:
    updates: dict = {}
    trip_updates(feed(trip_update("c", "syn-60-a-1015", cancelled=True),
                      trip_update("s", "syn-11-a-1000", (1, "gaarden-vinetaplatz", 0), (2, "kiel-hbf", 0), skipped=2)),
                 schedule, updates, {})
    hbf = {d["trip_id"]: d for d in board(schedule, updates, "kiel-hbf", NOW, horizon_s=1800)}
    assert hbf["syn-11-a-1000"]["cancelled"] and hbf["syn-60-a-1015"]["cancelled"]
    later = board(schedule, updates, "kiel-hbf", NOW + timedelta(minutes=10), horizon_s=1800)
    assert "syn-11-a-1000" not in {d["trip_id"] for d in later}  # 10:06 is gone at 10:15


def test_trip_updates_dedupe_by_timestamp_and_dead_letter_unknown_trips_and_stops(schedule: Schedule) -> None:
    updates: dict = {}
    last: dict[str, int] = {}
    ts = int(NOW.timestamp())
    msg = feed(trip_update("a", "syn-11-a-1000", (1, "gaarden-vinetaplatz", 60), ts=ts),
               trip_update("b", "no-such-trip", (1, "kiel-hbf", 60), ts=ts),
               trip_update("c", "syn-11-a-1030", (1, "atlantis", 60), ts=ts))
    out = trip_updates(msg, schedule, updates, last)
    assert out.trips == 1 and set(updates) == {"syn-11-a-1000"}
    reasons = {d.error_type: d.reason for d in out.dead}
    assert set(reasons) == {"unknown_trip", "unknown_stop"}
    assert "trip 'no-such-trip' is not in the static schedule" in reasons["unknown_trip"]
    assert "updates stop(s) 'atlantis'" in reasons["unknown_stop"]
    again = trip_updates(msg, schedule, updates, last)  # the same (entity, timestamp): nothing new, no new dead letter
    assert again.duplicates == 3 and again.trips == 0 and not again.dead


def test_vehicle_positions_become_vehicle_states_once_per_timestamp(schedule: Schedule) -> None:
    last: dict[str, int] = {}
    ts = int(NOW.timestamp())
    msg = feed(vehicle("v1", "4711", "syn-11-a-1000", 54.3146, 10.1390, ts), vehicle("v2", "K/12 34", "", 54.33, 10.15, ts),
               vehicle("v3", "99", "ghost-trip", 54.32, 10.14, ts))
    out = vehicle_positions(msg, schedule, "kiel", last)
    states = {str(e): (rev, s) for e, rev, s in out.states}
    rev, bus = states["kiel:_:vehicle:bus-4711"]
    assert rev == ts and bus["route"] == "11" and bus["headsign"] == "Friedrichsort, Fähre" and bus["lat"] == 54.3146
    assert bus["label"] == "Wagen 4711" and bus["bearing_deg"] == 90.0 and bus["observed_at"] == NOW.astimezone(UTC).isoformat()
    assert bus["synthetic"] is True  # the SYNTHETIC schedule: the viewer says so on every bus
    odd = f"kiel:_:vehicle:{entity_name('K/12 34', 'bus-')}"  # characters an id does not allow: replaced, hash added
    assert odd in states and states[odd][1]["route"] is None
    assert [d.error_type for d in out.dead] == ["unknown_trip"] and "ghost-trip" in out.dead[0].reason
    assert vehicle_positions(msg, schedule, "kiel", last).duplicates == 3
    undated = vehicle_positions(feed(vehicle("v9", "9", "", 54.3, 10.1, 0), ts=0), schedule, "kiel", {})
    assert [d.error_type for d in undated.dead] == ["no_timestamp"] and not undated.states
    moved = feed(vehicle("v1", "4711", "syn-11-a-1000", 54.32, 10.14, ts + 30))
    assert [s["lat"] for _, _, s in vehicle_positions(moved, schedule, "kiel", last).states] == [54.32]


def alert(eid: str, *, route: str = "", stop: str = "", trip: str = "", texts: tuple[tuple[str, str], ...] = (),
          period: tuple[int, int] | None = None) -> rt.FeedEntity:
    """An Alert entity naming one route, stop or trip, with header translations (language, text)."""
    e = rt.FeedEntity(id=eid)
    a = e.alert
    sel = a.informed_entity.add()
    if route:
        sel.route_id = route
    if stop:
        sel.stop_id = stop
    if trip:
        sel.trip.trip_id = trip
    for lang, text in texts:
        a.header_text.translation.add(text=text, language=lang)
    a.cause, a.effect = rt.Alert.CONSTRUCTION, rt.Alert.DETOUR
    if period:
        a.active_period.add(start=period[0], end=period[1])
    return e


def test_service_alerts_go_onto_the_affected_stops_with_german_and_english_headers_only(schedule: Schedule) -> None:
    ts = int(NOW.timestamp())
    msg = feed(alert("a-route", route="syn-60", texts=(("de", "Umleitung Linie 60"), ("en-GB", "Line 60 diverted"),
                                                       ("fr", "Déviation"), ("", "untagged"))),
               alert("a-stop", stop="kiel-hbf", texts=(("de", "Aufzug defekt"),), period=(ts - 60, ts + 3600)),
               alert("a-over", stop="kiel-hbf", texts=(("de", "vorbei"),), period=(ts - 7200, ts - 3600)),
               alert("a-ghost", stop="atlantis", texts=(("de", "x"),)))
    by_stop, dead_letters = service_alerts(msg, schedule, ts)
    route60 = {st.stop_id for t in schedule.trips.values() if t.route_id == "syn-60" for st in schedule.by_trip[t.trip_id]}
    assert {s for s, items in by_stop.items() if any(i["alert_id"] == "a-route" for i in items)} == route60
    hbf = {i["alert_id"]: i for i in by_stop["kiel-hbf"]}
    assert set(hbf) == {"a-route", "a-stop"}  # the one that has ended is left out
    assert hbf["a-route"] == {"alert_id": "a-route", "header": {"de": "Umleitung Linie 60", "en": "Line 60 diverted"},
                              "cause": "CONSTRUCTION", "effect": "DETOUR", "routes": ["60"], "active_until": None}
    assert hbf["a-stop"]["routes"] == [] and hbf["a-stop"]["active_until"] == datetime.fromtimestamp(ts + 3600, UTC).isoformat()
    assert [d.error_type for d in dead_letters] == ["unknown_stop"] and "'atlantis'" in dead_letters[0].reason
