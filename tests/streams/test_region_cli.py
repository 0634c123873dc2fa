"""A second municipality by data alone: the 'plietsch region' commands build a Flensburg harbour pack from the shared
open data (district polygons, GSHHG shoreline, gauge position, surge of record), and its surge preset runs through
the same scenario runner as Kiel's. No code names the town: everything below is command-line data."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from shapely.geometry import Point, Polygon

from streams.scenarios import ScenarioRunner
from twin.events import ScenarioProgressed, ScenarioRequested
from twin.geo import to_metric
from twin.region import load_pack
from twin.scenario import ScenarioRequest, run

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "districts"
PRESET = "flensburg-2023-10-20"


def plietsch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def new_args(out: Path) -> list[str]:
    return [
        "region", "new", "--out", str(out), "--id", "flensburg", "--name", "Flensburg (Flensburger Förde)",
        "--districts", str(FIXTURES / "flensburg_stadtteile.geojson"), "--name-field", "AREA_NAME", "--code-field", "AREA_ID",
        "--districts-source", "Stadt Flensburg, districts (kleinräumige Gliederung), via github.com/oklabflensburg/open-transport-map",
        "--districts-licence", "CC0-1.0",
        "--shoreline", str(FIXTURES / "gshhg_full_flensburg_fjord.txt"), "--bbox", "9.38,54.74,9.95,54.92",
        "--shoreline-note", "extracted with GMT 6 (gmt coast -R9.38/9.95/54.74/54.92 -Df -W -M)",
        "--sea-point", "9.6,54.84",
        "--quarter", "Hafen West=1,2,3:quay_wall:1.8", "--quarter", "Mürwik=11:quay_wall:1.9",
        "--gauge", "Flensburg=54.79506,9.43302",
        "--surge", f"{PRESET}=2023-10-20T19:33:00+00:00,2.27,14",
        "--surge-source", "BSH: storm surge of 20 Oct 2023, Flensburg 2.27 m above mean water level",
        "--surge-note", "peak height published; the peak time is taken as Kiel's (19:33 UTC), the curve is the twin's synthetic shape",
        "--mean-water-level-note", "Heights are metres above mean water level at the Flensburg gauge.",
    ]


@pytest.fixture(scope="module")
def flensburg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packs") / "flensburg"
    made = plietsch(*new_args(out))
    assert made.returncode == 0, made.stdout + made.stderr
    synth = plietsch("region", "synth", "--out", str(out))
    assert synth.returncode == 0, synth.stdout + synth.stderr
    assert re.search(r"13 districts, 2 quarters, \d+ buildings", synth.stdout + synth.stderr)
    return out


def test_the_pack_has_the_13_districts_coast_gauge_and_preset(flensburg: Path) -> None:
    pack = load_pack(flensburg)
    assert pack.id == "flensburg" and sorted(pack.districts) == list(range(1, 14))
    assert pack.districts[3].name == "Nordstadt" and pack.districts[11].name == "Mürwik"  # "03 Nordstadt" -> 3, Nordstadt
    assert all(d.population is None and d.licence == "CC0-1.0" for d in pack.districts.values())
    assert {n.name for n in pack.neighbourhoods.values()} == {"Hafen West", "Mürwik"}
    gauge = pack.sensors["flensburg:_:sensor:gauge-flensburg"]
    assert (gauge.lat, gauge.lon, gauge.sensor_kind, gauge.synthetic) == (54.79506, 9.43302, "water_level", False)
    assert pack.coast and all(c.id.startswith("flensburg:_:coast:") for c in pack.coast.values())
    assert {c.gauge for c in pack.coast.values()} <= set(pack.coast_by_gauge)
    preset = pack.manifest.surge_presets[PRESET]
    assert preset.peak_m == 2.27 and preset.peak_at == datetime(2023, 10, 20, 19, 33, tzinfo=UTC)
    water = to_metric(pack.water_polygon())
    assert all(not to_metric(Polygon(b.footprint)).intersects(water) for b in pack.buildings.values())
    assert all(b.synthetic for b in pack.buildings.values()) and pack.terrain_path is not None
    assert (flensburg / "sources" / "flensburg_stadtteile.geojson").is_file()
    attribution = (flensburg / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "Stadt Flensburg" in attribution and "CC0-1.0" in attribution and "GSHHG" in attribution


def test_region_info_names_real_layers_with_source_and_licence(flensburg: Path) -> None:
    info = plietsch("region", "info", str(flensburg))
    assert info.returncode == 0, info.stderr
    assert "13 districts" in info.stdout
    assert re.search(r"districts: real; Stadt Flensburg.*licence CC0-1.0", info.stdout)
    assert re.search(r"buildings: SYNTHETIC", info.stdout)
    assert "station flensburg:_:sensor:gauge-flensburg: Flensburg (water_level) at 54.79506 N 9.43302 E" in info.stdout
    assert f"surge preset {PRESET}: 2.27 m above mean water level" in info.stdout


def test_the_surge_of_record_floods_the_harbour_quarters(flensburg: Path) -> None:
    pack = load_pack(flensburg)
    req = ScenarioRequest(preset=PRESET, duration_h=24)
    assert max(req.levels(pack.manifest.surge_presets)) == 2.27
    result = run(pack, req)
    summary = result.summary()
    assert summary["peak_level_m"] == 2.27 and summary["max_flooded_area_km2"] > 0
    hoods = {a.neighbourhood for a in result.assets}
    assert hoods & set(pack.neighbourhoods), summary["by_neighbourhood"]
    assert summary["compared_with_baseline"]["added_by_scenario"] > 0
    assert all(a.entity_id.startswith("flensburg:") for a in result.assets)


def test_the_preset_runs_through_the_scenario_runner_like_kiels(flensburg: Path, tmp_path: Path) -> None:
    pack = load_pack(flensburg)
    events: list[ScenarioProgressed] = []
    runner = ScenarioRunner(pack, tmp_path, events.append)
    req = ScenarioRequested(entity_id="flensburg:_:scenario:s-1", region="flensburg", occurred_at=datetime.now(UTC),
                            source="test", request_json=json.dumps({"preset": PRESET, "duration_h": 12}))
    assert runner.execute(req) == "completed", events[-1].message
    summary = json.loads(events[-1].summary_json)
    assert summary["peak_level_m"] > 2.0 and summary["affected"]["building"] > 0
    kiel = req.model_copy(update={"request_json": json.dumps({"preset": "kiel-2023-10-20", "duration_h": 12})})
    assert runner.execute(kiel) == "failed" and "unknown preset 'kiel-2023-10-20'" in events[-1].message


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    args = new_args(tmp_path / "x")
    bad_quarter = [a if a != "Hafen West=1,2,3:quay_wall:1.8" else "Hafen West=1,99" for a in args]
    r = plietsch(*bad_quarter)
    assert r.returncode == 2 and "district number(s) [99] are not in flensburg_stadtteile.geojson" in r.stdout + r.stderr
    wet = [a if a != "9.6,54.84" else "9.0,54.0" for a in args]
    r = plietsch(*wet)
    assert r.returncode == 2 and "give a --sea-point in open water" in r.stdout + r.stderr
    gauge = [a if a != "Flensburg=54.79506,9.43302" else "Flensburg=54.79506" for a in args]
    r = plietsch(*gauge)
    assert r.returncode == 2 and "expected '[slug:]Name[#code]=lat,lon'" in r.stdout + r.stderr


def test_no_code_names_the_town() -> None:
    code = [p for d in ("twin", "streams", "api", "viewer") for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".js", ".html")]
    assert code and not [p for p in code if "flensburg" in p.read_text(encoding="utf-8").casefold()]


def test_a_point_in_no_district_is_outside_every_quarter(flensburg: Path) -> None:
    pack = load_pack(flensburg)
    assert pack.index.locate(9.9, 54.9)["neighbourhood"] is None  # open water of the outer fjord
    inside = pack.districts[11].polygon().representative_point()
    assert pack.index.locate(inside.x, inside.y)["neighbourhood"] == "flensburg:muerwik:neighbourhood:muerwik"
    assert Point(9.43302, 54.79506).distance(pack.districts[1].polygon()) < 0.01  # the gauge is at the Altstadt quay


def test_the_bundled_kiel_pack_is_rebuilt_identically_from_its_sources(tmp_path: Path) -> None:
    """The bundled pack is reproducible: its recipe (build.sh: region new + synth over the files in sources/) makes
    the same bytes, so every file in it is accounted for by data and code."""
    import os

    out = tmp_path / "kiel"
    bundled = ROOT / "twin" / "regions" / "kiel"
    r = subprocess.run(["bash", str(bundled / "build.sh"), str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, check=False, env={**os.environ, "PLIETSCH": f"{sys.executable} -m streams.cli"})
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(p.relative_to(bundled) for p in bundled.rglob("*") if p.is_file() and p.name != "build.sh")
    assert len(files) >= 12
    assert [str(f) for f in files if (out / f).read_bytes() != (bundled / f).read_bytes()] == []
