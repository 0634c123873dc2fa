"""PEGELONLINE adapter on fixture files made for the tests (illustrative values around the 20 Oct 2023 peak)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from schemas.codec import SingleObjectCodec, is_batch, iter_batch
from streams.catalogue import SENSOR_TOPICS
from streams.consume import drain
from streams.sources.pegelonline import PegelonlineError, find_station, measurements_url, parse_measurements
from tests.helpers import ROOT

FIX = ROOT / "tests" / "fixtures"


def test_measurements_to_metres_above_mean_with_problems_listed() -> None:
    events, problems = parse_measurements((FIX / "pegelonline_holtenau_measurements.json").read_bytes(),
                                          "kiel:_:sensor:gauge-holtenau", 504.0)
    assert [e.level_m for e in events] == [1.84, 1.9, 1.95, 1.93]
    assert events[2].occurred_at.isoformat() == "2023-10-20T21:30:00+02:00" and "PEGELONLINE" in events[0].source
    assert len(problems) == 3
    assert "entry 4" in problems[0] and "no UTC offset" in problems[0]
    assert "entry 5" in problems[1] and "n/a" in problems[1]
    assert "entry 6" in problems[2] and "timestamp" in problems[2]
    again, _ = parse_measurements((FIX / "pegelonline_holtenau_measurements.json").read_bytes(),
                                  "kiel:_:sensor:gauge-holtenau", 504.0)
    assert [e.event_id for e in again] == [e.event_id for e in events]  # stable ids: a re-import is idempotent
    with pytest.raises(PegelonlineError, match="not JSON"):
        parse_measurements(b"<html>", "kiel:_:sensor:gauge-holtenau", 504.0)


def test_station_lookup() -> None:
    st = find_station((FIX / "pegelonline_stations.json").read_bytes(), "9610066")
    assert st.name == "KIEL-HOLTENAU" and st.uuid == "made-up-uuid-for-tests-0001"
    assert measurements_url(st.uuid).endswith("/stations/made-up-uuid-for-tests-0001/W/measurements.json?start=P1D")
    with pytest.raises(PegelonlineError, match="no station with number 123"):
        find_station((FIX / "pegelonline_stations.json").read_bytes(), "123")


@pytest.mark.broker
def test_cli_publishes_to_the_water_level_topic(topics: str) -> None:
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=topics)
    res = subprocess.run([sys.executable, "-m", "streams.cli", "source", "pegelonline", "--measurements",
                          str(FIX / "pegelonline_holtenau_measurements.json")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "published 4 water level(s)" in res.stderr and "skipped 3" in res.stderr
    codec = SingleObjectCodec()
    seen = set()
    for m in drain(topics, SENSOR_TOPICS["water_level"].name):
        for d in (iter_batch(m.value()) if is_batch(m.headers()) else [m.value()]):
            try:
                _, rec = codec.decode(d)
            except ValueError:
                continue
            if rec["event_id"].startswith("pegelonline-"):
                seen.add(rec["level_m"])
    assert {1.84, 1.9, 1.95, 1.93} <= seen
