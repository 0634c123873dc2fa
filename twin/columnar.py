"""The batch folds on columns (polars DataFrames of readings, one frame per record name, rows in arrival order, with
``_t`` = ``occurred_at`` as UTC epoch microseconds): the same results as ``twin.sensors.fold_rows`` and
``twin.aggregates.fold_rows`` on the same rows (tested), with the per-reading work done by polars and Python work
only per changed sensor and per changed aggregate key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from twin import aggregates
from twin.entities import Sensor
from twin.sensors import SensorState, build_states
from twin.sensors import fold_rows as fold_sensor_rows

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

Row = tuple[str, dict[str, Any], datetime]


def micros(t: datetime) -> int:
    """An aware datetime as UTC epoch microseconds (what ``_t`` holds)."""
    return (t - EPOCH) // _US


def fields(df: pl.DataFrame) -> list[str]:
    """The record's own columns (not the bookkeeping ones that start with '_')."""
    return [c for c in df.columns if not c.startswith("_")]


def to_rows(name: str, df: pl.DataFrame) -> list[Row]:
    """A frame as light rows ``(record name, Avro dict, occurred_at)``, the per-reading folds' input."""
    parse = datetime.fromisoformat
    cols = fields(df)
    t_at = cols.index("occurred_at")
    # column by column (no query: a select plans one, a fixed cost that a take of a few readings would feel)
    return [(name, dict(zip(cols, values, strict=True)), parse(values[t_at]))
            for values in zip(*[df.get_column(c).to_list() for c in cols], strict=True)]


def rows_of(frames: Mapping[str, pl.DataFrame]) -> list[Row]:
    """All rows as light rows, frame by frame, each in its order (the folds are per record name, so the order across
    names does not change their result)."""
    return [row for name, df in frames.items() if len(df) for row in to_rows(name, df)]


def rows_by_record(frames: Mapping[str, pl.DataFrame]) -> dict[int, list[Row]]:
    """Light rows per record position (``_m``), in datum order across record names."""
    keyed: dict[int, list[tuple[int, Row]]] = {}
    parse = datetime.fromisoformat
    for name, df in frames.items():
        cols = fields(df)
        t_at = cols.index("occurred_at")
        columns = [df[c].to_list() for c in cols]
        for k, i, *values in zip(df["_m"].to_list(), df["_i"].to_list(), *columns, strict=True):
            keyed.setdefault(k, []).append((i, (name, dict(zip(cols, values, strict=True)), parse(values[t_at]))))
    out: dict[int, list[Row]] = {}
    for k, items in keyed.items():
        if len(frames) > 1:
            items.sort(key=lambda x: x[0])
        out[k] = [row for _, row in items]
    return out


def fold_sensors(states: dict[str, SensorState | None], frames: Mapping[str, pl.DataFrame],
                 sensor_kind: Callable[[str], str]) -> dict[str, SensorState]:
    """``twin.sensors.fold_rows`` on frames: *states* holds every sensor in the frames (None: no state yet) and is
    updated; returns the changed states.

    Per sensor a reading is accepted when its time is not before the newest so far (the state's and the earlier rows')
    and it is not the event just accepted. Without repeated event ids in a sensor's rows the second rule never fires,
    so the accepted rows are those with ``_t >= max(earlier _t, state's time)``: one window expression. A sensor whose
    rows repeat an event id takes the per-reading fold."""
    pending: dict[str, list[Any]] = {}
    changed: dict[str, SensorState] = {}
    prev_t = {sid: micros(st.observed_at) for sid, st in states.items() if st is not None}
    prev_e = {sid: st.last_event_id for sid, st in states.items() if st is not None}
    for name, df in frames.items():
        if not len(df):
            continue
        d = df.select("entity_id", "event_id", "_t").with_row_index("_r").with_columns(
            pt=pl.col("entity_id").replace_strict(prev_t, default=None, return_dtype=pl.Int64),
            pe=pl.col("entity_id").replace_strict(prev_e, default=None, return_dtype=pl.String))
        dup = (d.group_by("entity_id")
               .agg(((pl.col("event_id").n_unique() < pl.len()) | (pl.col("event_id") == pl.col("pe")).fill_null(False).any())
                    .alias("dup"))
               .filter(pl.col("dup"))["entity_id"].to_list())
        if dup:
            changed.update(fold_sensor_rows(states, to_rows(name, df.filter(pl.col("entity_id").is_in(dup))), sensor_kind))
            d = d.filter(~pl.col("entity_id").is_in(dup))
        prior = pl.max_horizontal(pl.col("_t").cum_max().shift(1).over("entity_id"), pl.col("pt"))
        accepted = (d.filter(prior.is_null() | (pl.col("_t") >= prior))
                    .group_by("entity_id").agg(n=pl.len(), last=pl.col("_r").last()))
        cols = fields(df)
        for sid, n, r in accepted.iter_rows():
            rec = dict(zip(cols, df.row(r)[: len(cols)], strict=True))
            pending[sid] = [n, rec, datetime.fromisoformat(rec["occurred_at"]), name]
    changed.update(build_states(states, pending, sensor_kind))
    return changed


class Groups:
    """Which aggregate group each sensor feeds (``twin.aggregates.fold_rows``' rules), as mappings for polars."""

    def __init__(self, sensors: Mapping[str, Sensor]) -> None:
        self.road = {sid: str(s.road) for sid, s in sensors.items() if s.road}
        self.neighbourhood = {sid: str(s.neighbourhood) for sid, s in sensors.items() if s.neighbourhood}


def _windowed(acc: aggregates.Acc, df: pl.DataFrame, groups: dict[str, str], metrics: tuple[tuple[str, str], ...],
              ws: int) -> None:
    cols = [f for _, f in metrics]
    d = (df.select("entity_id", "_t", *cols)
         .with_columns(g=pl.col("entity_id").replace_strict(groups, default=None, return_dtype=pl.String))
         .filter(pl.col("g").is_not_null()))
    if not len(d):
        return
    t = pl.col("_t")
    secs = pl.when(t >= 0).then(t // 1_000_000).otherwise(-((-t) // 1_000_000))  # int(t.timestamp()) truncates
    aggs: list[pl.Expr] = [pl.len().alias("_n")]
    for f in cols:
        v = pl.col(f).cast(pl.Float64)
        # cum_sum adds in row order, as the per-reading fold does: the same float total, bit for bit
        aggs += [v.cum_sum().last().alias(f"{f}_s"), v.min().alias(f"{f}_lo"), v.max().alias(f"{f}_hi")]
    out = d.with_columns(w=secs // ws * ws).group_by("g", "w", maintain_order=True).agg(aggs)
    for row in out.iter_rows(named=True):
        for metric, f in metrics:
            acc[(metric, row["g"], row["w"], ws)] = [row[f"{f}_s"], row["_n"], row[f"{f}_lo"], row[f"{f}_hi"], None, None]


def _parking(acc: aggregates.Acc, df: pl.DataFrame, groups: dict[str, str]) -> None:
    d = (df.select("entity_id", "occupied", "capacity", "occurred_at", "_t").with_row_index("_r")
         .with_columns(g=pl.col("entity_id").replace_strict(groups, default=None, return_dtype=pl.String))
         .filter(pl.col("g").is_not_null()))
    if not len(d):
        return
    # per member the newest reading; of equal times the later one (the per-reading fold's ``t >= seen``)
    last = d.sort("entity_id", "_t", "_r").group_by("entity_id", maintain_order=True).last()
    for sid, occupied, capacity, at, g in last.select("entity_id", "occupied", "capacity", "occurred_at", "g").iter_rows():
        a = acc.get(("parking_occupancy", g, None, 0))
        if a is None:
            a = acc[("parking_occupancy", g, None, 0)] = [0.0, 0, None, None, {}, {}]
        a[4][sid] = (float(occupied), float(capacity))
        a[5][sid] = datetime.fromisoformat(at)


def fold_aggregates(partials: dict[str, aggregates.Partial], frames: Mapping[str, pl.DataFrame], groups: Groups,
                    shard: int, load: Any = None) -> dict[str, aggregates.Partial]:
    """``twin.aggregates.fold_rows`` on frames: the changed partials."""
    acc: aggregates.Acc = {}
    for name, df in frames.items():
        if not len(df):
            continue
        if name == "ParkingOccupancyReported":
            _parking(acc, df, groups.neighbourhood)
        if name in aggregates.WINDOWED:
            by = groups.road if name == "TrafficCounted" else groups.neighbourhood
            _windowed(acc, df, by, aggregates.WINDOWED[name], aggregates.WINDOW_S[name])
    return aggregates.merge(partials, acc, shard, load)


def newest(frames: Mapping[str, pl.DataFrame]) -> datetime | None:
    """The newest ``occurred_at`` over the frames (the first row of the newest instant), as its own datetime."""
    best: tuple[int, str] | None = None
    for df in frames.values():
        if not len(df):
            continue
        i = df["_t"].arg_max()
        assert i is not None  # noqa: S101 - a non-empty Int64 column has a maximum
        t, text = df["_t"][i], df["occurred_at"][i]
        if best is None or t > best[0]:
            best = (t, text)
    return None if best is None else datetime.fromisoformat(best[1])


def within_horizon(frames: Mapping[str, pl.DataFrame], watermarks: dict[str, datetime],
                   horizon: timedelta) -> tuple[dict[str, pl.DataFrame], dict[str, datetime]]:
    """``twin.aggregates.within_horizon`` on frames: per windowed reading type the watermark after each row is the
    newest time so far (the shard's and the earlier rows'); a row whose window ends at or before its watermark minus
    the horizon is left out. Returns the admitted frames and the watermarks (a new dict when one moved)."""
    out: dict[str, pl.DataFrame] = {}
    marks = watermarks
    h_us = horizon // _US
    for name, df in frames.items():
        ws = aggregates.WINDOW_S.get(name)
        if ws is None or not len(df):
            out[name] = df
            continue
        prev = watermarks.get(name)
        t = pl.col("_t")
        wm = t.cum_max() if prev is None else pl.max_horizontal(t.cum_max(), pl.lit(micros(prev), pl.Int64))
        w_us = ws * 1_000_000
        kept = df.filter((t // w_us + 1) * w_us > wm - h_us)
        i = df["_t"].arg_max()
        assert i is not None  # noqa: S101 - a non-empty Int64 column has a maximum
        if prev is None or df["_t"][i] > micros(prev):
            if marks is watermarks:
                marks = dict(watermarks)
            marks[name] = datetime.fromisoformat(df["occurred_at"][i])
        if len(kept):
            out[name] = kept
    return out, marks
