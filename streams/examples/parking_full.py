"""Example processor: an alert when a car park is almost full (95 %), cleared when it drops below 90 %.

It shows both ways to write a processor: ``handle`` takes the readings as events, one record at a time (plain and
short); ``handle_frame`` takes a whole take of readings as a polars frame and does the per-reading work in polars, so
Python runs only per alert. The worker calls ``handle_frame`` when a processor has it; the two give the same alerts
and state (tests/streams/test_processors.py proves it on random sequences).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from datetime import datetime
from typing import Any

import polars as pl

from twin.events import AlertCleared, AlertRaised, Event, ParkingOccupancyReported

FULL, FREE_AGAIN = 0.95, 0.90


class ParkingFull:
    name = "parking-full"
    topics = ("sensor.parking",)
    output = "twin.alerts"

    def handle(self, events: list[Event], state: MutableMapping[str, Any]) -> list[Event]:
        """*state*: per car park whether its alert is raised (the worker keeps it in a table across restarts)."""
        out: list[Event] = []
        for e in events:
            if not isinstance(e, ParkingOccupancyReported):
                continue
            ratio = e.occupied / e.capacity
            was = bool(state.get(e.entity_id, False))
            now = ratio >= FULL or (was and ratio >= FREE_AGAIN)
            if now == was:
                continue
            state[e.entity_id] = now
            out.append(self._alert(now, e.entity_id, e.region, e.occurred_at, ratio))
        return out

    def handle_frame(self, frames: Mapping[str, pl.DataFrame], state: MutableMapping[str, Any]) -> list[Event]:
        """The same as ``handle`` on a take's readings as columns (one frame per event type, rows in arrival order).

        Per reading the alert is on at >= 95 %, off below 90 % and as before in between: that is the last decisive
        reading's verdict per car park (a forward fill), starting from the state; a transition is a row whose verdict
        differs from the one before it."""
        df = frames.get("ParkingOccupancyReported")
        if df is None or df.is_empty():
            return []
        ids = df["entity_id"].unique().to_list()
        was = {i: bool(state.get(i, False)) for i in ids}
        ratio = pl.col("occupied") / pl.col("capacity")
        verdict = pl.when(ratio >= FULL).then(True).when(ratio < FREE_AGAIN).then(False).otherwise(None)
        start = pl.col("entity_id").replace_strict(was, return_dtype=pl.Boolean)
        d = (df.select("entity_id", "region", "occurred_at", ratio.alias("ratio"), verdict.alias("v"), start.alias("was"))
             .with_columns(now=pl.col("v").forward_fill().over("entity_id").fill_null(pl.col("was")))
             .with_columns(prev=pl.col("now").shift(1).over("entity_id").fill_null(pl.col("was")))
             .filter(pl.col("now") != pl.col("prev")))
        out: list[Event] = []
        for entity_id, region, at, r, now in d.select("entity_id", "region", "occurred_at", "ratio", "now").iter_rows():
            state[entity_id] = now
            out.append(self._alert(now, entity_id, region, datetime.fromisoformat(at), r))
        return out

    def _alert(self, now: bool, entity_id: str, region: str, at: datetime, ratio: float) -> Event:
        env = {"entity_id": entity_id, "region": region, "occurred_at": at, "source": self.name}
        aid = f"{entity_id}:parking_full"
        if now:
            return AlertRaised(**env, alert_id=aid, severity="info", category="parking_full", public=True,
                               message=f"car park {entity_id.split(':')[-1]} is {ratio:.0%} full", value=ratio,
                               threshold=FULL)
        return AlertCleared(**env, alert_id=aid, category="parking_full",
                            message=f"car park {entity_id.split(':')[-1]} has space again ({ratio:.0%})")
