"""A GTFS static feed (schedule) read from a zip or a folder: stops, routes, trips, stop_times, calendar and
calendar_dates, checked row by row (https://gtfs.org/documentation/schedule/reference/).

Read with the standard library's ``csv``: the feeds of a region are small (NAH.SH's whole Schleswig-Holstein feed is a
few hundred thousand stop times), the source needs them once at start as Python objects, and a row-by-row reader can
name the file, the row and the field of every defect; a columnar reader (pyarrow, duckdb) would give a faster load but
type errors without the row, and a GTFS library (gtfs-kit, partridge) brings pandas for what is a dozen dict lookups.
A defect stops the load with :class:`GtfsError` naming file, row (1 = the first data row, as a spreadsheet shows it
after the header) and field: a schedule with holes would give wrong departure boards.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

REQUIRED = ("agency.txt", "stops.txt", "routes.txt", "trips.txt", "stop_times.txt")


class GtfsError(ValueError):
    """The schedule cannot be used: the message names the feed, the file, the row and the field, and what to do."""


@dataclass(frozen=True)
class Stop:
    stop_id: str
    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Trip:
    trip_id: str
    route_id: str
    service_id: str
    headsign: str


@dataclass(frozen=True)
class StopTime:
    trip_id: str
    stop_id: str
    sequence: int
    departure_s: int  # seconds after the service day's reference (noon minus 12 h), may exceed 24 h


def route_order(name: str) -> tuple[int, str]:
    """Sort key of route short names as a timetable lists them: '2' before '11' before '100'."""
    return (len(name), name)


@dataclass
class Schedule:
    source: str
    timezone: ZoneInfo
    synthetic: bool = False  # an agency named SYNTHETIC: made-up test data, said so on every board
    stops: dict[str, Stop] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)  # route_id -> short name (else long name)
    trips: dict[str, Trip] = field(default_factory=dict)
    by_trip: dict[str, list[StopTime]] = field(default_factory=dict)  # in stop_sequence order
    by_stop: dict[str, list[StopTime]] = field(default_factory=dict)  # in departure order
    weekdays: dict[str, tuple[tuple[bool, ...], date, date]] = field(default_factory=dict)  # calendar.txt
    exceptions: dict[tuple[str, date], bool] = field(default_factory=dict)  # calendar_dates.txt: added/removed

    def runs_on(self, service_id: str, day: date) -> bool:
        extra = self.exceptions.get((service_id, day))
        if extra is not None:
            return extra
        cal = self.weekdays.get(service_id)
        return cal is not None and cal[1] <= day <= cal[2] and cal[0][day.weekday()]

    def day_start(self, day: date) -> datetime:
        """The reference of a service day: noon minus 12 h in the feed's time zone (GTFS: times count from there)."""
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=self.timezone)
        return noon - timedelta(hours=12)


def _rows(files: dict[str, bytes], source: str, name: str) -> Iterator[tuple[int, dict[str, str]]]:
    raw = files.get(name)
    if raw is None:
        return
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GtfsError(f"GTFS {source}: {name} is not UTF-8 ({exc}); GTFS files are UTF-8 CSV") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for n, row in enumerate(reader, start=1):
        yield n, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}


def _need(row: dict[str, str], source: str, name: str, n: int, key: str) -> str:
    value = row.get(key, "")
    if not value:
        raise GtfsError(f"GTFS {source}: {name} row {n}, field {key}: missing or empty (required by the GTFS reference)")
    return value


def _float(row: dict[str, str], source: str, name: str, n: int, key: str, lo: float, hi: float) -> float:
    value = _need(row, source, name, n, key)
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    if not lo <= x <= hi:
        raise GtfsError(f"GTFS {source}: {name} row {n}, field {key}: {value!r} is not a number from {lo} to {hi}")
    return x


def parse_gtfs_time(value: str) -> int:
    """``HH:MM:SS`` (hours may exceed 23) -> seconds; ValueError otherwise."""
    parts = value.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or int(parts[1]) > 59 or int(parts[2]) > 59:
        raise ValueError(value)
    return int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])


def _date(row: dict[str, str], source: str, name: str, n: int, key: str) -> date:
    value = _need(row, source, name, n, key)
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise GtfsError(f"GTFS {source}: {name} row {n}, field {key}: {value!r} is not a date YYYYMMDD") from None


def read_files(path: Path) -> dict[str, bytes]:
    """The .txt files of a GTFS zip or folder."""
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.glob("*.txt")}
    try:
        with zipfile.ZipFile(path) as z:
            # some publishers put the files in a folder inside the zip
            return {Path(i.filename).name: z.read(i) for i in z.infolist() if i.filename.endswith(".txt")}
    except FileNotFoundError:
        raise GtfsError(f"GTFS feed {path} does not exist; set PLIETSCH_GTFS_STATIC to the feed's zip (docs: README, "
                        "section GTFS)") from None
    except zipfile.BadZipFile as exc:
        raise GtfsError(f"GTFS feed {path} is not a zip file ({exc}); download the feed again") from None


def load_schedule(path: Path) -> Schedule:
    files = read_files(Path(path))
    src = str(path)
    missing = [f for f in REQUIRED if f not in files]
    if missing:
        raise GtfsError(f"GTFS {src}: {', '.join(missing)} missing (found {', '.join(sorted(files)) or 'no .txt file'})")
    if "calendar.txt" not in files and "calendar_dates.txt" not in files:
        raise GtfsError(f"GTFS {src}: neither calendar.txt nor calendar_dates.txt: no day has a service")
    tz_name, synthetic = "", False
    for n, row in _rows(files, src, "agency.txt"):
        tz_name = tz_name or _need(row, src, "agency.txt", n, "agency_timezone")
        synthetic = synthetic or "SYNTHETIC" in row.get("agency_name", "").upper()
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise GtfsError(f"GTFS {src}: agency.txt row 1, field agency_timezone: {tz_name!r} is not a time zone (e.g. "
                        "'Europe/Berlin')") from None
    s = Schedule(src, tz, synthetic)
    for n, row in _rows(files, src, "stops.txt"):
        sid = _need(row, src, "stops.txt", n, "stop_id")
        if row.get("location_type", "") not in ("", "0"):
            continue  # stations, entrances, nodes: no departures of their own
        s.stops[sid] = Stop(sid, row.get("stop_name", "") or sid, _float(row, src, "stops.txt", n, "stop_lat", -90, 90),
                            _float(row, src, "stops.txt", n, "stop_lon", -180, 180))
    for n, row in _rows(files, src, "routes.txt"):
        rid = _need(row, src, "routes.txt", n, "route_id")
        name = row.get("route_short_name") or row.get("route_long_name")
        if not name:
            raise GtfsError(f"GTFS {src}: routes.txt row {n}, field route_short_name: route {rid!r} has neither a "
                            "route_short_name nor a route_long_name")
        s.routes[rid] = name
    for n, row in _rows(files, src, "trips.txt"):
        tid, rid = _need(row, src, "trips.txt", n, "trip_id"), _need(row, src, "trips.txt", n, "route_id")
        if rid not in s.routes:
            raise GtfsError(f"GTFS {src}: trips.txt row {n}, field route_id: {rid!r} is not in routes.txt")
        s.trips[tid] = Trip(tid, rid, _need(row, src, "trips.txt", n, "service_id"), row.get("trip_headsign", ""))
    for n, row in _rows(files, src, "stop_times.txt"):
        tid, sid = _need(row, src, "stop_times.txt", n, "trip_id"), _need(row, src, "stop_times.txt", n, "stop_id")
        if tid not in s.trips:
            raise GtfsError(f"GTFS {src}: stop_times.txt row {n}, field trip_id: {tid!r} is not in trips.txt")
        if sid not in s.stops:
            raise GtfsError(f"GTFS {src}: stop_times.txt row {n}, field stop_id: {sid!r} is not a stop of stops.txt")
        seq = _need(row, src, "stop_times.txt", n, "stop_sequence")
        if not seq.isdigit():
            raise GtfsError(f"GTFS {src}: stop_times.txt row {n}, field stop_sequence: {seq!r} is not a whole number >= 0")
        key = "departure_time" if row.get("departure_time") else "arrival_time"
        value = row.get(key, "")
        if not value:
            continue  # an untimed stop between timepoints: no departure of its own to show
        try:
            secs = parse_gtfs_time(value)
        except ValueError:
            raise GtfsError(f"GTFS {src}: stop_times.txt row {n}, field {key}: {value!r} is not a time HH:MM:SS") from None
        st = StopTime(tid, sid, int(seq), secs)
        s.by_trip.setdefault(tid, []).append(st)
        s.by_stop.setdefault(sid, []).append(st)
    for sts in s.by_trip.values():
        sts.sort(key=lambda x: x.sequence)
    for sts in s.by_stop.values():
        sts.sort(key=lambda x: x.departure_s)
    for n, row in _rows(files, src, "calendar.txt"):
        days = []
        for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"):
            v = _need(row, src, "calendar.txt", n, d)
            if v not in ("0", "1"):
                raise GtfsError(f"GTFS {src}: calendar.txt row {n}, field {d}: {v!r} must be 0 or 1")
            days.append(v == "1")
        s.weekdays[_need(row, src, "calendar.txt", n, "service_id")] = (
            tuple(days), _date(row, src, "calendar.txt", n, "start_date"), _date(row, src, "calendar.txt", n, "end_date"))
    for n, row in _rows(files, src, "calendar_dates.txt"):
        kind = _need(row, src, "calendar_dates.txt", n, "exception_type")
        if kind not in ("1", "2"):
            raise GtfsError(f"GTFS {src}: calendar_dates.txt row {n}, field exception_type: {kind!r} must be 1 (added) "
                            "or 2 (removed)")
        s.exceptions[(_need(row, src, "calendar_dates.txt", n, "service_id"),
                      _date(row, src, "calendar_dates.txt", n, "date"))] = kind == "1"
    if not s.by_stop:
        raise GtfsError(f"GTFS {src}: stop_times.txt has no timed stop: no departure to show")
    return s
