"""GBFS 3.0 documents checked against MobilityData's JSON Schemas (vendored in ``schemas/`` with their licence).

``check(name, doc)`` gives every violation with the JSON path in the document where it is (``/data/stations/3/
num_vehicles_available``) and what is wrong, in document order. The schemas are draft-07; ``format: date-time`` is
checked (RFC 3339 with a UTC offset, as GBFS 3.0 requires for ``last_updated`` and ``last_reported``), since the
source turns those times into event times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker

SCHEMAS = Path(__file__).with_name("schemas")
FILES = ("gbfs", "station_information", "station_status", "vehicle_status")  # the files this source reads

_formats = FormatChecker(formats=())


@_formats.checks("date-time", raises=ValueError)
def _rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True  # the type keyword reports non-strings
    if "T" not in value.upper():
        raise ValueError("no 'T' between date and time")
    t = parse_time(value)
    if t.tzinfo is None:
        raise ValueError("no UTC offset (Z or +hh:mm)")
    return True


def parse_time(value: str) -> datetime:
    """An RFC 3339 time as GBFS 3.0 writes it (``2019-07-04T13:33:03.969Z``)."""
    return datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)


@dataclass(frozen=True)
class Problem:
    path: tuple[str | int, ...]  # where in the document
    message: str  # what is wrong

    @property
    def pointer(self) -> str:
        return "/" + "/".join(str(p) for p in self.path)

    def __str__(self) -> str:
        return f"{self.pointer}: {self.message}"


@cache
def validator(name: str) -> Draft7Validator:
    if name not in FILES:
        raise KeyError(f"no GBFS 3.0 schema for {name!r}; known: {', '.join(FILES)}")
    schema = json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, format_checker=_formats)


def check(name: str, doc: Any) -> list[Problem]:
    """Every violation of GBFS 3.0 file *name* in *doc*, in document order."""
    out = []
    for err in validator(name).iter_errors(doc):
        message = err.message
        if err.validator == "format" and err.cause is not None:
            message = f"{message} ({err.cause})"
        if list(err.absolute_path) == ["version"] and err.validator == "const":
            message += ": this source reads GBFS 3.0; point PLIETSCH_GBFS_URL at the feed's 3.0 gbfs.json"
        out.append(Problem(tuple(err.absolute_path), message[:300]))
    out.sort(key=lambda p: [str(x).zfill(12) if isinstance(x, int) else x for x in p.path])
    return out
