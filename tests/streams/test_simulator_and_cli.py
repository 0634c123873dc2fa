import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from streams.simulator import readings
from tests.conftest import ROOT
from twin.profiles import Surge, WaterLevelModel, parking_fill, traffic_profile
from twin.region import bundled_pack


def test_simulator_is_repeatable_and_plausible() -> None:
    pack = bundled_pack()
    t = datetime(2026, 11, 18, 0, 0, tzinfo=UTC)
    a = [r.model_dump(exclude={"event_id"}) for r in readings(pack, 300, seed=5, start=t)]
    b = [r.model_dump(exclude={"event_id"}) for r in readings(pack, 300, seed=5, start=t)]
    c = [r.model_dump(exclude={"event_id"}) for r in readings(pack, 300, seed=6, start=t)]
    assert a == b and a != c
    assert {r["source"] for r in a} == {"simulator (synthetic)"}
    wed = datetime(2026, 11, 18, tzinfo=UTC)
    assert traffic_profile(wed.replace(hour=8)) > 3 * traffic_profile(wed.replace(hour=3))
    assert parking_fill(wed.replace(hour=12)) > 0.7 > 0.2 > parking_fill(wed.replace(hour=3))


def test_surge_episode_peaks_at_the_given_height() -> None:
    peak = datetime(2023, 10, 20, 19, 33, tzinfo=UTC)
    calm = WaterLevelModel(seed=1)
    stormy = WaterLevelModel(seed=1, surge=Surge(peak_at=peak, peak_m=1.95))
    assert abs(calm.level(peak)) < 0.3
    assert 1.6 < stormy.level(peak) < 2.3
    assert abs(stormy.level(peak + timedelta(days=2)) - calm.level(peak + timedelta(days=2))) < 0.01


def test_cli_errors_are_actionable() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    res = subprocess.run([sys.executable, "-m", "streams.cli", "simulate", "--count", "1"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in res.stderr and "make run" in res.stderr
    res = subprocess.run([sys.executable, "-m", "streams.cli", "simulate", "--rate", "0"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert "--rate must be positive" in res.stderr


def test_region_import_cli(tmp_path) -> None:
    import shutil

    pack_dir = tmp_path / "kiel"
    shutil.copytree(ROOT / "twin" / "regions" / "kiel", pack_dir)
    fix = ROOT / "tests" / "fixtures"
    ok = subprocess.run([sys.executable, "-m", "streams.cli", "region", "import", "--pack", str(pack_dir),
                         "--osm", str(fix / "gaarden_small.osm"), "--licence", "ODbL-1.0"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "buildings: 2 from gaarden_small.osm" in ok.stderr
    bad = subprocess.run([sys.executable, "-m", "streams.cli", "region", "import", "--pack", str(pack_dir),
                          "--osm", str(fix / "gaarden_broken.osm")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "gaarden_broken.osm: way 100" in bad.stderr
    info = subprocess.run([sys.executable, "-m", "streams.cli", "region", "info", str(pack_dir)], cwd=ROOT,
                          capture_output=True, text=True)
    assert "buildings: real; imported (gaarden_small.osm); licence ODbL-1.0" in info.stdout
