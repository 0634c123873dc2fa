"""Real layers carry their source and licence through the API: the region answer names them, the districts route
serves the official districts with population, and a pack built from another municipality's data is served the same."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from tests.credentials import OPERATOR
from tests.streams.test_region_cli import new_args, plietsch
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker


def _client(bootstrap: str, pack: Path) -> TestClient:
    return TestClient(create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, region_pack=pack)), headers=OPERATOR)


def test_region_answer_and_districts_route_carry_source_and_licence(topics: str) -> None:
    with _client(topics, BUNDLED_DIR / "kiel") as c:
        [region] = c.get("/regions").json()
        assert region["districts"] == 30 and "districts" in region["real_layers"]
        assert "buildings" in region["synthetic_layers"] and "districts" not in region["synthetic_layers"]
        layer = region["layers"]["districts"]
        assert layer["synthetic"] is False and "Landeshauptstadt Kiel" in layer["source"] and "CC-BY-4.0" in layer["licence"]
        assert region["surge_presets"]["kiel-2023-10-20"]["peak_m"] == 1.95
        fc = c.get("/regions/kiel/districts").json()
        assert len(fc["features"]) == 30 and "CC-BY-4.0" in fc["licence"]
        gaarden_ost = next(f for f in fc["features"] if f["properties"]["code"] == 12)
        props = gaarden_ost["properties"]
        assert (props["name"], props["population"], props["population_year"]) == ("Gaarden-Ost", 18728, 2021)
        assert props["licence"] == "CC-BY-4.0" and "patperu/kfzkiel" in props["population_source"] and not props["synthetic"]
        assert gaarden_ost["geometry"]["type"] == "Polygon"
        missing = c.get("/regions/hamburg/districts")
        assert missing.status_code == 404 and "this API serves 'kiel'" in missing.json()["detail"]


def test_a_pack_built_from_another_towns_data_is_served_the_same(topics: str, tmp_path: Path) -> None:
    out = tmp_path / "town"
    for args in (new_args(out), ["region", "synth", "--out", str(out)]):
        r = plietsch(*args)
        assert r.returncode == 0, r.stdout + r.stderr
    with _client(topics, out) as c:
        [region] = c.get("/regions").json()
        assert region["id"] == "flensburg" and region["districts"] == 13
        assert "CC0-1.0" in region["layers"]["districts"]["licence"]
        assert list(region["surge_presets"]) == ["flensburg-2023-10-20"]
        assert len(c.get("/regions/flensburg/districts").json()["features"]) == 13
        coast = c.get("/coast").json()["features"]
        assert coast and all(f["id"].startswith("flensburg:_:coast:") for f in coast)
