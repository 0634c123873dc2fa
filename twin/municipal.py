"""Municipal events as twin state (pure): road works on a road segment, citizen defect reports and public events."""

from __future__ import annotations

from typing import Any

from twin.events import DefectReported, Event, PublicEventScheduled, RoadWorksAnnounced


def apply(state: dict[str, Any] | None, event: Event) -> dict[str, Any] | None:
    """The new reported state of the entity the event concerns, or None when the event changes nothing."""
    state = dict(state or {"revision": -1, "event_ids": []})
    if event.event_id in state["event_ids"]:
        return None  # redelivered
    if isinstance(event, RoadWorksAnnounced):
        works = [w for w in state.get("works", []) if w["event_id"] != event.event_id]
        works.append({"event_id": event.event_id, "starts_at": event.starts_at.isoformat(), "ends_at": event.ends_at.isoformat(),
                      "lanes_closed": event.lanes_closed, "description": event.description})
        state["works"] = sorted(works, key=lambda w: w["starts_at"])
        state["lanes_closed_max"] = max(w["lanes_closed"] for w in works)
    elif isinstance(event, DefectReported):
        # no personal data: category, place and text only; the text is not shown on public screens
        state.update(category=event.category, description=event.description, lon=event.lon, lat=event.lat,
                     reported_at=event.occurred_at.isoformat(), status="reported")
    elif isinstance(event, PublicEventScheduled):
        state.update(title=event.title, starts_at=event.starts_at.isoformat(), ends_at=event.ends_at.isoformat(),
                     expected_visitors=event.expected_visitors, lon=event.lon, lat=event.lat)
    else:
        return None
    state["revision"] += 1
    state["event_ids"] = [*state["event_ids"], event.event_id][-50:]
    state["last_event_id"] = event.event_id
    state["observed_at"] = event.occurred_at.isoformat()
    return state
