"""Benchmark: the GTFS source's work per round on a schedule of a city's size (SYNTHETIC, generated here).

Run: ``.venv/bin/python -m bench.gtfs_boards [--stops 700 --routes 40]``. Writes a GTFS folder (routes of 15 stops,
both directions, a trip every 10 minutes from 05:00 to 24:00), then measures
1. loading the schedule (``load_schedule``: csv, checks, indexes);
2. one TripUpdates feed (a delay for every trip under way, as a busy city's feed has) decoded and taken;
3. one round of departure boards for every stop (``board`` per stop), the work after each TripUpdates poll.
Baseline of the same run: the boards without any realtime update (the timetable alone). No Kafka: the source's own
work only (the flush is the publisher's, measured elsewhere).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from google.transit import gtfs_realtime_pb2 as rt

from streams.sources.gtfs.realtime import Update, board, decode, trip_updates
from streams.sources.gtfs.static import Schedule, load_schedule

BERLIN = ZoneInfo("Europe/Berlin")


def write_schedule(root: Path, n_stops: int, n_routes: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    stops = [f"s{i}" for i in range(n_stops)]
    (root / "agency.txt").write_text("agency_id,agency_name,agency_url,agency_timezone\n"
                                     "B,SYNTHETIC bench agency,https://example.invalid,Europe/Berlin\n")
    (root / "stops.txt").write_text("stop_id,stop_name,stop_lat,stop_lon\n" + "".join(
        f"{s},Stop {s} (SYNTHETIC),{54.28 + rng.random() * 0.2:.5f},{10.0 + rng.random() * 0.3:.5f}\n" for s in stops))
    (root / "routes.txt").write_text("route_id,route_short_name,route_type\n" + "".join(
        f"r{i},{i + 1},3\n" for i in range(n_routes)))
    (root / "calendar.txt").write_text("service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,"
                                       "end_date\nall,1,1,1,1,1,1,1,20200101,20351231\n")
    trips, times = ["route_id,service_id,trip_id,trip_headsign"], ["trip_id,arrival_time,departure_time,stop_id,stop_sequence"]
    for r in range(n_routes):
        line = rng.sample(stops, 15)
        for direction, seq in ((0, line), (1, line[::-1])):
            for start in range(5 * 60, 24 * 60, 10):
                tid = f"r{r}-{direction}-{start}"
                trips.append(f"r{r},all,{tid},{seq[-1]}")
                for i, stop in enumerate(seq):
                    m = start + 2 * i
                    hms = f"{m // 60:02d}:{m % 60:02d}:00"
                    times.append(f"{tid},{hms},{hms},{stop},{i + 1}")
    (root / "trips.txt").write_text("\n".join(trips) + "\n")
    (root / "stop_times.txt").write_text("\n".join(times) + "\n")


def running_trips(schedule: Schedule, now: datetime) -> list[str]:
    base = int(schedule.day_start(now.date()).timestamp())
    t = int(now.timestamp()) - base
    return [tid for tid, sts in schedule.by_trip.items() if sts[0].departure_s - 600 <= t <= sts[-1].departure_s]


def feed_for(trips: list[str], now: datetime) -> bytes:
    msg = rt.FeedMessage()
    msg.header.gtfs_realtime_version = "2.0"
    msg.header.timestamp = int(now.timestamp())
    for i, tid in enumerate(trips):
        e = msg.entity.add(id=f"tu{i}")
        e.trip_update.trip.trip_id = tid
        u = e.trip_update.stop_time_update.add(stop_sequence=1 + i % 5)
        u.departure.delay = 30 * (i % 11)
    return msg.SerializeToString()


def boards(schedule: Schedule, updates: dict[str, Update], now: datetime) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = sum(len(board(schedule, updates, sid, now)) for sid in schedule.stops)
    return time.perf_counter() - t0, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stops", type=int, default=700)
    ap.add_argument("--routes", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    print(f"load {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")  # noqa: T201
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_schedule(root, a.stops, a.routes)
        t0 = time.perf_counter()
        schedule = load_schedule(root)
        load_s = time.perf_counter() - t0
    n_times = sum(len(v) for v in schedule.by_trip.values())
    print(f"schedule: {len(schedule.stops)} stops, {len(schedule.trips)} trips, {n_times} stop times; "  # noqa: T201
          f"loaded in {load_s:.2f} s")
    now = datetime(2026, 11, 24, 8, 0, tzinfo=BERLIN)  # a Tuesday's morning peak
    trips = running_trips(schedule, now)
    body = feed_for(trips, now)
    for label, with_rt in (("baseline (timetable only)", False), ("with TripUpdates", True)):
        best_take, best_boards, rows = float("inf"), float("inf"), 0
        for _ in range(a.repeat):
            updates: dict[str, Update] = {}
            if with_rt:
                t0 = time.perf_counter()
                trip_updates(decode(body), schedule, updates, {})
                best_take = min(best_take, time.perf_counter() - t0)
            took, rows = boards(schedule, updates, now)
            best_boards = min(best_boards, took)
        take = f"feed of {len(trips)} trip updates ({len(body) / 1024:.0f} KiB) taken in {best_take * 1000:.1f} ms; " \
            if with_rt else ""
        print(f"{label}: {take}boards for {len(schedule.stops)} stops ({rows} departures) in "  # noqa: T201
              f"{best_boards * 1000:.0f} ms (best of {a.repeat})")


if __name__ == "__main__":
    main()
