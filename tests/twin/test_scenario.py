from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.scenarios import ScenarioRunner
from twin.events import ScenarioProgressed, ScenarioRequested
from twin.region import bundled_pack
from twin.scenario import ScenarioRequest


def test_request_levels() -> None:
    preset = ScenarioRequest(preset="kiel-2023-10-20", duration_h=24)
    assert preset.steps == 25 and max(preset.levels()) == 1.95
    curve = ScenarioRequest(curve=[{"hour": 0, "level_m": 0.0}, {"hour": 2, "level_m": 1.0}], duration_h=2,
                            step_minutes=30, sea_level_rise_m=0.3)
    assert curve.levels() == [0.3, 0.55, 0.8, 1.05, 1.3]
    with pytest.raises(ValidationError, match="either 'preset' or 'curve'"):
        ScenarioRequest()
    with pytest.raises(ValidationError, match="hours must increase"):
        ScenarioRequest(curve=[{"hour": 2, "level_m": 0}, {"hour": 1, "level_m": 1}])
    with pytest.raises(ValidationError, match="above the limit of 500"):
        ScenarioRequest(preset="kiel-2023-10-20", duration_h=240, step_minutes=5)


def test_scenarios_one_after_another_do_not_leak(tmp_path: Path) -> None:
    pack = bundled_pack()
    events: list[ScenarioProgressed] = []
    runner = ScenarioRunner(pack, tmp_path, events.append)
    req = ScenarioRequested(entity_id="kiel:_:scenario:leak", region="kiel", occurred_at=datetime.now(UTC), source="t",
                            request_json=ScenarioRequest(preset="kiel-2023-10-20", duration_h=12).model_dump_json())
    assert runner.execute(req) == "completed"  # warm-up: caches, imports
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(3):
            assert runner.execute(req) == "completed"
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 5_000_000, f"memory grew by {grown:,} bytes over three runs"
    assert events[-1].status == "completed" and events[-1].summary_json
    bad = req.model_copy(update={"request_json": '{"preset": "nope"}'})
    assert runner.execute(bad) == "failed" and "unknown preset" in events[-1].message
