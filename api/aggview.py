"""The read model's view of the windowed aggregates (pure: no Kafka, no locks; the read model holds the lock).

``twin.aggregates`` carries one partial per ``metric|group|window|shard`` key. This view keeps, per key, the partial
with the highest ``rev`` (contract 8; a partial without one counts as rev -1; of two with the same rev the later),
combines the shards of one ``(metric, group, window)`` again only after one of them changed (so a request costs the
figures it returns and those that changed, never a recombination of every partial held), remembers the newest window
per ``(metric, group)``, and lets partials leave by the one horizon rule of ``twin.aggregates`` (the worker's and time
travel's): per shard and reading type, a partial leaves once its window ends at or before ``watermark - horizon``, the
watermark being the newest reading time of its type on its shard, which each ``AggregateUpdated`` carries as its
``occurred_at`` (event time, since the simulator can run accelerated). A tombstone (a record without a value) deletes its key's partial.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from twin.aggregates import SOURCE, Partial, combine, cutoff

FigureKey = tuple[str, str, datetime | None]  # metric, group, window (None: a current value such as parking)


class BadPartial(ValueError):
    """``partial_json`` does not hold a usable partial; the message says what is wrong with which value."""


def _number(d: dict[str, Any], name: str, optional: bool = False) -> None:
    v = d.get(name)
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise BadPartial(f"{name!r} must be a finite number{' or null' if optional else ''}, got {v!r}")


def parse_partial(doc: Any) -> tuple[int, Partial]:
    """The (rev, partial) in a decoded ``partial_json`` document, checked field by field."""
    if not isinstance(doc, dict):
        raise BadPartial(f"partial_json must be a JSON object, got {type(doc).__name__}")
    missing = [k for k in ("metric", "group", "window", "window_s", "shard", "total", "count", "minimum", "maximum",
                           "members") if k not in doc]
    if missing:
        raise BadPartial(f"partial_json lacks {', '.join(missing)}")
    for name in ("metric", "group"):
        if not isinstance(doc[name], str) or not doc[name]:
            raise BadPartial(f"{name!r} must be a non-empty string, got {doc[name]!r}")
    for name in ("window_s", "shard", "count"):
        if isinstance(doc[name], bool) or not isinstance(doc[name], int) or doc[name] < 0:
            raise BadPartial(f"{name!r} must be an integer >= 0, got {doc[name]!r}")
    _number(doc, "total")
    _number(doc, "minimum", optional=True)
    _number(doc, "maximum", optional=True)
    if not isinstance(doc["members"], dict) or not all(
            isinstance(v, list) and len(v) >= 2 and all(not isinstance(x, bool) and isinstance(x, int | float)
                                                       and math.isfinite(x) for x in v[:2]) for v in doc["members"].values()):
        raise BadPartial("'members' must map sensor ids to [value, capacity, ...] lists of finite numbers")
    rev = doc.get("rev", -1)
    if isinstance(rev, bool) or not isinstance(rev, int):
        raise BadPartial(f"'rev' must be an integer, got {rev!r}")
    window = doc["window"]
    if window is not None:
        try:
            when = datetime.fromisoformat(window)
        except (TypeError, ValueError):
            raise BadPartial(f"'window' must be an RFC 3339 time with a UTC offset or null, got {window!r}") from None
        if when.tzinfo is None:
            raise BadPartial(f"'window' {window!r} has no UTC offset")
    try:
        return rev, Partial.from_json(doc)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise BadPartial(f"partial_json does not make a partial: {type(exc).__name__}: {exc}") from None


@dataclass(slots=True)
class _Kept:
    rev: int
    partial: Partial
    figure: FigureKey


class AggregateView:
    def __init__(self, horizon: timedelta) -> None:
        self.horizon = horizon
        self._kept: dict[str, _Kept] = {}
        self._shards: dict[FigureKey, dict[str, Partial]] = {}
        # the combined figure per key; None after one of its shards changed: combined again when next read, so a
        # request combines only what changed since the last one (and applying a partial combines nothing)
        self._figures: dict[FigureKey, dict[str, Any] | None] = {}
        self._windows: dict[tuple[str, str], set[datetime | None]] = {}
        self._latest: dict[tuple[str, str], datetime | None] = {}
        # per (shard, reading type): a heap of (window end, key), the candidates for leaving
        self._heaps: dict[tuple[int, str], list[tuple[datetime, str]]] = {}
        self._order: list[FigureKey] | None = None  # figures sorted for listing; None after a key came or went
        self.watermarks: dict[tuple[int, str], datetime] = {}  # per (shard, reading type): the horizon rule's watermark
        self.expired = 0  # partials that left because they fell behind the horizon

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def figures(self) -> int:
        return len(self._figures)

    def cutoff(self, shard: int, metric: str) -> datetime | None:
        """The metric's windows of the shard ending at or before this have left (None until one was seen)."""
        wm = self.watermarks.get((shard, SOURCE.get(metric, metric)))
        return None if wm is None else cutoff(wm, self.horizon)

    # -- changes ----------------------------------------------------------------------------------------------------
    def put(self, key: str, rev: int, partial: Partial, watermark: datetime | None = None) -> str | None:
        """Keep *partial* under *key*; returns None when kept, else why not ('stale_rev', 'duplicate', 'beyond_horizon').

        *watermark*: the shard's newest reading time when the partial was written (the record's ``occurred_at``); None
        counts the window's end. Of two partials with the same rev the later one wins unless they are equal (a
        redelivery changes nothing): the same rev with other figures comes from a transaction that was aborted and
        redone, and the redone one is later in the partition (a broker that hands aborted records to read_committed
        readers, as Tansu does, shows both)."""
        kept = self._kept.get(key)
        if kept is not None and rev < kept.rev:
            return "stale_rev"
        if kept is not None and rev == kept.rev and partial == kept.partial:
            return "duplicate"
        end = None if partial.window is None else partial.window + timedelta(seconds=partial.window_s)
        src = (partial.shard, SOURCE.get(partial.metric, partial.metric))
        wm = None if end is None else watermark if watermark is not None else end
        advanced = wm is not None and (src not in self.watermarks or wm > self.watermarks[src])
        if advanced:
            self.watermarks[src] = wm  # type: ignore[assignment]
        cut = self.cutoff(partial.shard, partial.metric)
        if end is not None and cut is not None and end <= cut:
            if advanced:
                self._expire(src)
            return "beyond_horizon"
        figure: FigureKey = (partial.metric, partial.group, partial.window)
        if kept is not None and kept.figure != figure:  # the key now names another figure: leave the old one
            self._drop_shard(key, kept.figure)
        self._kept[key] = _Kept(rev, partial, figure)
        shards = self._shards.get(figure)
        if shards is None:
            shards = self._shards[figure] = {}
            self._order = None
            mg = (partial.metric, partial.group)
            self._windows.setdefault(mg, set()).add(partial.window)
            if mg not in self._latest or _later(partial.window, self._latest[mg]):
                self._latest[mg] = partial.window
        if end is not None and (kept is None or kept.figure != figure):
            heapq.heappush(self._heaps.setdefault(src, []), (end, key))
        shards[key] = partial
        self._figures[figure] = None
        if advanced:
            self._expire(src)
        return None

    def delete(self, key: str) -> bool:
        kept = self._kept.pop(key, None)
        if kept is None:
            return False
        self._drop_shard(key, kept.figure)
        return True

    def _drop_shard(self, key: str, figure: FigureKey) -> None:
        shards = self._shards.get(figure)
        if shards is None:
            return
        shards.pop(key, None)
        if shards:
            self._figures[figure] = None
        else:
            self._drop_figure(figure)

    def _drop_figure(self, figure: FigureKey) -> None:
        for key in self._shards.pop(figure, {}):
            self._kept.pop(key, None)
        self._figures.pop(figure, None)
        self._order = None
        metric, group, window = figure
        mg = (metric, group)
        windows = self._windows.get(mg)
        if windows is not None:
            windows.discard(window)
            if not windows:
                del self._windows[mg]
                self._latest.pop(mg, None)
            elif self._latest.get(mg) == window:
                self._latest[mg] = max(windows, key=_sort_window)

    def _expire(self, src: tuple[int, str]) -> None:
        wm = self.watermarks.get(src)
        cut = None if wm is None else cutoff(wm, self.horizon)
        heap = self._heaps.get(src)
        while cut is not None and heap and heap[0][0] <= cut:
            end, key = heapq.heappop(heap)
            kept = self._kept.get(key)
            if kept is None or kept.partial.window is None:
                continue
            if kept.partial.window + timedelta(seconds=kept.partial.window_s) != end:
                continue  # the key was put again with another window: its own heap entry decides
            self.delete(key)
            self.expired += 1

    # -- reading ----------------------------------------------------------------------------------------------------
    def list(self, metric: str | None = None, group: str | None = None, latest: bool = False) -> list[dict[str, Any]]:
        """Combined figures, sorted by metric, group and window; with *latest* only the newest window of each."""
        if latest:
            keys = [(m, g, w) for (m, g), w in self._latest.items()
                    if (metric is None or m == metric) and (group is None or g == group)]
            keys.sort(key=_sort_key)
        else:
            if self._order is None:
                self._order = sorted(self._figures, key=_sort_key)
            keys = [k for k in self._order if (metric is None or k[0] == metric) and (group is None or k[1] == group)]
        out = []
        for k in keys:
            figure = self._figures[k]
            if figure is None:
                figure = self._figures[k] = combine(self._shards[k].values())
            out.append(figure)
        return out


def _sort_window(w: datetime | None) -> str:
    return "" if w is None else w.isoformat()


def _sort_key(k: FigureKey) -> tuple[str, str, str]:
    return k[0], k[1], _sort_window(k[2])


def _later(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return b is None and a is not None
    return a > b
