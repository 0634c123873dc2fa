"""Observations, answered from history (the archive through ``streams.history.engine``: per-entity queries pruned by
time range; no archive file is opened here) plus the newest reading from the read model while the archive sink has not
written it yet.

An archived reading of a sensor is one Observation in each of the sensor's Datastreams whose value it sets; its id is
``<Datastream id>@<occurred_at in microseconds>@<event id>`` (so ``Observations(<id>)`` is one engine query at that
instant). Conditions on ``phenomenonTime``/``resultTime`` that the whole ``$filter`` requires (``and``-ed at its top)
are the time range of the engine query. When that is the whole filter, the order is by time (or none) and the question
is about one Datastream, ``$top``/``$skip`` page in the engine (LIMIT/OFFSET): the cost does not grow with the archive
beyond the time range asked. Otherwise at most ``SCAN_CAP`` readings of the time range are read and the rest of the
filter and order applied to them; a range with more is refused with a 400 that says to narrow it.
Public views have one Observation per Datastream, the current figure (``api.sensorthings.model``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from api.sensorthings.model import Ent, Graph, Stream
from api.sensorthings.odata import Node, ODataError, Options, Path, evaluate, sort_key
from twin.sensors import reading_values

SCAN_CAP = 10_000
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)
TIME_PROPS = ("phenomenonTime", "resultTime")
TIME_PATHS = frozenset((t,) for t in TIME_PROPS)


@dataclass
class Window:
    start: datetime
    end: datetime
    rest: Node | None  # what of the filter is not the time range (None: nothing)


def _utc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _us(t: datetime) -> int:
    return (t - EARLIEST) // TICK


def window(flt: Node | None) -> Window:
    """The time range every match must lie in (from the filter's top-level and-ed time comparisons) and the rest."""
    w = Window(EARLIEST, LATEST, None)
    if flt is None:
        return w
    parts = list(flt.args) if flt.kind == "and" else [flt]
    rest: list[Node] = []
    flip = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge", "eq": "eq", "ne": "ne"}
    for p in parts:
        if p.kind == "cmp":
            op, a, b = p.args
            if isinstance(b, Path) and not isinstance(a, Path):
                op, a, b = flip[op], b, a
            if isinstance(a, Path) and a.segments in TIME_PATHS and isinstance(b, datetime) \
                    and op != "ne":
                t = b if b.tzinfo else b.replace(tzinfo=UTC)
                if op in ("ge", "gt", "eq"):
                    w.start = max(w.start, t + TICK if op == "gt" else t)
                if op in ("le", "lt", "eq"):
                    w.end = min(w.end, t - TICK if op == "lt" else t)
                continue
        rest.append(p)
    w.rest = None if not rest else rest[0] if len(rest) == 1 else Node("and", tuple(rest))
    return w


def observation(dsid: str, stream: Stream, at: datetime, value: Any, event_id: str) -> Ent:
    when = _utc(at)
    return Ent("Observations", f"{dsid}@{_us(at)}@{event_id}", {"phenomenonTime": when, "resultTime": when,
                                                                 "result": value},
               {"Datastream": dsid, "FeatureOfInterest": stream.foi})


def _from_events(graph: Graph, dsids: Sequence[str], events: list[Any]) -> list[Ent]:
    out = []
    for a in events:
        ev = a.event
        values = reading_values(ev)
        for d in dsids:
            s = graph.streams[d]
            if s.sensor == ev.entity_id and values.get(s.twin_key) is not None:
                out.append(observation(d, s, ev.occurred_at, values[s.twin_key], ev.event_id))
    return out


def _live(graph: Graph, rm: Any, engine: Any, sensor: str, w: Window) -> tuple[datetime, dict[str, Any], str] | None:
    """The sensor's newest reading in the read model when it lies in the window and the archive holds neither it nor
    anything newer in the window (the archive sink has not written it yet)."""
    rec = rm.get(sensor)
    st = rec["state"] if rec is not None else {}
    if not isinstance(st.get("observed_at"), str) or not isinstance(st.get("values"), dict):
        return None
    at = datetime.fromisoformat(st["observed_at"])
    if not w.start <= at <= w.end:
        return None
    if engine.events(at, w.end, [sensor], 1, 0).total:  # the archive holds it, or newer readings
        return None
    return at, st["values"], str(st.get("last_event_id") or "live")


def _newest(rm: Any, stream: Stream, w: Window) -> tuple[datetime, Any, str] | None:
    """(time, value, event id) of the sensor's newest reading in the read model (the twin's state), when it lies in the
    window and sets the value. The caller checks that the archive holds nothing newer (the worker may lag behind the
    archive sink): a count over the time after it, which prunes to the newest files."""
    rec = rm.get(stream.sensor)
    st = rec["state"] if rec is not None else {}
    values = st.get("values")
    if not isinstance(st.get("observed_at"), str) or not isinstance(values, dict) or values.get(stream.twin_key) is None:
        return None
    at = datetime.fromisoformat(st["observed_at"])
    return (at, values[stream.twin_key], str(st.get("last_event_id") or "live")) if w.start <= at <= w.end else None


class Observations:
    """The Observations of some Datastreams of one graph, for one request's options."""

    def __init__(self, graph: Graph, rm: Any, engine: Any, resolve: Any) -> None:
        self.graph, self.rm, self.engine, self.resolve = graph, rm, engine, resolve

    def one(self, oid: str) -> Ent | None:
        dsid, _, rest = oid.partition("@")
        us, _, eid = rest.partition("@")
        stream = self.graph.streams.get(dsid)
        if stream is None:
            return None
        if self.graph.public:
            return next((o for o in self._public([dsid]) if o.id == oid), None)
        if not us.isdigit() or int(us) > _us(LATEST):
            return None
        at = EARLIEST + int(us) * TICK
        found = [o for o in _from_events(self.graph, [dsid], self.engine.events(at, at, [stream.sensor], 100, 0).events)
                 if o.id == oid]
        if found:
            return found[0]
        live = _live(self.graph, self.rm, self.engine, stream.sensor, Window(at, at, None))
        if live is not None and live[2] == eid and live[1].get(stream.twin_key) is not None:
            return observation(dsid, stream, live[0], live[1][stream.twin_key], live[2])
        return None

    def _public(self, dsids: Sequence[str]) -> list[Ent]:
        now = self.graph.now or datetime.now(UTC)
        return [Ent("Observations", f"{d}@current", {"phenomenonTime": _utc(now), "resultTime": _utc(now),
                                                     "result": self.graph.public_values[d]},
                    {"Datastream": d, "FeatureOfInterest": self.graph.streams[d].foi})
                for d in dsids if self.graph.public_values.get(d) is not None]

    def query(self, dsids: Sequence[str], o: Options, page: int) -> tuple[int, list[Ent]]:
        """(how many match, the page) for options *o*; *page* is $top when it is absent."""
        top = page if o.top is None else o.top
        if self.graph.public:
            return self._in_memory(self._public(dsids), o.filter, o, top)
        w = window(o.filter)
        if w.start > w.end or not dsids:
            return 0, []
        by_time = not o.orderby or (len(o.orderby) == 1 and o.orderby[0][0].segments in TIME_PATHS)
        if len(dsids) == 1 and w.rest is None and by_time:
            return self._paged(dsids[0], w, o.skip, top, bool(o.orderby) and o.orderby[0][1], o.count)
        sensors = sorted({self.graph.streams[d].sensor for d in dsids})
        got = self.engine.events(w.start, w.end, sensors, SCAN_CAP, 0)
        if got.total > SCAN_CAP:
            raise ODataError(f"{got.total} readings lie in the time range asked ({_utc(w.start)} to {_utc(w.end)}); "
                             f"at most {SCAN_CAP} are filtered or ordered by other properties in one request: narrow it "
                             "with phenomenonTime ge/le in $filter, or ask one Datastream's Observations ordered by "
                             "phenomenonTime")
        obs = _from_events(self.graph, dsids, got.events)
        for sensor in sensors:
            live = _live(self.graph, self.rm, self.engine, sensor, w)
            if live is not None:
                obs += [observation(d, self.graph.streams[d], live[0], live[1][self.graph.streams[d].twin_key], live[2])
                        for d in dsids if self.graph.streams[d].sensor == sensor
                        and live[1].get(self.graph.streams[d].twin_key) is not None]
        return self._in_memory(obs, w.rest, o, top)

    def _by(self, path: Path) -> Any:
        def sort(x: Ent) -> tuple[int, Any]:
            return sort_key(self.resolve(x, list(path.segments)))
        return sort

    def _in_memory(self, obs: list[Ent], flt: Node | None, o: Options, top: int) -> tuple[int, list[Ent]]:
        if flt is not None:
            obs = [x for x in obs if evaluate(flt, x, self.resolve)]
        obs.sort(key=lambda x: (x.props["phenomenonTime"], x.id))
        for path, desc in reversed(o.orderby):
            obs.sort(key=self._by(path), reverse=desc)
        return len(obs), obs[o.skip: o.skip + top]

    def _paged(self, dsid: str, w: Window, skip: int, top: int, desc: bool, count: bool) -> tuple[int, list[Ent]]:
        """One Datastream's Observations in time order, paged in the engine: the archive's readings in the window, then
        the read model's newest if the archive lacks it. Newest first without $count (what a map asks: the latest
        reading) looks back from the archive's end over ever wider windows (1 h, 8 h, 64 h, ...) until it has the
        page: its cost follows the page, not the archive."""
        stream = self.graph.streams[dsid]
        if desc and not count and skip == 0 and top == 1:  # the latest reading: the read model's, when it has one
            latest = _newest(self.rm, stream, w)
            if latest is not None and not self._count(stream.sensor, latest[0] + TICK, w.end):  # nothing newer archived
                return 2, [observation(dsid, stream, *latest)]  # 2: more may follow (an @iot.nextLink)
        live = _live(self.graph, self.rm, self.engine, stream.sensor, w)
        extra = 1 if live is not None else 0
        lo, known = w.start, True
        end = self.engine.range().get("end")
        if desc and not count and end is not None:
            newest, span = min(w.end, datetime.fromisoformat(end)), timedelta(hours=1)
            while True:
                lo = max(w.start, newest - span)
                archived = self._count(stream.sensor, lo, w.end)
                if archived + extra >= skip + top or lo == w.start:
                    break
                span *= 8
            known = lo == w.start
        else:
            archived = self._count(stream.sensor, w.start, w.end) if end is not None else 0
        total = archived + extra
        first, last = skip, min(skip + top, total)  # positions in the order asked
        if first >= last:
            return total if known else skip, []
        if desc:
            first, last = total - last, total - first  # the same positions, counted in time order
        out: list[Ent] = []
        if first < archived:
            events = self.engine.events(lo, w.end, [stream.sensor], min(last, archived) - first, first).events
            out = _from_events(self.graph, [dsid], events)
        if live is not None and last > archived and live[1].get(stream.twin_key) is not None:
            out.append(observation(dsid, stream, live[0], live[1][stream.twin_key], live[2]))
        if not known:  # more may lie before the window looked at: a full page says so (an @iot.nextLink)
            total = skip + len(out) + (1 if len(out) >= top else 0)
        return total, out[::-1] if desc else out

    def _count(self, sensor: str, start: datetime, end: datetime) -> int:
        return int(self.engine.events(start, end, [sensor], 1, 2**62).total)  # a count only: the offset is past the end
