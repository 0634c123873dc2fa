"""The bundled Kiel pack on the real districts: the districts layer, the twin quarters' outlines, synthetic layers
consistent with them, stations at their published positions, and clear errors for bad district data."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from shapely.geometry import Point, Polygon
from shapely.ops import unary_union

from twin.districts import DistrictError, build_districts, name_key, read_population, read_source_districts
from twin.geo import to_metric
from twin.region import RegionPackError, bundled_pack, load_pack

SOURCES = Path(__file__).resolve().parents[2] / "twin" / "regions" / "kiel" / "sources"
POPULATION = SOURCES / "kiel_einwohner_stadtteile_1988_2021.csv"


@pytest.mark.parametrize(("a", "b"), [
    ("Gaarden-Süd/Kronsburg", "Gaarden-Süd und Kronsburg"),
    ("Neumühlen/Dietrichsdorf", "Neumühlen-Dietrichsdorf"),
    ("03 Nordstadt", "Nordstadt"),
    ("  Gaarden - Ost ", "GAARDEN-OST"),
])
def test_one_rule_matches_the_spellings_of_a_district(a: str, b: str) -> None:
    assert name_key(a) == name_key(b)


def test_the_rule_keeps_different_districts_apart_and_matches_every_kiel_district_once() -> None:
    districts = read_source_districts(SOURCES / "kiel_stadtteile.geojson")
    keys = [name_key(n) for n, _, _ in districts]
    assert len(set(keys)) == len(keys) == 30
    assert name_key("Gaarden-Ost") != name_key("Gaarden-Süd und Kronsburg")
    population = read_population(POPULATION)
    assert all(k in population for k in keys)  # every polygon finds its row
    assert sum(population[k][2] for k in keys) == population[name_key("Kiel_insgesamt")][2] == 247546  # 2021


def test_bundled_pack_has_the_30_official_districts_with_population_source_and_licence() -> None:
    pack = bundled_pack()
    assert sorted(pack.districts) == list(range(1, 31))
    assert all(d.polygon().is_valid and not d.polygon().is_empty for d in pack.districts.values())
    assert pack.districts[12].name == "Gaarden-Ost" and pack.districts[13].name == "Gaarden-Süd und Kronsburg"
    assert pack.districts[12].population == 18728 and pack.districts[12].population_year == 2021
    assert pack.districts[20].name == "Friedrichsort" and pack.districts[20].population == 2041
    assert all(not d.synthetic and "Landeshauptstadt Kiel" in d.source and d.licence == "CC-BY-4.0"
               and "patperu/kfzkiel" in d.population_source for d in pack.districts.values())
    info = pack.manifest.layers["districts"]
    assert not info.synthetic and "CC-BY-4.0" in info.licence and "MIT" in info.licence
    area_km2 = sum(to_metric(d.polygon()).area for d in pack.districts.values()) / 1e6
    assert 113.5 < area_km2 < 114.5  # the city's 114.0 km2 (shared data README)
    attribution = (pack.path / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "Landeshauptstadt Kiel" in attribution and "CC-BY-4.0" in attribution and "patperu/kfzkiel" in attribution


def test_twin_quarters_are_the_real_district_outlines() -> None:
    pack = bundled_pack()
    hoods = {n.name: to_metric(Polygon(n.polygon)) for n in pack.neighbourhoods.values()}
    gaarden = to_metric(unary_union([pack.districts[12].polygon(), pack.districts[13].polygon()]))
    friedrichsort = to_metric(pack.districts[20].polygon())
    assert hoods["Gaarden"].symmetric_difference(gaarden).area < 1e-6 * gaarden.area
    assert hoods["Friedrichsort"].symmetric_difference(friedrichsort).area < 1e-6 * friedrichsort.area
    assert not pack.manifest.layers["neighbourhoods"].synthetic


def test_synthetic_buildings_stand_on_land_inside_their_districts_and_say_synthetic() -> None:
    pack = bundled_pack()
    water = to_metric(pack.water_polygon())
    land_in = {code: to_metric(d.polygon()) for code, d in pack.districts.items()}
    for b in pack.buildings.values():
        fp = to_metric(Polygon(b.footprint))
        assert b.synthetic and not fp.intersects(water), b.id
        code = int(b.height_source.split("district ")[1].split()[0])
        assert land_in[code].contains(fp), b.id
    assert all(r.synthetic for r in pack.roads.values())
    assert {"buildings", "roads", "sensors", "coast", "terrain"} <= set(pack.synthetic_layers())


def test_building_density_follows_population() -> None:
    pack = bundled_pack()
    per_district = Counter(int(b.height_source.split("district ")[1].split()[0]) for b in pack.buildings.values())
    rate = pack.manifest.synth.residents_per_building  # type: ignore[union-attr]
    for code, n in per_district.items():
        assert n == round(pack.districts[code].population / rate)  # type: ignore[operator]
    assert set(per_district) == {12, 13, 20}
    water = to_metric(pack.water_polygon())

    def per_km2(code: int) -> float:
        return per_district[code] / (to_metric(pack.districts[code].polygon()).difference(water).area / 1e6)

    assert per_km2(12) > per_km2(13) > per_km2(20)  # Gaarden-Ost is the densest of the three, Friedrichsort the least


def test_stations_stand_at_their_published_positions_with_real_names() -> None:
    pack = bundled_pack()
    expected = {
        "kiel:_:sensor:gauge-holtenau": ("water_level", "9610066", 54.37208, 10.15704),
        "kiel:_:sensor:gauge-leuchtturm": ("water_level", "9610050", 54.49959, 10.27326),
        "kiel:_:sensor:aq-desh027": ("air_quality", "DESH027", 54.304676, 10.135158),
        "kiel:_:sensor:aq-desh052": ("air_quality", "DESH052", 54.304242, 10.122364),
        "kiel:_:sensor:aq-desh057": ("air_quality", "DESH057", 54.34761, 10.1056),
    }
    for sid, (kind, code, lat, lon) in expected.items():
        s = pack.sensors[sid]
        assert (s.sensor_kind, s.lat, s.lon, s.synthetic) == (kind, lat, lon, False)
        assert code in s.name
    assert pack.sensors["kiel:_:sensor:gauge-holtenau"].name.startswith("Kiel-Holtenau")
    assert pack.sensors["kiel:_:sensor:aq-desh027"].name.startswith("Kiel-Bahnhofstraße")
    made_up = [s for s in pack.sensors.values() if s.id not in expected]
    assert made_up and all(s.synthetic for s in made_up)
    hood_of = {n.id: to_metric(Polygon(n.polygon)) for n in pack.neighbourhoods.values()}
    for s in made_up:  # made-up sensors stand in their quarter (street sensors on its streets, staffs on its shore)
        assert s.neighbourhood == f"kiel:{s.id.scope}:neighbourhood:{s.id.scope}", s.id
        assert hood_of[s.neighbourhood].buffer(600).contains(to_metric(Point(s.lon, s.lat))), s.id


def test_a_bad_district_polygon_is_refused_naming_file_and_feature(tmp_path: Path) -> None:
    dst = tmp_path / "kiel"
    shutil.copytree(bundled_pack().path, dst)
    data = json.loads((dst / "districts.geojson").read_text(encoding="utf-8"))
    ring = data["features"][4]["geometry"]["coordinates"][0]
    ring[1], ring[2] = ring[2], ring[1]  # a bow tie: the ring crosses itself
    ring[3], ring[5] = ring[5], ring[3]
    (dst / "districts.geojson").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RegionPackError, match=r"districts.geojson feature #4 \(Brunswik\): polygon is not valid"):
        load_pack(dst)
    data["features"][4]["geometry"] = {"type": "Point", "coordinates": [10.1, 54.3]}
    (dst / "districts.geojson").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RegionPackError, match=r"feature #4 \(Brunswik\): geometry must be a Polygon or MultiPolygon, got Point"):
        load_pack(dst)
    (dst / "districts.geojson").unlink()
    with pytest.raises(RegionPackError, match="layer 'districts' is listed in region.json but the file is missing"):
        load_pack(dst)


def test_a_population_table_without_a_district_is_refused_naming_it(tmp_path: Path) -> None:
    rows = [line for line in POPULATION.read_text(encoding="utf-8").splitlines() if not line.startswith("Wik,")]
    table = tmp_path / "population.csv"
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    source = read_source_districts(SOURCES / "kiel_stadtteile.geojson")
    with pytest.raises(DistrictError, match=r"population.csv: no row for district 8 'Wik'"):
        build_districts("kiel", source, "test", "CC-BY-4.0", read_population(table), "test", table.name)
    with pytest.raises(DistrictError, match=r"no column\(s\) residents; it has stadtteil, jahr, ew_ins"):
        read_population(table, ("stadtteil", "jahr", "residents"))
