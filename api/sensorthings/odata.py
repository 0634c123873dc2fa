"""The OData query options of OGC SensorThings API 1.1 (section 9.3): ``$filter``, ``$orderby``, ``$select``,
``$expand`` (with its own options in parentheses, separated by ``;``), ``$top``, ``$skip``, ``$count``.

``$filter`` grammar (a subset of OData 4.0 ABNF, what SensorThings 1.1 names in 9.3.3.5):
``expr = term *( " and " term / " or " term )`` with ``and`` binding tighter than ``or``; ``term = *"not " ( "("
inner ")" / comparison / function )`` (``inner`` the same without parentheses);
``comparison = operand " " ("eq"/"ne"/"gt"/"ge"/"lt"/"le") " " operand``; an operand is a path (``result``,
``Datastream/id``, ``unitOfMeasurement/name``, ``properties/kind``) or a literal: a number, a
'string' ('' inside for a quote), an ISO 8601 date-time, ``true``, ``false``, ``null``; the functions are the boolean
ones ``st_within(path, geography'...')``, ``st_intersects``, ``geo.intersects`` (POINT or POLYGON, WGS84 lon lat),
``substringof('text', path)``, ``startswith(path, 'text')``, ``endswith(path, 'text')``. Not supported: arithmetic,
``any``/``all``, other functions, parentheses inside parentheses. ``FILTER_PATTERN`` is this grammar as one
regular expression (it bounds the nesting): the OpenAPI document gives it, and every ``$filter`` that matches it is
answered. A path that names nothing evaluates to null; comparing values of different kinds is false (never an error).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shapely import make_valid
from shapely.geometry import Point, Polygon, shape
from shapely.geometry.base import BaseGeometry

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
PATH = rf"{NAME}(?:/{NAME})*"
NUMBER = r"-?\d{1,15}(?:\.\d{1,15})?(?:[eE][+-]?\d{1,3})?"
STRING = r"'(?:[^']|'')*'"
DATETIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})"
_C = r"-?\d{1,3}(?:\.\d{1,12})?"
_PT = rf"{_C} {_C}"
GEOGRAPHY = (rf"geography'(?:POINT ?\({_PT}\)|POLYGON ?\(\({_PT}(?:, ?{_PT}){{2,}}\)\))'")
LITERAL = rf"(?:{DATETIME}|{NUMBER}|{STRING}|true|false|null)"
OPERAND = rf"(?:{LITERAL}|{PATH})"
OPS = ("eq", "ne", "gt", "ge", "lt", "le")
COMPARISON = rf"{OPERAND} (?:{'|'.join(OPS)}) {OPERAND}"
GEO_FUNCS = ("st_within", "st_intersects", "geo.intersects")
FUNCTION = (rf"(?:(?:st_within|st_intersects|geo\.intersects)\({PATH}, ?{GEOGRAPHY}\)"
            rf"|substringof\({STRING}, ?{PATH}\)|(?:startswith|endswith)\({PATH}, ?{STRING}\))")


def expand_pattern(navigations: frozenset[str]) -> str:
    """$expand as the regular expression the routes check and the document gives: navigation paths (``Datastreams``,
    ``Datastreams/Observations``, up to three steps), comma-separated, each with options in parentheses separated by
    ``;``: ``$filter`` (one comparison), ``$orderby``, ``$select``, ``$top``, ``$skip``, ``$count``, and ``$expand`` of
    navigation paths. A navigation the entity does not have is left out of the answer. Richer options go as a path:
    ``Datastreams/Observations($top=1)``."""
    names = "|".join(sorted(navigations, key=lambda n: (-len(n), n)))
    chain = rf"(?:{names})(?:/(?:{names})){{0,2}}"
    opt = (rf"\$filter={COMPARISON}|\$orderby={ORDER_PATTERN[1:-1]}|\$select={SELECT_PATTERN[1:-1]}"
           rf"|\$top=\d{{1,9}}|\$skip=\d{{1,9}}|\$count=(?:true|false)|\$expand={chain}(?:,{chain})*")
    item = rf"{chain}(?:\((?:{opt})(?:;(?:{opt}))*\))?"
    return rf"^{item}(?:,{item})*$"


def _expression(depth: int) -> str:
    atom = rf"(?:{COMPARISON}|{FUNCTION})"
    if depth:
        atom = rf"(?:{atom}|\( ?{_expression(depth - 1)} ?\))"
    term = rf"(?:not )*{atom}"
    return rf"{term}(?: (?:and|or) {term})*"


FILTER_PATTERN = rf"^{_expression(1)}$"
ORDER_PATTERN = rf"^{PATH}(?: (?:asc|desc))?(?:, ?{PATH}(?: (?:asc|desc))?)*$"
SELECT_PATTERN = rf"^(?:{PATH}|@iot\.id)(?:, ?(?:{PATH}|@iot\.id))*$"
_FILTER = re.compile(FILTER_PATTERN)
_ORDER = re.compile(ORDER_PATTERN)
_SELECT = re.compile(SELECT_PATTERN)


class ODataError(ValueError):
    """A query option that breaks the grammar: the message names the option, the value and what is expected."""


Predicate = Callable[[Any], bool]
Resolver = Callable[[Any, list[str]], Any]  # (entity, path segments) -> value or None


@dataclass(frozen=True)
class Geo:
    geometry: BaseGeometry


@dataclass(frozen=True)
class Node:
    """A parsed $filter: kind is 'and', 'or', 'not', 'cmp', 'fn'; args its parts."""

    kind: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Path:
    segments: tuple[str, ...]


@dataclass
class Options:
    """The query options of one request or of one $expand item."""

    filter: Node | None = None
    orderby: list[tuple[Path, bool]] = field(default_factory=list)  # (path, descending)
    select: list[str] | None = None
    expand: dict[str, Options] = field(default_factory=dict)  # navigation -> its options (a path a/b nests)
    top: int | None = None
    skip: int = 0
    count: bool = False


_TOKEN = re.compile(
    rf"\s*(?:(?P<geo>{GEOGRAPHY})|(?P<string>{STRING})|(?P<datetime>{DATETIME})|(?P<number>{NUMBER})"
    rf"|(?P<func>st_within|st_intersects|geo\.intersects|substringof|startswith|endswith)(?=\()"
    rf"|(?P<path>{PATH})|(?P<punct>[(),]))")


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ODataError(f"$filter {text!r}: cannot read {text[pos:pos + 20]!r} at position {pos}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _geography(raw: str) -> BaseGeometry:
    body = raw[len("geography'"):-1]
    pts = [tuple(float(x) for x in p.split()) for p in re.findall(rf"{_C} {_C}", body)]
    if body.startswith("POINT"):
        return Point(pts[0])
    poly = Polygon(pts)
    return poly if poly.is_valid else make_valid(poly)


def _literal(kind: str, raw: str) -> Any:
    if kind == "string":
        return raw[1:-1].replace("''", "'")
    if kind == "datetime":
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return raw  # e.g. 2026-02-30T10:00:00Z: the shape of a date-time but no instant; compared as text
    if kind == "number":
        f = float(raw)
        return int(raw) if re.fullmatch(r"-?\d+", raw) else f
    if kind == "geo":
        return Geo(_geography(raw))
    return {"true": True, "false": False, "null": None}[raw]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> tuple[str, str] | None:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ODataError(f"$filter {self.text!r} ends too early")
        self.i += 1
        return tok

    def expect(self, punct: str) -> None:
        tok = self.take()
        if tok != ("punct", punct):
            raise ODataError(f"$filter {self.text!r}: expected {punct!r}, found {tok[1]!r}")

    def parse(self) -> Node:
        node = self.or_()
        if self.peek() is not None:
            raise ODataError(f"$filter {self.text!r}: unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def or_(self) -> Node:
        parts = [self.and_()]
        while self.peek() == ("path", "or"):
            self.i += 1
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else Node("or", tuple(parts))

    def and_(self) -> Node:
        parts = [self.unary()]
        while self.peek() == ("path", "and"):
            self.i += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else Node("and", tuple(parts))

    def unary(self) -> Node:
        nxt = self.peek(1)
        if self.peek() == ("path", "not") and not (nxt is not None and nxt[0] == "path" and nxt[1] in OPS):
            self.i += 1
            return Node("not", (self.unary(),))
        if self.peek() == ("punct", "("):
            self.i += 1
            node = self.or_()
            self.expect(")")
            return node
        if self.peek() is not None and self.peek()[0] == "func":  # type: ignore[index]
            return self.function()
        left = self.operand()
        op = self.take()
        if op[0] != "path" or op[1] not in OPS:
            raise ODataError(f"$filter {self.text!r}: expected one of {', '.join(OPS)}, found {op[1]!r}")
        return Node("cmp", (op[1], left, self.operand()))

    def operand(self) -> Any:
        kind, raw = self.take()
        if kind == "path" and raw not in ("true", "false", "null"):
            return Path(tuple(raw.split("/")))
        if kind in ("string", "datetime", "number", "path", "geo"):
            return _literal(kind, raw)
        raise ODataError(f"$filter {self.text!r}: expected a property or a value, found {raw!r}")

    def function(self) -> Node:
        name = self.take()[1]
        self.expect("(")
        args = [self.operand()]
        self.expect(",")
        args.append(self.operand())
        self.expect(")")
        return Node("fn", (name, *args))


def parse_filter(text: str) -> Node:
    if not _FILTER.fullmatch(text):
        raise ODataError(f"$filter {text!r} is not a filter this service reads: comparisons 'path op value' (op one of "
                         f"{', '.join(OPS)}) joined by and/or, not, one level of parentheses, and the functions "
                         "st_within, st_intersects, geo.intersects, substringof, startswith, endswith; "
                         "e.g. phenomenonTime ge 2026-05-05T10:00:00Z and result gt 1.2")
    return _Parser(text).parse()


def parse_orderby(text: str) -> list[tuple[Path, bool]]:
    if not _ORDER.fullmatch(text):
        raise ODataError(f"$orderby {text!r}: expected properties with asc or desc, comma-separated, e.g. "
                         "'phenomenonTime desc,id'")
    out = []
    for part in text.split(","):
        name, _, direction = part.strip().partition(" ")
        out.append((Path(tuple(name.split("/"))), direction.strip() == "desc"))
    return out


def parse_select(text: str) -> list[str]:
    if not _SELECT.fullmatch(text):
        raise ODataError(f"$select {text!r}: expected property names, comma-separated, e.g. 'id,name'")
    return ["id" if p.strip() == "@iot.id" else p.strip() for p in text.split(",")]


def split_top(text: str, sep: str) -> list[str]:
    """*text* split at *sep* outside parentheses and 'strings'."""
    out, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == sep:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


def _int(name: str, raw: str) -> int:
    if not re.fullmatch(r"\d+", raw):
        raise ODataError(f"{name} {raw!r} must be a whole number >= 0")
    return int(raw)


def options(values: dict[str, str | None], navigations: frozenset[str], where: str = "") -> Options:
    """Options from their raw values (None = absent). *navigations* are the names $expand may use."""
    o = Options()
    if values.get("$filter") is not None:
        o.filter = parse_filter(values["$filter"])  # type: ignore[arg-type]
    if values.get("$orderby") is not None:
        o.orderby = parse_orderby(values["$orderby"])  # type: ignore[arg-type]
    if values.get("$select") is not None:
        o.select = parse_select(values["$select"])  # type: ignore[arg-type]
    if values.get("$top") is not None:
        o.top = _int(f"{where}$top", values["$top"])  # type: ignore[arg-type]
    if values.get("$skip") is not None:
        o.skip = _int(f"{where}$skip", values["$skip"])  # type: ignore[arg-type]
    if values.get("$count") is not None:
        if values["$count"] not in ("true", "false"):
            raise ODataError(f"{where}$count {values['$count']!r} must be true or false")
        o.count = values["$count"] == "true"
    if values.get("$expand") is not None:
        o.expand = parse_expand(values["$expand"], navigations)  # type: ignore[arg-type]
    return o


EXPAND_OPTIONS = ("$filter", "$orderby", "$select", "$expand", "$top", "$skip", "$count")


def parse_expand(text: str, navigations: frozenset[str]) -> dict[str, Options]:
    """``Datastreams($top=1;$expand=Observations($orderby=phenomenonTime desc)),Locations`` and
    ``Datastreams/Observations`` (a path: each step expanded, the options on the last)."""
    out: dict[str, Options] = {}
    for item in split_top(text, ","):
        item = item.strip()
        m = re.fullmatch(rf"({NAME}(?:/{NAME})*)(?:\((.*)\))?", item, re.S)
        if m is None or not item:
            raise ODataError(f"$expand {text!r}: cannot read {item!r}; expected Navigation or Navigation($top=1;...)")
        steps = m.group(1).split("/")
        for s in steps:
            if s not in navigations:
                raise ODataError(f"$expand {text!r}: {s!r} is not a navigation property ({', '.join(sorted(navigations))})")
        raw: dict[str, str | None] = {}
        if m.group(2) is not None and m.group(2).strip():
            for opt in split_top(m.group(2), ";"):
                key, eq, value = opt.strip().partition("=")
                if not eq or key not in EXPAND_OPTIONS:
                    raise ODataError(f"$expand {text!r}: {opt!r} is not an option ({', '.join(EXPAND_OPTIONS)}) "
                                     "with '=' and a value")
                raw[key] = value
        inner = options(raw, navigations, where=f"$expand {steps[-1]}: ")
        target = out
        for s in steps[:-1]:
            target = target.setdefault(s, Options()).expand
        prev = target.get(steps[-1])
        if prev is not None:
            inner.expand = {**prev.expand, **inner.expand}
        target[steps[-1]] = inner
    return out


# --- evaluation -----------------------------------------------------------------------------------------------------

def _time(v: Any) -> Any:
    """A date-time of a value: datetimes as they are, ISO strings parsed (an interval 'a/b' by its start)."""
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, str) and re.match(r"\d{4}-\d{2}-\d{2}T", v):
        try:
            return datetime.fromisoformat(v.split("/")[0].replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def comparable(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Both values in one kind that orders them, or None when they are not comparable."""
    if isinstance(a, datetime) or isinstance(b, datetime):
        ta, tb = _time(a), _time(b)
        return (ta, tb) if ta is not None and tb is not None else None
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    num = (int, float)
    if isinstance(a, num) and isinstance(b, str) or isinstance(a, str) and isinstance(b, num):
        try:  # OData servers (FROST, the ETS' own 'result gt '3'') compare a number and a numeric string as numbers
            return float(a), float(b)
        except ValueError:
            return None
    if isinstance(a, num) and isinstance(b, num) or isinstance(a, str) and isinstance(b, str):
        return a, b
    return None


def _compare(op: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return (a is None and b is None) if op == "eq" else (a is not None or b is not None) if op == "ne" else False
    pair = comparable(a, b)
    if pair is None:
        return op == "ne"
    x, y = pair
    return bool({"eq": x == y, "ne": x != y, "gt": x > y, "ge": x >= y, "lt": x < y, "le": x <= y}[op])


def _geometry(v: Any) -> BaseGeometry | None:
    if isinstance(v, dict) and "type" in v:
        try:
            return shape(v)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError):
            return None
    return None


def evaluate(node: Node, entity: Any, resolve: Resolver) -> bool:
    def value(x: Any) -> Any:
        return resolve(entity, list(x.segments)) if isinstance(x, Path) else x

    if node.kind == "and":
        return all(evaluate(n, entity, resolve) for n in node.args)
    if node.kind == "or":
        return any(evaluate(n, entity, resolve) for n in node.args)
    if node.kind == "not":
        return not evaluate(node.args[0], entity, resolve)
    if node.kind == "cmp":
        op, left, right = node.args
        return _compare(op, value(left), value(right))
    name, a, b = node.args
    if name in GEO_FUNCS:
        geom, area = _geometry(value(a)), value(b)
        if geom is None or not isinstance(area, Geo):
            return False
        return bool(geom.within(area.geometry) if name == "st_within" else geom.intersects(area.geometry))
    x, y = value(a), value(b)
    if not isinstance(x, str) or not isinstance(y, str):
        return False
    return {"substringof": x in y, "startswith": x.startswith(y), "endswith": x.endswith(y)}[name]


def sort_key(v: Any) -> tuple[int, Any]:
    """An order over mixed values: nulls first, then booleans, numbers, times, strings."""
    if v is None:
        return (0, 0)
    if isinstance(v, bool):
        return (1, v)
    if isinstance(v, int | float):
        return (2, v)
    t = _time(v)
    if t is not None:
        return (3, t)
    return (4, str(v))
