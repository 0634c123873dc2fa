"""The read model's aggregate view without a broker: windows leave behind the horizon so what it holds stays flat over
a month of windows, the highest rev wins, tombstones delete, the newest window per metric and group is kept, and the
combined figures equal a recombination of every partial it holds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from api.aggview import AggregateView, BadPartial, parse_partial
from twin.aggregates import Partial, combine

T0 = datetime(2030, 1, 1, tzinfo=UTC)
Q = timedelta(minutes=15)
ROADS = [f"kiel:gaarden:road:r{i:04d}" for i in range(5)]


def p(window: datetime | None, shard: int, total: float, road: str = ROADS[0], metric: str = "traffic_vehicles") -> Partial:
    return Partial(metric, road, window, 900 if window else 0, shard, total=total, count=1, minimum=total, maximum=total)


def test_a_month_of_windows_stays_within_the_horizon() -> None:
    view = AggregateView(timedelta(hours=48))
    per_horizon = 48 * 4 + 1  # 15-minute windows whose end lies within 48 h of the newest end, plus the newest
    held = []
    for i in range(30 * 24 * 4):  # 30 days
        w = T0 + i * Q
        for road in ROADS:
            for shard in range(4):
                assert view.put(p(w, shard, 1.0, road).key, i, p(w, shard, float(i), road)) is None
        held.append(len(view))
        assert view.figures <= per_horizon * len(ROADS)
    assert max(held) <= per_horizon * len(ROADS) * 4  # flat: what the view holds does not grow with history
    figures = view.list()
    newest = T0 + (30 * 24 * 4 - 1) * Q
    assert {f["window"] for f in figures} == {(newest - k * Q).isoformat() for k in range(48 * 4)}
    assert view.expired == (30 * 24 * 4 - 48 * 4) * len(ROADS) * 4  # partials, one per shard
    latest = view.list(latest=True)
    assert [f["window"] for f in latest] == [newest.isoformat()] * len(ROADS)
    assert latest[0]["sum"] == 4 * float(30 * 24 * 4 - 1)
    # a partial older than the horizon that arrives late is not taken back in
    assert view.put(p(T0, 0, 1.0).key, 99, p(T0, 0, 1.0)) == "beyond_horizon"


def test_rev_tombstone_latest_and_combination_match_a_full_recombination() -> None:
    rng = random.Random(7)
    view = AggregateView(timedelta(hours=6))
    truth: dict[str, tuple[int, Partial]] = {}
    for _ in range(3000):
        w = T0 + rng.randrange(0, 40) * Q
        part = p(w, rng.randrange(4), float(rng.randrange(100)), rng.choice(ROADS[:2]))
        if rng.random() < 0.1:
            if view.delete(part.key):
                del truth[part.key]
            continue
        rev = rng.randrange(-1, 20)
        why = view.put(part.key, rev, part)
        old = truth.get(part.key)
        if why is None:
            assert old is None or rev > old[0] or (rev == old[0] and part != old[1])
            truth[part.key] = (rev, part)
        elif why == "stale_rev":
            assert old is not None and rev < old[0]
        elif why == "duplicate":
            assert old is not None and (rev, part) == old
    def alive_at(part: Partial) -> bool:  # the horizon rule per shard (twin.aggregates): the shard's own watermark
        cut = view.cutoff(part.shard, part.metric)
        return part.window is not None and (cut is None or part.window + Q > cut)

    alive = {k: v for k, v in truth.items() if alive_at(v[1])}
    groups: dict[tuple[str, str, str], list[Partial]] = {}
    for _, part in alive.values():
        groups.setdefault((part.metric, part.group, part.window.isoformat() if part.window else ""), []).append(part)
    assert view.list() == [combine(v) for _, v in sorted(groups.items())]
    newest: dict[tuple[str, str], str] = {}
    for m, g, w in groups:
        newest[(m, g)] = max(newest.get((m, g), ""), w)
    assert [(f["metric"], f["group"], f["window"]) for f in view.list(latest=True)] == sorted(
        (m, g, w) for (m, g), w in newest.items())


def test_current_values_never_leave_and_a_tombstone_of_the_newest_window_falls_back() -> None:
    view = AggregateView(timedelta(hours=1))
    parking = p(None, 0, 30.0, "kiel:gaarden:neighbourhood:gaarden", "parking_occupancy")
    view.put(parking.key, 0, parking)
    view.put(p(T0, 0, 1.0).key, 0, p(T0, 0, 1.0))
    view.put(p(T0 + Q, 0, 2.0).key, 0, p(T0 + Q, 0, 2.0))
    view.put(p(T0 + Q, 1, 2.0).key, 0, p(T0 + Q, 1, 2.0))
    view.put(p(T0 + 30 * 24 * Q, 1, 3.0, ROADS[1]).key, 0, p(T0 + 30 * 24 * Q, 1, 3.0, ROADS[1]))
    # the horizon is per shard: shard 1 moved on, so its window of road 0 left; shard 0's have not (yet)
    assert [(f["group"], f["count"]) for f in view.list(metric="traffic_vehicles")] == [
        (ROADS[0], 1), (ROADS[0], 1), (ROADS[1], 1)]
    view.put(p(T0 + 30 * 24 * Q, 0, 3.0, ROADS[1]).key, 0, p(T0 + 30 * 24 * Q, 0, 3.0, ROADS[1]))
    assert [f["metric"] for f in view.list()] == ["parking_occupancy", "traffic_vehicles"]  # road 0's windows left
    view.put(p(T0 + 30 * 24 * Q, 0, 5.0).key, 0, p(T0 + 30 * 24 * Q, 0, 5.0))
    view.put(p(T0 + 30 * 24 * Q + Q, 0, 6.0).key, 0, p(T0 + 30 * 24 * Q + Q, 0, 6.0))
    latest = {f["group"]: f["window"] for f in view.list(metric="traffic_vehicles", latest=True)}
    assert latest[ROADS[0]] == (T0 + 30 * 24 * Q + Q).isoformat()
    assert view.delete(p(T0 + 30 * 24 * Q + Q, 0, 6.0).key)
    latest = {f["group"]: f["window"] for f in view.list(metric="traffic_vehicles", latest=True)}
    assert latest[ROADS[0]] == (T0 + 30 * 24 * Q).isoformat()
    assert not view.delete("traffic_vehicles|nowhere|current|0")


@pytest.mark.parametrize("doc, says", [
    ([], "JSON object"),
    ({"metric": "m"}, "lacks group"),
    ({**p(T0, 0, 1.0).to_json(), "total": "many"}, "'total' must be a finite number"),
    ({**p(T0, 0, 1.0).to_json(), "count": -1}, "'count' must be an integer >= 0"),
    ({**p(T0, 0, 1.0).to_json(), "window": "2030-01-01T00:00:00"}, "no UTC offset"),
    ({**p(T0, 0, 1.0).to_json(), "window": "soon"}, "RFC 3339"),
    ({**p(T0, 0, 1.0).to_json(), "members": {"s": [1]}}, "'members'"),
    ({**p(T0, 0, 1.0).to_json(), "rev": 1.5}, "'rev' must be an integer"),
])
def test_broken_partials_say_what_is_wrong(doc: object, says: str) -> None:
    with pytest.raises(BadPartial, match=says):
        parse_partial(doc)
    assert parse_partial({**p(T0, 0, 1.0).to_json(), "rev": 4})[0] == 4
    old_data = p(T0, 0, 1.0).to_json()
    old_data.pop("rev", None)  # written before partials carried a rev
    assert parse_partial(old_data)[0] == -1
