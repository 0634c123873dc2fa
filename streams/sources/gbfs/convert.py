"""GBFS 3.0 documents into twin readings, dead letters and counts (no I/O here).

``station_status`` -> one ``BikeStationStatusReported`` per mapped station whose ``last_reported`` is newer than the
last one published: ``bikes_available`` = ``num_vehicles_available``, ``docks_available`` = ``num_docks_available``
(GBFS requires that field of every station with docks; a station without it has none, e.g. a virtual station of a
dockless system, so 0 free docks), ``occurred_at`` = ``last_reported``. The event id is derived from (system, station,
last_reported): a reading sent again after a crash carries the same id. ``vehicle_status`` -> vehicle counts per
station (``free_floating`` for vehicles parked outside any station) and status (available, reserved, disabled).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from streams.sources.gbfs.mapping import Mapping
from streams.sources.gbfs.validate import Problem, parse_time
from streams.sources.polling import source_dead_letter
from twin.events import BikeStationStatusReported, DeadLettered

PROCESSOR = "gbfs"
ENTRY_LISTS = {"station_information": "stations", "station_status": "stations", "vehicle_status": "vehicles"}


def _id(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(("plietsch-gbfs", *parts))))


def dead_letter(system: str, file: str, key: str, value: bytes, kind: str, reason: str, dedup: str) -> DeadLettered:
    """A dead letter as the worker writes them; *dedup* names the defect, so that it is written once however often the
    feed repeats it."""
    return source_dead_letter(PROCESSOR, _id("dead", system, file, kind, dedup), f"gbfs:{system}/{file}", key, value,
                              kind, f"GBFS {system} {file}.json: {reason}")


def split_problems(file: str, problems: list[Problem]) -> tuple[list[Problem], dict[int, list[Problem]]]:
    """(problems of the document as a whole, problems per entry of its station/vehicle list): a bad entry costs only
    itself, a bad document all of it."""
    whole: list[Problem] = []
    entries: dict[int, list[Problem]] = {}
    key = ENTRY_LISTS.get(file)
    for p in problems:
        if key and len(p.path) >= 3 and p.path[0] == "data" and p.path[1] == key and isinstance(p.path[2], int):
            entries.setdefault(p.path[2], []).append(p)
        else:
            whole.append(p)
    return whole, entries


def describe(problems: list[Problem], limit: int = 8) -> str:
    shown = "; ".join(str(p) for p in problems[:limit])
    more = f" (and {len(problems) - limit} more)" if len(problems) > limit else ""
    return f"{len(problems)} schema violation(s) of GBFS 3.0: {shown}{more}"


def station_names(doc: dict[str, Any], skip: set[int]) -> dict[str, dict[str, Any]]:
    """station_id -> {name, lat, lon} from station_information (the first localized name)."""
    out = {}
    for i, s in enumerate(doc["data"]["stations"]):
        if i in skip:
            continue
        names = s.get("name") or []
        out[s["station_id"]] = {"name": names[0].get("text", "") if names else "", "lat": s.get("lat"), "lon": s.get("lon")}
    return out


@dataclass
class StatusOutcome:
    readings: list[tuple[str, BikeStationStatusReported]] = field(default_factory=list)  # (station_id, reading)
    newest: dict[str, datetime] = field(default_factory=dict)  # station_id -> last_reported of its reading
    duplicates: int = 0  # mapped stations whose last_reported was published already
    unknown: list[str] = field(default_factory=list)  # station ids not in the mapping
    dead: list[DeadLettered] = field(default_factory=list)
    mapped_seen: int = 0


def station_status(doc: dict[str, Any], skip: set[int], mapping: Mapping, last: dict[str, str],
                   names: dict[str, dict[str, Any]]) -> StatusOutcome:
    """Readings for the mapped stations of a validated station_status (entries in *skip* failed the schema); *last* is
    station_id -> last_reported (ISO) already published."""
    out = StatusOutcome()
    for i, s in enumerate(doc["data"]["stations"]):
        if i in skip:
            continue
        sid = s["station_id"]
        sensor = mapping.sensors.get(sid)
        if sensor is None:
            out.unknown.append(sid)
            info = names.get(sid, {})
            body = json.dumps({"station_status": s, "station_information": info or None}, sort_keys=True).encode()
            where = f" ({info.get('name')!r} at {info.get('lat')}, {info.get('lon')})" if info else ""
            out.dead.append(dead_letter(mapping.system, "station_status", sid, body, "unknown_station",
                                        f"station {sid!r}{where} is not in the station mapping; add "
                                        f"'\"{sid}\": \"<bike_share sensor id>\"' to PLIETSCH_GBFS_STATIONS to take it "
                                        "into the twin", sid))
            continue
        out.mapped_seen += 1
        reported = parse_time(s["last_reported"])
        prev = last.get(sid)
        if prev is not None and reported <= datetime.fromisoformat(prev):
            out.duplicates += 1
            continue
        try:
            reading = BikeStationStatusReported(
                event_id=_id("reading", mapping.system, sid, reported.isoformat()), entity_id=sensor,  # type: ignore[arg-type]
                region=mapping.region, occurred_at=reported, source=f"GBFS {mapping.system} station {sid}"[:128],
                bikes_available=s["num_vehicles_available"], docks_available=s.get("num_docks_available", 0))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors())
            out.dead.append(dead_letter(mapping.system, "station_status", sid, json.dumps(s, sort_keys=True).encode(),
                                        "validation", f"station {sid!r} ({sensor}) cannot become a reading: {problems}",
                                        f"{sid}|{reported.isoformat()}"))
            out.newest[sid] = reported  # refused, not retried: the next report of the station is read
            continue
        out.readings.append((sid, reading))
        out.newest[sid] = reported
    return out


def vehicle_counts(doc: dict[str, Any], skip: set[int]) -> Counter[tuple[str, str]]:
    """(station_id or 'free_floating', available | reserved | disabled) -> vehicles."""
    counts: Counter[tuple[str, str]] = Counter()
    for i, v in enumerate(doc["data"]["vehicles"]):
        if i in skip:
            continue
        status = "disabled" if v.get("is_disabled") else "reserved" if v.get("is_reserved") else "available"
        counts[(v.get("station_id") or "free_floating", status)] += 1
    return counts


def defect_key(file: str, problems: list[Problem]) -> str:
    return hashlib.sha256("\n".join([file, *map(str, problems)]).encode()).hexdigest()[:32]
