"""One fold (issue 8 item 3): the live path and time travel find the same twin.

Hypothesis draws event sequences (readings of every aggregate kind, weather, water levels crossing the BSH surge
classes and the crests so alerts raise and clear, road works, defect reports, public events; duplicates, reordering,
late events within and beyond the aggregate horizon; times around UTC midnight written with +00:00, +01:00 and +02:00
offsets across the 2026 spring DST change). The same arrivals go

- through the LIVE path: the worker's own units (``streams.agents.SensorUnit`` / ``MunicipalUnit``) over an in-memory
  Tx (``tests.streams.test_agent_logic.MemoryTx``), batch records, batches split at drawn points, records redelivered,
  units restarted (their in-memory caches lost);
- through TIME TRAVEL: the real archive writer into Parquet (drawn flush points, snapshots, merges), then the function
  behind ``/history/state`` (``DuckDBHistory.state_at``) and the snapshot-free reference fold.

Time travel is defined (``streams.history.timetravel``): the twin at T is what the live worker holds when every event
that occurred after T was never sent and the others arrived as they did. So at a drawn T the live units are fed only
those events, and both must agree on sensors, coast, municipal state, aggregate partials (and the combined figures the
API's ``AggregateView`` shows from the live outputs), per-shard horizon watermarks, active alerts and the alert history
(every AlertRaised / AlertCleared, in order, with its event id).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.aggview import AggregateView
from schemas.codec import SingleObjectCodec, frame_batch
from streams.agents import AGGREGATE_TABLE, COAST_TABLE, MUNICIPAL_TABLE, SENSOR_TABLE, WATERMARK_KEY, MunicipalUnit, SensorUnit
from streams.catalogue import AGGREGATES, ALERTS, MUNICIPAL_TOPICS, SENSOR_TOPICS
from streams.history.engine import DuckDBHistory
from streams.history.store import Manifest
from streams.history.timetravel import full_fold, state_at
from streams.history.writer import ArchiveWriter
from streams.publisher import partition_for
from streams.serde import encode_event
from tests.streams.test_agent_logic import MemoryTx, Msg
from twin import aggregates
from twin.events import (
    AirQualityMeasured,
    AlertCleared,
    AlertRaised,
    DefectReported,
    Event,
    ParkingOccupancyReported,
    PublicEventScheduled,
    RoadWorksAnnounced,
    TrafficCounted,
    WaterLevelMeasured,
    WeatherObserved,
)
from twin.region import bundled_pack
from twin.state import TwinState, combined_aggregates

PACK = bundled_pack()
CODEC = SingleObjectCodec()
PARTITIONS = 2
HORIZON_H = 2.0
HORIZON = timedelta(hours=HORIZON_H)
T0 = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # two hours before UTC midnight; Europe/Berlin goes +01:00 -> +02:00 at 01:00
SPACING = timedelta(minutes=3)  # arrival clock: event i occurs around T0 + i * SPACING
ZONES = [UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=2))]


def _sensors(kind: str, n: int) -> list[str]:
    return sorted(str(s.id) for s in PACK.sensors.values() if s.sensor_kind == kind and s.neighbourhood)[:n]


TRAFFIC, AIR, PARKING, WEATHER = _sensors("traffic_count", 3), _sensors("air_quality", 2), _sensors("parking", 2), _sensors("weather", 1)
GAUGES = sorted(str(g) for g, segs in PACK.coast_by_gauge.items() if segs)  # gauges that feed coast segments
ROADS = sorted(str(r) for r in PACK.roads)[:2]
# around the surge classes (1.00 / 1.25 / 1.50 / 2.00 m, 5 cm hysteresis) and the crests (1.19 ... 2.3 m)
LEVELS = [0.1, 0.9, 0.97, 1.02, 1.22, 1.27, 1.47, 1.52, 1.97, 2.03, 2.2, 2.5, 3.0]
KINDS = ["traffic", "traffic", "air", "parking", "weather", "water", "water", "works", "defect", "public", "dup"]

profile = "drill" if os.environ.get("PLIETSCH_DRILL") == "full" else "bounded"
settings.register_profile("onefold-bounded", max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("onefold-drill", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = settings.get_profile(f"onefold-{profile}")

# one step of the arrival stream: (kind, lateness in minutes, zone, a value, a pick)
LATENESS = st.one_of(st.integers(-20, 4), st.integers(-20, 4), st.integers(-400, -100))  # within / beyond the horizon
STEP = st.tuples(st.sampled_from(KINDS), LATENESS, st.integers(0, 2), st.integers(0, 10_000), st.integers(0, 10_000))


def make_event(i: int, kind: str, late_min: int, zone: int, value: int, pick: int) -> Event:
    t = (T0 + i * SPACING + timedelta(minutes=late_min, seconds=value % 60)).astimezone(ZONES[zone])
    env: dict[str, Any] = {"region": "kiel", "occurred_at": t, "source": "onefold", "event_id": f"e{i}"}
    if kind == "traffic":
        return TrafficCounted(entity_id=TRAFFIC[pick % len(TRAFFIC)], vehicles=value % 60, interval_s=60, **env)
    if kind == "air":
        return AirQualityMeasured(entity_id=AIR[pick % len(AIR)], no2_ugm3=value % 97 / 3.0, pm10_ugm3=value % 41 / 7.0,
                                  pm25_ugm3=value % 13 * 0.1, **env)
    if kind == "parking":
        return ParkingOccupancyReported(entity_id=PARKING[pick % len(PARKING)], occupied=value % 101, capacity=100, **env)
    if kind == "weather":
        return WeatherObserved(entity_id=WEATHER[0], temperature_c=value % 30 - 5, wind_speed_ms=value % 20,
                               wind_dir_deg=value % 360, precipitation_mm=0.0, **env)
    if kind == "water":
        return WaterLevelMeasured(entity_id=GAUGES[pick % len(GAUGES)], level_m=LEVELS[value % len(LEVELS)], **env)
    if kind == "works":  # works that are over already (off) or still to come / running (on)
        start = t + timedelta(hours=(value % 7) - 5)
        return RoadWorksAnnounced(entity_id=ROADS[pick % len(ROADS)], starts_at=start, ends_at=start + timedelta(hours=2),
                                  lanes_closed=value % 3, description=f"works {i}", **env)
    if kind == "defect":
        return DefectReported(entity_id=f"kiel:gaarden:report:d{pick % 3}", category="pothole", description=f"hole {i}",
                              lon=10.13, lat=54.31, **env)
    return PublicEventScheduled(entity_id=f"kiel:_:event:fest{pick % 2}", title="Fest", starts_at=t,
                                ends_at=t + timedelta(hours=5), expected_visitors=value, lon=10.1, lat=54.3, **env)


def topic_of(e: Event) -> str:
    if isinstance(e, RoadWorksAnnounced):
        return MUNICIPAL_TOPICS["road_works"].name
    if isinstance(e, DefectReported):
        return MUNICIPAL_TOPICS["defect_reports"].name
    if isinstance(e, PublicEventScheduled):
        return MUNICIPAL_TOPICS["public_events"].name
    return SENSOR_TOPICS[type(e).sensor_kind].name  # type: ignore[attr-defined]


def arrivals(steps: list[tuple[str, int, int, int, int]]) -> list[Event]:
    out: list[Event] = []
    for i, (kind, late, zone, value, pick) in enumerate(steps):
        if kind == "dup":
            if out:  # the same event sent again, in a later record (a producer retry, a re-import)
                out.append(out[pick % len(out)])
            continue
        out.append(make_event(i, kind, late, zone, value, pick))
    return out


Record = tuple[str, int, int, list[Event]]  # topic, partition, offset, the events of one Kafka record


def records(events: list[Event], joins: list[bool]) -> list[Record]:
    """Kafka records in arrival order: an event joins the previous record when drawn so and on the same topic and
    partition (batch records), else starts one; offsets count per (topic, partition)."""
    out: list[Record] = []
    offsets: dict[tuple[str, int], int] = {}
    for i, e in enumerate(events):
        topic, part = topic_of(e), partition_for(str(e.entity_id).encode(), PARTITIONS)
        if out and joins[i % len(joins)] and out[-1][0] == topic and out[-1][1] == part and len(out[-1][3]) < 4:
            out[-1][3].append(e)
            continue
        off = offsets.get((topic, part), 0)
        offsets[(topic, part)] = off + 1
        out.append((topic, part, off, [e]))
    return out


def message(rec: Record) -> Msg:
    topic, part, off, events = rec
    datums = [encode_event(CODEC, e) for e in events]
    if topic.startswith("municipal.") and len(datums) == 1:
        return Msg(topic, part, off, datums[0], key=str(events[0].entity_id).encode(), headers=[])
    return Msg(topic, part, off, frame_batch(datums), key=str(events[0].entity_id).encode())


class Live:
    """The worker's units over in-memory transactions, one pair per input partition, fed in batches."""

    def __init__(self) -> None:
        self.sensor_tx, self.municipal_tx = MemoryTx(SensorUnit.tables), MemoryTx(MunicipalUnit.tables)
        self.restart()

    def restart(self) -> None:  # a new worker process: nothing survives but the committed tables
        self.sensor = SensorUnit(CODEC, PACK, "e1", HORIZON_H)
        self.municipal = MunicipalUnit(CODEC, PACK, "e1")

    def feed(self, recs: list[Record], cuts: list[int], again: list[int]) -> None:
        """Process *recs* in arrival order; per (unit, partition) a batch ends at the drawn cut points; after a batch,
        its last ``again`` records are delivered once more (a crash before the consumer offset was committed)."""
        pending: dict[tuple[bool, int], list[Msg]] = {}
        for i, rec in enumerate(recs):
            key = (rec[0].startswith("municipal."), rec[1])
            pending.setdefault(key, []).append(message(rec))
            if cuts[i % len(cuts)] % 3 == 0:
                self._run(key, pending.pop(key), again[i % len(again)])
            if cuts[i % len(cuts)] == 7:
                self.restart()
        for key, msgs in pending.items():
            self._run(key, msgs, 0)

    def _run(self, key: tuple[bool, int], msgs: list[Msg], again: int) -> None:
        municipal, p = key
        unit, tx = (self.municipal, self.municipal_tx) if municipal else (self.sensor, self.sensor_tx)
        unit.process(tx, p, msgs)  # type: ignore[attr-defined]
        if again:
            unit.process(tx, p, msgs[-again:])  # type: ignore[attr-defined]

    def twin(self) -> dict[str, Any]:
        def table(tx: MemoryTx, name: str) -> dict[str, Any]:
            return {k.decode(): v for p in range(PARTITIONS) for k, v in tx.part(p)[name].items()
                    if not k.startswith(b"__")}

        alerts = alert_history([(CODEC.decode(v)[0], CODEC.decode(v)[1]) for t, _, v, _ in self.sensor_tx.outputs
                                if t == ALERTS.name and v is not None])
        view = AggregateView(HORIZON)  # the API's view of the aggregates, fed the live outputs
        for t, k, v, _ in self.sensor_tx.outputs:
            if t != AGGREGATES.name:
                continue
            if v is None:
                view.delete(k.decode())
                continue
            rec = CODEC.decode(v)[1]
            doc = json.loads(rec["partial_json"])
            view.put(k.decode(), doc["rev"], aggregates.Partial.from_json(doc), datetime.fromisoformat(rec["occurred_at"]))
        marks = {p: self.sensor_tx.part(p)[AGGREGATE_TABLE].get(WATERMARK_KEY) for p in range(PARTITIONS)}
        watermarks = {p: {n: datetime.fromisoformat(t) for n, t in m.items()} for p, m in marks.items() if m}
        return {
            "sensors": table(self.sensor_tx, SENSOR_TABLE),
            "coast": table(self.sensor_tx, COAST_TABLE),
            "municipal": table(self.municipal_tx, MUNICIPAL_TABLE),
            "partials": partials({k: aggregates.Partial.from_json(v) for k, v in table(self.sensor_tx, AGGREGATE_TABLE).items()}),
            "watermarks": watermarks,
            "alert_history": alerts,
            "active_alerts": active(alerts),
            "api_figures": rounded(view.list()),
        }


def alert_history(items: list[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Alert events as the read side sees them, per alert id in order: deduplicated by event id (a batch done again
    repeats its ids). Only the order per alert id is defined: alerts of gauges on different partitions interleave as
    the partitions are consumed."""
    seen: set[str] = set()
    out: dict[str, list[dict[str, Any]]] = {}
    for name, rec in items:
        if rec["event_id"] in seen:
            continue
        seen.add(rec["event_id"])
        model = (AlertRaised if name == "AlertRaised" else AlertCleared).model_validate(rec)
        out.setdefault(model.alert_id, []).append({"type": name, **model.model_dump(mode="json")})
    return dict(sorted(out.items()))


def active(history: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {aid: {k: v for k, v in seq[-1].items() if k != "type"} for aid, seq in history.items()
            if seq[-1]["type"] == "AlertRaised"}


def rounded(x: Any) -> Any:
    """Floats to 9 significant digits: a batch adds a window's readings in another association than one by one."""
    if isinstance(x, float):
        return float(f"{x:.9g}")
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [rounded(v) for v in x]
    return x


def partials(ps: dict[str, aggregates.Partial]) -> dict[str, Any]:
    """Partials without ``rev`` (it counts writes: one per batch live, one per event in a fold; readers only order by it)."""
    return {k: rounded({f: v for f, v in p.to_json().items() if f != "rev"}) for k, p in sorted(ps.items())}


def travelled(state: TwinState, log: list[Any]) -> dict[str, Any]:
    def js(x: Any) -> Any:
        return json.loads(json.dumps(x))

    history = alert_history([(type(a).__name__, a.model_dump(mode="json")) for a in log])
    figures = combined_aggregates(state)
    return {
        "sensors": js({k: v.to_json() for k, v in state.sensors.items()}),
        "coast": js({k: v.to_json() for k, v in state.coast.items()}),
        "municipal": js(state.municipal),
        "partials": partials(state.aggregates),
        "watermarks": {p: m for p, m in state.watermarks.items() if m},
        "alert_history": history,
        "active_alerts": {k: a.model_dump(mode="json") for k, a in state.alerts.items()},
        "api_figures": rounded([figures[k] for k in sorted(figures, key=_figure_order)]),
    }


def _figure_order(k: str) -> tuple[str, str, str]:
    metric, group, window = k.split("|")
    return metric, group, "" if window == "current" else window


def archive(root: Path, recs: list[Record], flush_at: list[bool], every: int) -> Manifest:
    w = ArchiveWriter(root, PACK, epoch="e1", snapshot_every=every, fanin=4, horizon=HORIZON)
    for i, (topic, part, off, events) in enumerate(recs):
        for j, e in enumerate(events):
            w.add(topic, part, off, e, encode_event(CODEC, e), batch_index=j if len(events) > 1 or
                  topic.startswith("sensor.") else -1)
        if flush_at[i % len(flush_at)]:
            w.flush()
    w.flush()
    return Manifest.load(root)


def compare(live: dict[str, Any], tt: dict[str, Any], what: str) -> None:
    for part in live:
        assert live[part] == tt[part], f"{what}: {part} differ"


@pytest.mark.drill  # bounded in make test (20 examples), 150 in make drill (PLIETSCH_DRILL=full)
@PROFILE
@given(steps=st.lists(STEP, min_size=5, max_size=90), joins=st.lists(st.booleans(), min_size=1, max_size=30),
       cuts=st.lists(st.integers(0, 8), min_size=1, max_size=30), again=st.lists(st.integers(0, 2), min_size=1, max_size=10),
       flush_at=st.lists(st.booleans(), min_size=1, max_size=20), every=st.integers(2, 40),
       at_pick=st.integers(0, 10_000))
def test_live_units_and_time_travel_find_the_same_twin(steps: list[tuple[str, int, int, int, int]], joins: list[bool],
                                                       cuts: list[int], again: list[int], flush_at: list[bool],
                                                       every: int, at_pick: int) -> None:
    events = arrivals(steps)
    recs = records(events, joins)
    live = Live()
    live.feed(recs, cuts, again)
    with tempfile.TemporaryDirectory() as tmp:
        m = archive(Path(tmp), recs, flush_at, every)
        engine = DuckDBHistory(Path(tmp), PACK, horizon=HORIZON)
        try:
            # after the last event: the whole archive
            log: list[Any] = []
            reference = full_fold(m, PACK, None, HORIZON, log)
            got = live.twin()
            compare(got, travelled(reference, log), "after the last event (reference fold)")
            end = max(e.occurred_at for e in events)
            snap_state = engine.state_at(end)  # what /history/state?time= answers
            for part, value in travelled(snap_state, log).items():
                if part != "alert_history":  # the alert history needs the fold from the start (checked above)
                    assert value == got[part], f"/history/state at the end: {part} differ"
            # at a drawn T: the live units fed only the events that occurred at or before T, in arrival order
            times = sorted({e.occurred_at for e in events})
            at = times[at_pick % len(times)] + timedelta(seconds=at_pick % 3 - 1)
            before = [e for e in events if e.occurred_at <= at]
            live_at = Live()
            live_at.feed(records(before, joins), cuts[::-1], again)
            want = live_at.twin()
            log_at: list[Any] = []
            compare(want, travelled(full_fold(m, PACK, at, HORIZON, log_at), log_at), f"at {at.isoformat()} (reference)")
            for name, state in (("/history/state", engine.state_at(at)), ("state_at", state_at(m, PACK, at, None, HORIZON))):
                for part, value in travelled(state, []).items():
                    if part != "alert_history":
                        assert value == want[part], f"{name} at {at.isoformat()}: {part} differ"
        finally:
            engine.close()


def test_the_property_sees_what_it_claims() -> None:
    """The strategy is not toothless: a fixed sequence raises and clears surge alerts, evicts windows beyond the
    horizon, skips a reading beyond it, crosses UTC midnight with +02:00 times, and holds municipal state."""
    steps = [("water", 0, 2, 3, 0), ("traffic", 0, 1, 5, 0), ("water", 0, 2, 7, 0), ("traffic", -300, 0, 9, 0),
             ("water", 0, 0, 0, 0), ("works", 0, 2, 1, 0), ("defect", 0, 1, 2, 0), ("public", 0, 0, 3, 0)]
    steps += [("traffic", 0, 2, k, 0) for k in range(70)] + [("water", 0, 1, 10, 0), ("water", 0, 2, 0, 0)]
    events = arrivals(steps)
    assert any(e.occurred_at.utcoffset() == timedelta(hours=2) and e.occurred_at.astimezone(UTC).date() != e.occurred_at.date()
               for e in events)  # a +02:00 time whose local day is not its UTC day
    live = Live()
    live.feed(records(events, [False]), [0], [1])
    twin = live.twin()
    kinds = [(a["type"], a["category"]) for seq in twin["alert_history"].values() for a in seq]
    assert ("AlertRaised", "storm_surge") in kinds and ("AlertCleared", "storm_surge") in kinds
    assert twin["municipal"] and any(k.startswith("traffic_vehicles") for k in twin["partials"])
    first_window = aggregates.window_start(events[1].occurred_at, aggregates.TRAFFIC_WINDOW).isoformat()
    assert not any(first_window in k for k in twin["partials"])  # evicted: behind the horizon
    late = aggregates.window_start(events[3].occurred_at, aggregates.TRAFFIC_WINDOW).isoformat()
    assert not any(late in k for k in twin["partials"])  # skipped: beyond the horizon when it came
    with tempfile.TemporaryDirectory() as tmp:
        m = archive(Path(tmp), records(events, [False]), [True], 5)
        log: list[Any] = []
        compare(twin, travelled(full_fold(m, PACK, None, HORIZON, log), log), "fixed sequence")
