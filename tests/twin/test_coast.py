from datetime import datetime, timedelta

import pytest

from twin.coast import assess, surge_class
from twin.entities import CoastSegment
from twin.events import AlertCleared, AlertRaised, WaterLevelMeasured

SEG = CoastSegment(id="kiel:_:coast:gaarden-001", name="Gaarden shore 1", synthetic=True, coast_type="quay_wall",
                   crest_m=2.0, line=[(10.14, 54.31), (10.15, 54.31)])


@pytest.mark.parametrize(("level", "cls"), [
    (0.99, None), (1.00, "storm_surge"), (1.24, "storm_surge"), (1.25, "medium_storm_surge"),
    (1.50, "severe_storm_surge"), (2.00, "severe_storm_surge"), (2.01, "very_severe_storm_surge"), (-1.5, None),
])
def test_bsh_classes(level: float, cls: str | None) -> None:
    assert surge_class(level) == cls


def test_surge_episode_raises_escalates_and_clears(t0: datetime) -> None:
    levels = [0.2, 1.1, 1.6, 2.1, 1.6, 1.02, 0.97, 0.6]
    state, seen = None, []
    for i, lv in enumerate(levels):
        r = WaterLevelMeasured(entity_id="kiel:_:sensor:gauge-holtenau", region="kiel", occurred_at=t0 + timedelta(hours=i),
                               source="t", level_m=lv)
        state, alerts = assess(SEG, state, r)
        seen.append([(type(a).__name__, a.category, getattr(a, "severity", None)) for a in alerts])
        assert state.freeboard_m == pytest.approx(2.0 - lv)
    assert seen[0] == []
    assert seen[1] == [("AlertRaised", "storm_surge", "warning")]
    assert seen[2] == [("AlertRaised", "storm_surge", "severe"), ("AlertRaised", "freeboard", "severe")]
    assert seen[3] == [("AlertRaised", "storm_surge", "extreme"), ("AlertRaised", "overtopping", "extreme")]
    assert ("AlertCleared", "overtopping", None) in seen[4]
    assert seen[5] == [("AlertRaised", "storm_surge", "warning"), ("AlertCleared", "freeboard", None)]  # 1.02 m: storm surge
    assert seen[6] == []  # 0.97 m is within the hysteresis band below 1.00 m: no flapping
    assert seen[7] == [("AlertCleared", "storm_surge", None)]
    assert state.revision == len(levels) - 1


def test_old_reading_changes_nothing(t0: datetime) -> None:
    r = WaterLevelMeasured(entity_id="kiel:_:sensor:g", region="kiel", occurred_at=t0, source="t", level_m=1.3)
    s, a = assess(SEG, None, r)
    assert isinstance(a[0], AlertRaised)
    same, none = assess(SEG, s, r.model_copy(update={"level_m": 0.0}))
    assert same is s and none == []
    assert not any(isinstance(x, AlertCleared) for x in a)
