"""Storm-surge scenarios end to end: API -> event -> scenario agent -> files and events -> API."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import tifffile

from api.auth.store import AuthStore
from tests.credentials import OPERATOR
from tests.helpers import wait_for

pytestmark = pytest.mark.broker


def _run(c: httpx.Client, body: dict[str, Any]) -> str:
    r = c.post("/scenarios", json=body)
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    wait_for(lambda: c.get(f"/scenarios/{sid}").status_code == 200 and c.get(f"/scenarios/{sid}").json()["status"]
             in ("completed", "failed", "cancelled"), 120, f"scenario {sid}")
    return sid


def test_preset_surge_results_and_comparison(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=30, headers=OPERATOR) as c:
        sid = _run(c, {"name": "20 Oct 2023", "preset": "kiel-2023-10-20", "duration_h": 24})
        status = c.get(f"/scenarios/{sid}").json()
        assert status["status"] == "completed", status
        s = c.get(f"/scenarios/{sid}/summary").json()
        assert s["steps"] == 25 and s["peak_level_m"] == 1.95 and s["max_flooded_area_km2"] > 0
        assert s["affected"]["building"] > 0 and s["compared_with_baseline"]["baseline_affected"] == 0
        assert "terrain" in s["synthetic_inputs"]
        assets = c.get(f"/scenarios/{sid}/assets").json()
        assert assets["features"] and all(f["properties"]["max_depth_m"] > 0 for f in assets["features"])
        peak_step = s["levels_m"].index(max(s["levels_m"]))
        flooded = c.get(f"/scenarios/{sid}/flooded", params={"step": peak_step}).json()
        assert flooded["features"][0]["geometry"]["type"] in ("Polygon", "MultiPolygon")
        assert flooded["features"][0]["properties"]["level_m"] == 1.95
        first = c.get(f"/scenarios/{sid}/flooded", params={"step": 0}).json()["features"][0]["properties"]["cells"]
        assert first < flooded["features"][0]["properties"]["cells"]  # the water rises over time
        tif = c.get(f"/scenarios/{sid}/depth/{peak_step}.tif")
        assert tif.status_code == 200 and tifffile.imread(io.BytesIO(tif.content)).max() > 0
        duration = tifffile.imread(io.BytesIO(c.get(f"/scenarios/{sid}/rasters/duration_h.tif").content))
        assert duration.max() >= 1.0 and c.get(f"/scenarios/{sid}/rasters/nope.tif").status_code == 404
        higher = _run(c, {"preset": "kiel-2023-10-20", "duration_h": 24, "sea_level_rise_m": 0.5})
        cmp = c.get(f"/scenarios/{sid}/compare/{higher}").json()
        assert cmp["only_in_second"] and not cmp["only_in_first"] and cmp["area_km2"][1] > cmp["area_km2"][0]
        assert c.get(f"/scenarios/{sid}/flooded", params={"step": 99}).status_code == 422


def test_bad_requests_get_clear_4xx(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=30, headers=OPERATOR) as c:
        r = c.post("/scenarios", json={"preset": "kiel-2023-10-20", "breaches": [{"segment": "kiel:_:coast:nowhere"}]})
        assert r.status_code == 404 and "unknown coast segment(s): kiel:_:coast:nowhere" in r.json()["detail"]
        r = c.post("/scenarios", json={"preset": "kiel-2023-10-20", "duration_h": -5})
        assert r.status_code == 422 and "duration_h" in r.text
        r = c.post("/scenarios", json={"curve": [{"hour": 0, "level_m": 0.2}, {"hour": 3, "level_m": 50}]})
        assert r.status_code == 422 and "level_m" in r.text
        r = c.post("/scenarios", json={"preset": "kiel-2099"})
        assert r.status_code == 422 and "unknown preset" in r.text
        r = c.post("/scenarios", json={"preset": "kiel-2023-10-20", "duration_h": 240, "step_minutes": 30})
        assert r.status_code == 413 and "terrain cells" in r.json()["detail"]
        assert c.get("/scenarios/kiel:_:scenario:none").status_code == 404


def test_a_running_scenario_can_be_cancelled(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=30, headers=OPERATOR) as c:
        r = c.post("/scenarios", json={"curve": [{"hour": 0, "level_m": 0.5}, {"hour": 150, "level_m": 2.5}], "duration_h": 150})
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        wait_for(lambda: c.get(f"/scenarios/{sid}").status_code == 200, 60, "the scenario to start")
        assert c.delete(f"/scenarios/{sid}").status_code == 202
        wait_for(lambda: c.get(f"/scenarios/{sid}").json()["status"] in ("cancelled", "completed"), 60, "the cancellation")
        assert c.get(f"/scenarios/{sid}").json()["status"] == "cancelled"
        assert c.get(f"/scenarios/{sid}/summary").status_code == 409
        assert c.delete(f"/scenarios/{sid}").status_code == 409


def test_planners_see_their_own_and_shared_scenarios_and_only_owner_or_operator_cancels(api_url: str, data_dir: Path) -> None:
    store = AuthStore(data_dir / "auth.sqlite3")  # the API process's own store (same data dir)
    keys = {who: {"Authorization": f"Bearer {store.add_key(who, 'planner', 'test')[1]}"} for who in ("anna", "ben")}
    body = {"preset": "kiel-2023-10-20", "duration_h": 24, "step_minutes": 60}
    with httpx.Client(base_url=api_url, timeout=30) as c:
        r = c.post("/scenarios", json=body, headers=keys["anna"])
        assert r.status_code == 202, r.text
        sid = r.json()["id"]
        wait_for(lambda: c.get(f"/scenarios/{sid}", headers=keys["anna"]).status_code == 200, 120, f"scenario {sid} for its owner")
        mine = c.get(f"/scenarios/{sid}", headers=keys["anna"]).json()
        assert mine["owner"].startswith("key:") and mine["shared"] is False
        assert sid in [s["entity_id"] for s in c.get("/scenarios", headers=keys["anna"]).json()]
        assert sid not in [s["entity_id"] for s in c.get("/scenarios", headers=keys["ben"]).json()]
        assert c.get(f"/scenarios/{sid}", headers=keys["ben"]).status_code == 403
        assert c.delete(f"/scenarios/{sid}", headers=keys["ben"]).status_code == 403
        assert c.post(f"/scenarios/{sid}/share", headers=keys["ben"]).status_code == 403
        assert c.post(f"/scenarios/{sid}/share", headers=keys["anna"]).json() == {"id": sid, "shared": True}
        assert sid in [s["entity_id"] for s in c.get("/scenarios", headers=keys["ben"]).json()]
        assert c.get(f"/scenarios/{sid}", headers=keys["ben"]).status_code == 200  # shared: he may look
        r = c.delete(f"/scenarios/{sid}", headers=keys["ben"])
        assert r.status_code == 403 and "only its owner or an operator" in r.json()["detail"]  # but not cancel
        assert c.delete(f"/scenarios/{sid}", headers=OPERATOR).status_code in (202, 409)  # 409: it had finished already
        assert sid in [s["entity_id"] for s in c.get("/scenarios", headers=OPERATOR).json()]
