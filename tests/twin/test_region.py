import json
import shutil
from pathlib import Path

import pytest

from twin.region import RegionPackError, bundled_pack, load_pack


def test_bundled_pack_is_real_shoreline_with_synthetic_layers_marked() -> None:
    pack = bundled_pack()
    assert {n.name for n in pack.neighbourhoods.values()} == {"Gaarden", "Friedrichsort"}
    assert pack.buildings and pack.roads and pack.coast
    assert set(pack.synthetic_layers()) >= {"buildings", "roads", "sensors"}
    assert all(b.synthetic for b in pack.buildings.values())
    assert "GSHHG" in pack.manifest.layers["coast"].source


def test_sensors_are_attributed_to_their_place_by_the_index() -> None:
    pack = bundled_pack()
    counter = pack.sensors["kiel:gaarden:sensor:traffic-count-001"]
    assert counter.neighbourhood == "kiel:gaarden:neighbourhood:gaarden"
    assert counter.road is not None and counter.road.startswith("kiel:gaarden:road:")
    staff = pack.sensors["kiel:friedrichsort:sensor:water-level-001"]
    assert staff.coast is not None and staff.coast.startswith("kiel:_:coast:friedrichsort-")
    far = pack.index.locate(10.30, 54.29)  # open land far from both quarters
    assert far == {"neighbourhood": None, "road": None, "coast": None}


def test_bad_pack_errors_name_file_and_feature(tmp_path: Path) -> None:
    src = bundled_pack().path
    dst = tmp_path / "kiel"
    shutil.copytree(src, dst)
    data = json.loads((dst / "buildings.geojson").read_text())
    data["features"][3]["properties"]["height_m"] = -4
    (dst / "buildings.geojson").write_text(json.dumps(data))
    fid = data["features"][3]["properties"]["id"]
    with pytest.raises(RegionPackError, match=rf"buildings.geojson feature {fid}: height_m: Input should be greater than 0"):
        load_pack(dst)
    (dst / "roads.geojson").unlink()
    data["features"][3]["properties"]["height_m"] = 12
    (dst / "buildings.geojson").write_text(json.dumps(data))
    with pytest.raises(RegionPackError, match="roads.geojson: layer 'roads' is listed in region.json but the file is missing"):
        load_pack(dst)
