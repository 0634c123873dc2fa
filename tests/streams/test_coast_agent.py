"""The coast agent through the broker: a storm surge raises and clears alerts per coast segment."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.codec import SingleObjectCodec
from streams.catalogue import ALERTS, SENSOR_TOPICS
from streams.consume import drain
from streams.publisher import EventPublisher
from tests.helpers import COAST_SENSOR, Worker, latest_updates, wait_for
from twin.events import WaterLevelMeasured
from twin.region import load_pack

pytestmark = pytest.mark.broker


def _alerts(bootstrap: str, prefix: str) -> list[tuple[str, dict]]:
    codec = SingleObjectCodec()
    out = []
    for m in drain(bootstrap, ALERTS.name, missing_ok=True):
        name, rec = codec.decode(m.value())
        if rec["entity_id"].startswith(prefix):
            out.append((name, rec))
    return out


def test_surge_raises_and_clears_alerts_per_segment(worker: Worker, big_pack_dir: Path) -> None:
    pack = load_pack(big_pack_dir)
    segments = pack.coast_by_gauge[COAST_SENSOR]
    assert segments, "the Friedrichsort staff drives some coast segments"
    pub = EventPublisher(worker.bootstrap, SingleObjectCodec())
    t0 = datetime(2023, 10, 20, 12, 0, tzinfo=UTC)
    levels = [0.1, 0.8, 1.3, 1.95, 1.4, 0.9, 0.3]  # the 20 October 2023 surge peaked about 1.95 m at Kiel
    for i, lv in enumerate(levels):
        pub.add(SENSOR_TOPICS["water_level"].name, COAST_SENSOR, WaterLevelMeasured(
            entity_id=COAST_SENSOR, region="kiel", occurred_at=t0 + timedelta(hours=i), source="coast-test", level_m=lv))
    pub.flush()
    seg = segments[0]
    updates = wait_for(lambda: (u := latest_updates(worker.bootstrap, seg.id)).get(seg.id, {}).get("revision") == len(levels) - 1
                       and u, 90, "the coast segment's state")
    state = json.loads(updates[seg.id]["state_json"])
    assert state["level_m"] == 0.3 and state["freeboard_m"] == pytest.approx(seg.crest_m - 0.3, abs=1e-3)
    assert state["surge_class"] is None and updates[seg.id]["entity_type"] == "coast"
    alerts = wait_for(lambda: (a := _alerts(worker.bootstrap, seg.id)) and any(n == "AlertCleared" for n, _ in a) and a,
                      60, "alerts for the segment")
    surge = [(n, r.get("severity")) for n, r in alerts if r["category"] == "storm_surge"]
    assert surge == [("AlertRaised", "warning"), ("AlertRaised", "severe"), ("AlertRaised", "warning"), ("AlertCleared", None)]
    raised = [r for n, r in alerts if n == "AlertRaised" and r["category"] == "storm_surge"]
    assert raised[1]["value"] == 1.95 and raised[1]["public"] is True
    assert {r["entity_id"] for _, r in _alerts(worker.bootstrap, "kiel:_:coast:friedrichsort")} == {s.id for s in segments}
