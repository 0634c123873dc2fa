"""The lag warning (issue 9, item 7): the worker warns when its consumer lag is above a threshold and rising over three
progress reports, at most once per interval, with the figure and what to do; at ``make run``'s default load
(200 readings/s) it does not warn at all."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker
from streams.metrics import LagWatch
from tests.drills import kit
from tests.helpers import ROOT, Worker, wait_for


def test_a_growing_lag_above_the_threshold_warns_with_the_figure_and_what_to_do() -> None:
    watch = LagWatch(threshold=50_000, window=3, every_s=60.0)
    assert watch.observe(60_000, 0.0) is None  # one sample is no trend
    assert watch.observe(70_000, 10.0) is None
    text = watch.observe(80_000, 20.0)
    assert text is not None and "80000 records behind" in text and "60000 -> 70000 -> 80000" in text
    assert "second worker" in text  # what to do
    assert watch.observe(90_000, 30.0) is None  # still growing, but warned 10 s ago: at most once a minute
    assert watch.observe(95_000, 79.0) is None
    assert watch.observe(99_000, 81.0) is not None  # a minute later, still growing: warned again


@pytest.mark.parametrize("lags", [
    [10_000, 20_000, 40_000, 49_000],  # growing but below the threshold
    [90_000, 80_000, 70_000, 60_000],  # above it but draining
    [60_000, 60_000, 60_000],  # above it, steady
    [60_000, 70_000, 65_000, 75_000],  # not rising over the whole window
])
def test_no_warning_below_the_threshold_or_without_growth(lags: list[int]) -> None:
    watch = LagWatch(threshold=50_000)
    assert [watch.observe(n, 10.0 * i) for i, n in enumerate(lags)] == [None] * len(lags)


@pytest.mark.broker
@pytest.mark.drill
def test_no_lag_warning_at_the_default_load(broker: EmbeddedBroker, big_pack_dir: Path, tmp_path: Path) -> None:
    """The worker under ``plietsch simulate --rate 200`` (make run's load) for more than three progress reports: its
    log (at warning level) holds no lag warning, and hardly any warning at all."""
    bootstrap = broker.bootstrap_servers
    seconds = 120 if kit.FULL else 35
    worker = Worker(bootstrap, big_pack_dir, f"plietsch-lagwarn-{uuid.uuid4().hex[:6]}")
    worker.start()
    sim_log = tmp_path / "simulate.log"
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, PLIETSCH_REGION_PACK=str(big_pack_dir))
    sim = subprocess.Popen([sys.executable, "-m", "streams.cli", "simulate", "--rate", "200", "--seed", "3"], cwd=ROOT,
                           env=env, stdout=sim_log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: worker.stats().get("datums", 0) > 0, 120, "the worker to process simulated readings")
        mark = len(worker.log.read_text(errors="replace"))
        time.sleep(seconds)
        assert sim.poll() is None, sim_log.read_text()[-2000:]
        assert worker.alive(), worker.output()
        datums = worker.stats().get("datums", 0)
        assert datums > 150 * seconds * 0.5, f"the worker processed only {datums} readings"
        text = worker.log.read_text(errors="replace")[mark:]
        assert "consumer lag grows" not in text, text[-3000:]
        warnings = [line for line in text.splitlines() if "WARNING" in line]
        assert len(warnings) <= 3, f"{len(warnings)} warnings in {seconds} s at the default load: {warnings[:5]}"
    finally:
        sim.terminate()
        sim.wait(30)
        worker.stop()
