import math
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from twin.events import ParkingOccupancyReported, TrafficCounted, WaterLevelMeasured
from twin.sensors import SensorState, apply

GAUGE = "kiel:_:sensor:gauge-holtenau"


def wl(t: datetime, level: float, **kw: object) -> WaterLevelMeasured:
    return WaterLevelMeasured(entity_id=GAUGE, region="kiel", occurred_at=t, source="test", level_m=level, **kw)


def test_naive_time_nan_and_range_are_refused(t0: datetime) -> None:
    with pytest.raises(ValidationError, match="timezone"):
        wl(t0.replace(tzinfo=None), 0.1)
    with pytest.raises(ValidationError, match="finite"):
        wl(t0, math.nan)
    with pytest.raises(ValidationError, match="less than or equal to 6"):
        wl(t0, 9.0)
    with pytest.raises(ValidationError, match="must concern a sensor"):
        WaterLevelMeasured(entity_id="kiel:gaarden:building:1", region="kiel", occurred_at=t0, source="t", level_m=0)
    with pytest.raises(ValidationError, match="exceeds capacity"):
        ParkingOccupancyReported(entity_id="kiel:gaarden:sensor:p", region="kiel", occurred_at=t0, source="t",
                                 occupied=11, capacity=10)


def test_apply_keeps_newest_and_counts_revisions(t0: datetime) -> None:
    s1 = apply(None, wl(t0, 0.1))
    assert s1.revision == 0 and s1.values == {"level_m": 0.1} and s1.sensor_kind == "water_level"
    s2 = apply(s1, wl(t0 + timedelta(minutes=1), 0.3))
    assert s2.revision == 1 and s2.values["level_m"] == 0.3
    late = wl(t0 + timedelta(seconds=30), 0.2)
    assert apply(s2, late) is s2  # an older reading arriving late does not win
    dup = wl(t0 + timedelta(minutes=1), 0.3, event_id=s2.last_event_id)
    assert apply(s2, dup) is s2  # redelivery of the same event is idempotent
    assert s1.values == {"level_m": 0.1}  # earlier states are untouched values


def test_state_json_round_trip(t0: datetime) -> None:
    s = apply(None, TrafficCounted(entity_id="kiel:gaarden:sensor:t-1", region="kiel", occurred_at=t0, source="t",
                                   vehicles=12, interval_s=300))
    assert SensorState.from_json(s.to_json()) == s
