"""Entities as SensorThings JSON (OGC 18-088, 9.2): ``@iot.id``, ``@iot.selfLink``, ``<Navigation>@iot.navigationLink``,
``$select``, ``$expand`` (nested, each with its own options), collections with ``@iot.count`` and ``@iot.nextLink``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from api.sensorthings.model import NAVIGATION, Ent, Graph
from api.sensorthings.observations import Observations
from api.sensorthings.odata import Options, evaluate, sort_key

SAFE = ":@'"  # kept as they are in links: Things('kiel:_:sensor:gauge-holtenau')


def key(eid: str) -> str:
    """An id as a URL key: 'quoted', a quote doubled (OData string literal)."""
    return "'" + eid.replace("'", "''") + "'"


def unkey(raw: str) -> str | None:
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1].replace("''", "'")
    return raw if raw.isdigit() else None


@dataclass
class View:
    graph: Graph
    base: str  # the service root URL, e.g. http://host/sta/v1.1
    page: int  # $top when a request gives none
    max_top: int
    obs: Observations | None = None

    def self_link(self, e: Ent) -> str:
        return f"{self.base}/{e.set}({quote(key(e.id), safe=SAFE)})"

    def entity(self, set_name: str, eid: str) -> Ent | None:
        if set_name == "Observations":
            return self.obs.one(eid) if self.obs is not None else None
        return self.graph.get(set_name, eid)

    def resolve(self, e: Any, segments: list[str]) -> Any:
        """The value of a path (property, property/key, Navigation/property) on an entity; None when it names nothing."""
        if not segments or not isinstance(e, Ent):
            return None
        head, rest = segments[0], segments[1:]
        if head in ("id", "@iot.id"):
            return e.id if not rest else None
        if head in e.props:
            v = e.props[head]
            for s in rest:
                v = v.get(s) if isinstance(v, dict) else None
            return v
        target = NAVIGATION[e.set].get(head)
        linked = e.links.get(head)
        if target is not None and isinstance(linked, str):  # a singular navigation: Datastream/id, Thing/name
            return self.resolve(self.entity(target, linked), rest)
        return None

    def by(self, segments: tuple[str, ...]) -> Any:
        """A sort key: the value of a path on an entity."""
        def sort(x: Ent) -> tuple[int, Any]:
            return sort_key(self.resolve(x, list(segments)))
        return sort

    def streams_of(self, e: Ent) -> list[str]:
        """The Datastreams whose Observations an entity's Observations navigation means."""
        if e.set == "Datastreams":
            return [e.id]
        return [d for d, s in self.graph.streams.items() if s.foi == e.id]

    def related(self, e: Ent, nav: str, o: Options) -> tuple[int, list[Ent]] | Ent | None:
        """A navigation's target: (count, page) of a collection, or the one entity (or None)."""
        target = NAVIGATION[e.set][nav]
        linked = e.links.get(nav)
        if target == "Observations" and self.obs is not None:
            return self.obs.query(self.streams_of(e), o, min(self.page, self.max_top))
        if isinstance(linked, list):
            return self.collection([x for i in linked if (x := self.graph.get(target, i)) is not None], o)
        return self.entity(target, linked) if isinstance(linked, str) else None

    def collection(self, items: list[Ent], o: Options) -> tuple[int, list[Ent]]:
        if o.filter is not None:
            flt = o.filter
            items = [x for x in items if evaluate(flt, x, self.resolve)]
        for path, desc in reversed(o.orderby):
            items = sorted(items, key=self.by(path.segments), reverse=desc)
        top = min(self.page if o.top is None else o.top, self.max_top)
        return len(items), items[o.skip: o.skip + top]

    def render(self, e: Ent, o: Options) -> dict[str, Any]:
        out: dict[str, Any] = {}
        sel = None if o.select is None else set(o.select)
        if sel is None or "id" in sel:
            out["@iot.id"] = e.id
        if sel is None or "selfLink" in sel:
            out["@iot.selfLink"] = self.self_link(e)
        for k, v in e.props.items():
            if sel is None or k in sel:
                out[k] = v
        for nav in NAVIGATION[e.set]:
            if sel is None or nav in sel:
                out[f"{nav}@iot.navigationLink"] = f"{self.self_link(e)}/{nav}"
        for nav, inner in o.expand.items():
            if nav not in NAVIGATION[e.set]:
                continue  # e.g. $expand=Datastreams on a collection of several sets' entities: not this one's
            got = self.related(e, nav, inner)
            if isinstance(got, tuple):
                total, page = got
                if inner.count:
                    out[f"{nav}@iot.count"] = total
                out[nav] = [self.render(x, inner) for x in page]
            else:
                out[nav] = None if got is None else self.render(got, inner)
        return out

    def answer(self, total: int, page: list[Ent], o: Options, url: str, params: dict[str, str]) -> dict[str, Any]:
        """A collection's JSON; ``@iot.nextLink`` when more follow (the same request, $skip moved on)."""
        out: dict[str, Any] = {}
        if o.count:
            out["@iot.count"] = total
        top = min(self.page if o.top is None else o.top, self.max_top)
        if o.skip + top < total and top > 0:
            nxt = {**params, "$top": str(top), "$skip": str(o.skip + top)}
            out["@iot.nextLink"] = url + "?" + "&".join(f"{k}={quote(v, safe='$,()/:')}" for k, v in nxt.items())
        out["value"] = [self.render(x, o) for x in page]
        return out
