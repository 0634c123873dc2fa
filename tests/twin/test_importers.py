"""Importers on small fixture files made for the tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Polygon

from twin.geo import to_metric
from twin.importers import ImportError_, import_cityjson, import_into_pack, import_osm, read_geotiff
from twin.region import bundled_pack, load_pack

FIX = Path(__file__).resolve().parent.parent / "fixtures"


def test_osm_buildings_heights_and_roads() -> None:
    got = import_osm(FIX / "gaarden_small.osm", bundled_pack())
    by_id = {b["properties"]["id"]: b["properties"] for b in got.buildings}
    assert by_id["kiel:gaarden:building:osm-w100"]["height_m"] == 14.5
    assert by_id["kiel:gaarden:building:osm-w101"]["height_m"] == 12.0  # 4 levels x 3 m
    assert by_id["kiel:gaarden:building:osm-w101"]["height_source"] == "building:levels"
    assert [r["properties"]["road_class"] for r in got.roads] == ["secondary"]  # the canal is not a road
    assert got.roads[0]["properties"]["lanes"] == 2


def test_osm_partial_file_names_the_way_and_the_missing_node() -> None:
    with pytest.raises(ImportError_, match=r"gaarden_broken.osm: way 100: refers to node\(s\) 77 not in the file"):
        import_osm(FIX / "gaarden_broken.osm", bundled_pack())


def test_osm_bad_xml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.osm"
    bad.write_text("<osm><node id='1'</osm>")
    with pytest.raises(ImportError_, match="bad.osm: XML: not well-formed"):
        import_osm(bad, bundled_pack())


def test_cityjson_lod2_footprint_height_and_reprojection() -> None:
    got = import_cityjson(FIX / "gaarden_lod2.city.json", bundled_pack())
    assert len(got.buildings) == 2
    b0, b1 = (b["properties"] for b in got.buildings)
    assert (b0["height_m"], b1["height_m"], b0["ground_m"]) == (12.0, 21.0, 3.0)
    ring = got.buildings[0]["geometry"]["coordinates"][0]
    assert 10.14 < ring[0][0] < 10.16 and 54.31 < ring[0][1] < 54.32  # EPSG:25832 -> WGS84
    assert to_metric(Polygon(ring)).area == pytest.approx(240.0, rel=1e-3)  # 20 m x 12 m ground surface
    assert b0["id"].startswith("kiel:gaarden:building:lod-")


def test_cityjson_errors(tmp_path: Path) -> None:
    bad = tmp_path / "x.city.json"
    bad.write_text('{"type": "FeatureCollection"}')
    with pytest.raises(ImportError_, match="x.city.json: document: 'type' must be 'CityJSON'"):
        import_cityjson(bad, bundled_pack())
    doc = (FIX / "gaarden_lod2.city.json").read_text().replace('"boundaries": [[[[0, 3, 2, 1]]', '"boundaries": [[[[0, 3, 2, 999]]')
    bad.write_text(doc)
    with pytest.raises(ImportError_, match="CityObject DESH_LOD2_0: geometry boundaries refer to vertices that do not exist"):
        import_cityjson(bad, bundled_pack())


def test_geotiff_terrain() -> None:
    t = read_geotiff(FIX / "gaarden_dgm1_small.tif")
    assert t.crs == "EPSG:25832" and t.heights.shape == (15, 20)
    assert np.isnan(t.heights[0, 0]) and t.heights[14, 19] == pytest.approx(1.0 + 0.25 * 19 + 1.4)
    assert t.bounds == (574600.0, 6019105.0, 574620.0, 6019120.0)


def test_not_a_geotiff(tmp_path: Path) -> None:
    import tifffile

    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((3, 3), "float32"))
    with pytest.raises(ImportError_, match="plain.tif: georeference: no ModelPixelScale"):
        read_geotiff(plain)


def test_import_into_pack_replaces_synthetic_layers(tmp_path: Path) -> None:
    pack_dir = tmp_path / "kiel"
    shutil.copytree(bundled_pack().path, pack_dir)
    report = import_into_pack(pack_dir, osm=FIX / "gaarden_small.osm", cityjson=FIX / "gaarden_lod2.city.json",
                              dgm=FIX / "gaarden_dgm1_small.tif")
    assert any(line.startswith("buildings: 4") for line in report)
    pack = load_pack(pack_dir)
    assert len(pack.buildings) == 4 and not pack.manifest.layers["buildings"].synthetic
    assert "roads" not in pack.synthetic_layers() and "terrain" not in pack.synthetic_layers()
    assert pack.terrain_path is not None and read_geotiff(pack.terrain_path).heights.shape == (15, 20)
    assert "sensors" in pack.synthetic_layers()  # what was not imported stays marked synthetic
