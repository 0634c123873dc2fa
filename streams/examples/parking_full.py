"""Example processor: an alert when a car park is almost full (95 %), cleared when it drops below 90 %."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

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
            env = {"entity_id": e.entity_id, "region": e.region, "occurred_at": e.occurred_at, "source": self.name}
            aid = f"{e.entity_id}:parking_full"
            if now:
                out.append(AlertRaised(**env, alert_id=aid, severity="info", category="parking_full", public=True,
                                       message=f"car park {e.entity_id.split(':')[-1]} is {ratio:.0%} full",
                                       value=ratio, threshold=FULL))
            else:
                out.append(AlertCleared(**env, alert_id=aid, category="parking_full",
                                        message=f"car park {e.entity_id.split(':')[-1]} has space again ({ratio:.0%})"))
        return out
