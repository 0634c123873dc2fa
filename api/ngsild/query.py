"""The NGSI-LD query language (ETSI GS CIM 009, 4.9) and geo-queries (4.10), evaluated over normalized entities.

The grammar is the standard's: ``Query = (QueryTerm / QueryTermAssoc) *(logicalOp (QueryTerm / QueryTermAssoc))``,
``QueryTermAssoc = "(" QueryTerm *(logicalOp QueryTerm) ")"`` (one level of parentheses, as the standard writes it),
``;`` is AND and binds tighter than ``|`` (OR). A term is an attribute path alone (the attribute exists), or a path, an
operator (``== != > >= < <=``) and a value: a number, a quoted string, a date-time, ``true``/``false``, a list
``a,b,c`` or a range ``a..b`` (with ``==`` and ``!=``), or a URI. A path is ``attr``, ``attr.subAttr`` (a
sub-attribute such as ``observedAt`` or ``unitCode``) and ``attr[key]`` (a key inside a compound value). Not
supported: the pattern operators ``~=``/``!~=``. ``Q_PATTERN`` is this grammar as one regular expression: the OpenAPI
document gives it, and every ``q`` that matches it is answered."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shapely import make_valid
from shapely.geometry import LineString, Point, Polygon, shape
from shapely.geometry.base import BaseGeometry
from shapely.ops import transform

from api.filters import _LAT, _LON

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
PATH = rf"{NAME}(?:\.{NAME})*(?:\[{NAME}\])*"
NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
STRING = r'"[^"]*"'
DATETIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})"
URI = r"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9:._~/#@!$&'*+=%-]+"
COMPARABLE = rf"(?:{DATETIME}|{NUMBER}|{STRING})"
VALUE = rf"(?:{COMPARABLE}|true|false)"
EQ_VALUE = rf"(?:{COMPARABLE}\.\.{COMPARABLE}|{VALUE}(?:,{VALUE})*|{URI})"
TERM = rf"{PATH}(?:(?:==|!=){EQ_VALUE}|(?:>=|<=|>|<){COMPARABLE})?"
ASSOC = rf"\({TERM}(?:[;|]{TERM})*\)"
Q_PATTERN = rf"^(?:{TERM}|{ASSOC})(?:[;|](?:{TERM}|{ASSOC}))*$"
_Q = re.compile(Q_PATTERN)
_TOKEN = re.compile(rf"(?P<open>\()|(?P<close>\))|(?P<logic>[;|])|(?P<path>{PATH})(?:(?P<op>==|!=|>=|<=|>|<)"
                    rf"(?P<value>{COMPARABLE}\.\.{COMPARABLE}|{VALUE}(?:,{VALUE})*|{URI}))?")

_C = " ?, ?"  # a comma, a space on either side allowed (JSON as json.dumps writes it)
POSITION = rf"\[ ?{_LON}{_C}{_LAT} ?\]"
COORDINATES = {"Point": rf"^{POSITION}$", "LineString": rf"^\[ ?{POSITION}(?:{_C}{POSITION})+ ?\]$",
               "Polygon": rf"^\[ ?\[ ?{POSITION}{_C}{POSITION}{_C}{POSITION}(?:{_C}{POSITION})* ?\] ?\]$"}
GEOREL_PATTERN = r"^(?:near;(?:maxDistance|minDistance)==\d{1,7}(?:\.\d{1,3})?|within|contains|intersects|disjoint|overlaps|equals)$"
_GEOREL = re.compile(GEOREL_PATTERN)
_NUMBER_IN = re.compile(r"-?\d+(?:\.\d+)?")


class QueryError(ValueError):
    """A query that breaks the grammar; the message names the parameter, the value and what is expected."""


Predicate = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Range:
    low: Any
    high: Any


def _literal(raw: str) -> Any:
    if raw == "true":
        return True
    if raw == "false":
        return False
    if raw.startswith('"'):
        return raw[1:-1]
    if re.fullmatch(DATETIME, raw):
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return raw  # e.g. 2023-02-30: no instant; compared as text
    if re.fullmatch(NUMBER, raw):
        f = float(raw)
        return int(f) if f.is_integer() and "." not in raw and "e" not in raw.lower() else f
    return raw  # a URI


def _value_of(raw: str) -> Any:
    if ".." in raw and not raw.startswith('"') and re.fullmatch(rf"{COMPARABLE}\.\.{COMPARABLE}", raw):
        low, high = re.fullmatch(rf"({COMPARABLE})\.\.({COMPARABLE})", raw).groups()  # type: ignore[union-attr]
        return Range(_literal(low), _literal(high))
    if re.fullmatch(rf"{VALUE}(?:,{VALUE})+", raw):
        return [_literal(v) for v in re.findall(VALUE, raw)]
    return _literal(raw)


def _resolve(entity: dict[str, Any], path: str) -> tuple[bool, Any]:
    """(found, value) of an attribute path in a normalized entity."""
    head, *keys = path.split("[")
    names = head.split(".")
    attr = entity.get(names[0])
    if not isinstance(attr, dict):
        return False, None
    node: Any = attr
    for sub in names[1:]:
        if not isinstance(node, dict) or sub not in node:
            return False, None
        node = node[sub]
    if isinstance(node, dict) and "type" in node:  # an attribute or sub-attribute: its value (a relationship's object)
        node = node.get("object") if node.get("type") == "Relationship" else node.get("value")
    for k in keys:
        k = k.rstrip("]")
        if not isinstance(node, dict) or k not in node:
            return False, None
        node = node[k]
    if isinstance(node, dict) and node.get("@type") == "DateTime":
        node = node.get("@value")
    return True, node


def _comparable(have: Any, want: Any) -> tuple[Any, Any] | None:
    if isinstance(want, bool) or isinstance(have, bool):
        return (have, want) if isinstance(have, bool) and isinstance(want, bool) else None
    if isinstance(want, int | float) and isinstance(have, int | float):
        return have, want
    if isinstance(want, datetime):
        if isinstance(have, str):
            try:
                t = datetime.fromisoformat(have.replace("Z", "+00:00"))
            except ValueError:
                return None
            if t.tzinfo is None:
                t = t.replace(tzinfo=UTC)
            return t, want
        return None
    if isinstance(want, str) and isinstance(have, str):
        return have, want
    return None


def _compare(op: str, have: Any, want: Any) -> bool:
    if isinstance(want, Range):
        lo, hi = _comparable(have, want.low), _comparable(have, want.high)
        inside = lo is not None and hi is not None and lo[1] <= lo[0] and hi[0] <= hi[1]
        return inside if op == "==" else not inside
    if isinstance(want, list):
        hit = any(_compare("==", have, w) for w in want)
        return hit if op == "==" else not hit
    pair = _comparable(have, want)
    if pair is None:
        return op == "!="
    a, b = pair
    try:
        return {"==": a == b, "!=": a != b, ">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]
    except TypeError:
        return False


def _term(path: str, op: str | None, raw: str | None) -> Predicate:
    if op is None:
        return lambda e: _resolve(e, path)[0]
    want = _value_of(raw or "")

    def test(e: dict[str, Any]) -> bool:
        found, have = _resolve(e, path)
        if not found:
            return False
        if isinstance(have, list) and not isinstance(want, list | Range):
            return any(_compare(op, h, want) for h in have) if op != "!=" else all(_compare(op, h, want) for h in have)
        return _compare(op, have, want)

    return test


def parse_q(q: str) -> Predicate:
    """A predicate over normalized entities; QueryError names what breaks the grammar."""
    if not _Q.fullmatch(q):
        raise QueryError(f"q {q!r} is not an NGSI-LD query (ETSI GS CIM 009, 4.9): expected terms such as "
                         "'height>1.2', 'name==\"Gaarden\"', 'occupancy>=0.5;totalSpotNumber>100' or "
                         "'(no2>40|pm10>50);synthetic==false'; ';' is AND, '|' is OR, strings in double quotes")
    ors: list[list[Predicate]] = [[]]
    pos = 0
    group: list[list[Predicate]] | None = None
    while pos < len(q):
        m = _TOKEN.match(q, pos)
        if m is None:  # cannot happen after the full match above
            raise QueryError(f"q {q!r}: cannot read from position {pos}: {q[pos:pos + 20]!r}")
        pos = m.end()
        if m["open"]:
            group = [[]]
        elif m["close"]:
            inner = [list(a) for a in group or []]
            ors[-1].append(lambda e, inner=inner: any(all(p(e) for p in ands) for ands in inner))  # type: ignore[misc]
            group = None
        elif m["logic"]:
            target = group if group is not None else ors
            if m["logic"] == "|":
                target.append([])
        else:
            target = group if group is not None else ors
            target[-1].append(_term(m["path"], m["op"], m["value"]))
    clauses = [list(a) for a in ors]
    return lambda e: any(all(p(e) for p in ands) for ands in clauses)


# -- geo-queries ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeoQuery:
    georel: str
    geometry: BaseGeometry
    geoproperty: str
    distance: tuple[str, float] | None  # ("maxDistance" | "minDistance", metres) for near

    def matches(self, entity: dict[str, Any]) -> bool:
        gp = entity.get(self.geoproperty)
        if not isinstance(gp, dict) or not isinstance(gp.get("value"), dict):
            return False
        g = shape(gp["value"])
        if self.distance is not None:
            d = _metres(g, self.geometry)
            return d <= self.distance[1] if self.distance[0] == "maxDistance" else d >= self.distance[1]
        rel = {"within": g.within, "contains": g.contains, "intersects": g.intersects, "disjoint": g.disjoint,
               "overlaps": g.overlaps, "equals": g.equals}[self.georel]
        return bool(rel(self.geometry))


def _metres(a: BaseGeometry, b: BaseGeometry) -> float:
    """Distance in metres between two WGS84 geometries, in a local equirectangular projection around *b* (exact enough
    over a region's extent)."""
    c = b.centroid if not b.is_empty else Point(0, 0)
    kx, ky = 111_320.0 * math.cos(math.radians(c.y)), 110_574.0

    def proj(x: Any, y: Any, z: Any = None) -> tuple[Any, Any]:
        return (x - c.x) * kx, (y - c.y) * ky

    return float(transform(proj, a).distance(transform(proj, b)))


def parse_geo(georel: str | None, geometry: str | None, coordinates: str | None, geoproperty: str | None) -> GeoQuery | None:
    if geoproperty is not None and not re.fullmatch(NAME, geoproperty):
        raise QueryError(f"geoproperty {geoproperty!r} is not an attribute name (letters, digits, '_'; e.g. location)")
    given = {k: v for k, v in (("georel", georel), ("geometry", geometry), ("coordinates", coordinates)) if v is not None}
    if not given:
        return None
    if georel is None or geometry is None or coordinates is None:
        missing = [k for k in ("georel", "geometry", "coordinates") if k not in given]
        raise QueryError(f"a geo-query needs georel, geometry and coordinates together; {', '.join(missing)} "
                         f"missing (given: {', '.join(f'{k}={v!r}' for k, v in given.items())})")
    if not _GEOREL.fullmatch(georel):
        raise QueryError(f"georel {georel!r} is not one of near;maxDistance==<metres>, near;minDistance==<metres>, "
                         "within, contains, intersects, disjoint, overlaps, equals")
    if geometry not in COORDINATES:
        raise QueryError(f"geometry {geometry!r} is not supported; use Point, LineString or Polygon")
    if not re.fullmatch(COORDINATES[geometry], coordinates):
        raise QueryError(f"coordinates {coordinates!r} are not a {geometry} in WGS84 degrees (lon,lat), e.g. "
                         + {"Point": "[10.14,54.32]", "LineString": "[[10.14,54.32],[10.15,54.33]]",
                            "Polygon": "[[[10.1,54.3],[10.2,54.3],[10.2,54.4],[10.1,54.3]]]"}[geometry])
    nums = [float(x) for x in _NUMBER_IN.findall(coordinates)]
    pts = list(zip(nums[::2], nums[1::2], strict=True))
    geom: BaseGeometry = Point(pts[0]) if geometry == "Point" else LineString(pts) if geometry == "LineString" \
        else make_valid(Polygon(pts))
    distance = None
    if georel.startswith("near"):
        which, metres = georel.split(";", 1)[1].split("==")
        distance = (which, float(metres))
    return GeoQuery(georel.split(";")[0], geom, geoproperty or "location", distance)
