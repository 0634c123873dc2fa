"""The scenario service's work: run a requested storm-surge or traffic scenario on a fork of the twin, write its results
as files (storm surge: summary, affected assets, a depth GeoTIFF per step; traffic: summary, GeoJSON per link,
zone-to-zone times) and report progress as events. Runs in the scenario service's runner process
(``streams.scenario_service``), one scenario at a time, cancellable between steps."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from twin.events import ScenarioProgressed, ScenarioRequested
from twin.flood import FloodInputError, Grid
from twin.importers import Terrain, write_geotiff
from twin.region import RegionPack
from twin.scenario import ScenarioRequest, load_grid, run
from twin.traffic.network import NetworkError
from twin.traffic.scenario import Context, TrafficRequest
from twin.traffic.scenario import run as run_traffic

log = logging.getLogger("plietsch.scenarios")
AGENT = "twin-scenarios"


def scenario_dir(data_dir: Path, scenario_id: str) -> Path:
    return data_dir / "scenarios" / scenario_id.split(":")[-1]


class ScenarioRunner:
    def __init__(self, pack: RegionPack, data_dir: Path, emit: Callable[[ScenarioProgressed], None],
                 is_cancelled: Callable[[str], bool] | None = None) -> None:
        """*is_cancelled(sid)*, asked between steps: whether the run of *sid* is to stop (default: :meth:`cancel`
        was called for it)."""
        self.pack = pack
        self.data_dir = data_dir
        self.emit = emit
        self.cancelled: set[str] = set()
        self.lock = threading.Lock()
        self._traffic: Context | None = None
        self._is_cancelled = is_cancelled

    def cancel(self, scenario_id: str) -> None:
        with self.lock:
            self.cancelled.add(scenario_id)

    def _goes_on(self, sid: str) -> bool:
        if self._is_cancelled is not None and self._is_cancelled(sid):
            return False
        with self.lock:
            return sid not in self.cancelled

    def _progress(self, req_event: ScenarioRequested, status: str, step: int, steps: int, message: str = "",
                  summary: dict[str, Any] | None = None) -> None:
        self.emit(ScenarioProgressed(
            entity_id=req_event.entity_id, region=req_event.region, occurred_at=datetime.now(UTC), source=AGENT,
            status=status, step=step, steps=steps, message=message,  # type: ignore[arg-type]
            summary_json=json.dumps(summary, separators=(",", ":")) if summary else ""))

    def execute(self, event: ScenarioRequested) -> str:
        """Run one scenario to its end; returns the final status. Never raises: failures become events."""
        sid = event.entity_id
        try:
            if json.loads(event.request_json).get("kind") == "traffic":
                return self._execute_traffic(event)
        except (ValueError, AttributeError):
            pass  # not a JSON object: the storm-surge model below says what is wrong with it
        try:
            req = ScenarioRequest.model_validate_json(event.request_json)
        except ValidationError as exc:
            self._progress(event, "failed", 0, 0, f"invalid request: {exc}")
            return "failed"
        out = scenario_dir(self.data_dir, sid)
        steps_dir = out / "steps"
        steps_dir.mkdir(parents=True, exist_ok=True)
        n = req.steps
        self._progress(event, "running", 0, n, f"{n} steps of {req.step_minutes:g} min")
        grid: Grid | None = None

        def on_step(i: int, total: int, depth: np.ndarray) -> bool:
            if grid is not None:
                write_geotiff(steps_dir / f"depth_{i:03d}.tif", Terrain(depth, grid.origin_x, grid.origin_y, grid.cell,
                                                                            grid.cell, grid.crs))
            if i % max(1, total // 10) == 0 or i == total - 1:
                self._progress(event, "running", i + 1, total)
            return self._goes_on(sid)

        try:
            req.check_against(self.pack)  # before the terrain is read: unknown segments, no terrain
            grid = load_grid(self.pack)
            result = run(self.pack, req, on_step, grid)
        except FloodInputError as exc:
            cancelled = str(exc) == "cancelled"
            shutil.rmtree(out, ignore_errors=True) if cancelled else None
            self._progress(event, "cancelled" if cancelled else "failed", 0, n, "cancelled on request" if cancelled else str(exc))
            return "cancelled" if cancelled else "failed"
        except Exception as exc:  # a bug must not take the worker down; the planner sees the reason
            log.exception("scenario %s failed", sid)
            self._progress(event, "failed", 0, n, f"{type(exc).__name__}: {exc}")
            return "failed"
        finally:
            with self.lock:
                self.cancelled.discard(sid)
        summary = result.summary()
        summary["scenario_id"] = sid
        summary["request"] = json.loads(req.model_dump_json())
        (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        (out / "assets.json").write_text(json.dumps([asdict(a) for a in result.assets]), encoding="utf-8")
        g = result.grid
        write_geotiff(out / "max_depth.tif", Terrain(result.result.max_depth, g.origin_x, g.origin_y, g.cell, g.cell, g.crs))
        duration = result.result.duration_h.astype("float32")
        write_geotiff(out / "duration_h.tif", Terrain(duration, g.origin_x, g.origin_y, g.cell, g.cell, g.crs))
        first = np.where(result.result.first_wet_step >= 0, result.result.first_wet_step, -9999).astype("float32")
        write_geotiff(out / "first_wet_step.tif", Terrain(first, g.origin_x, g.origin_y, g.cell, g.cell, g.crs))
        self._progress(event, "completed", n, n, f"{summary['affected']['building']} buildings affected", summary)
        del result
        gc.collect()
        return "completed"

    def flood_roads(self, flood_id: str) -> list[str]:
        """The roads a completed storm-surge scenario cuts (deeper than 0.3 m at its peak), from its results."""
        path = scenario_dir(self.data_dir, flood_id) / "summary.json"
        if not path.is_file():
            raise NetworkError(f"storm-surge scenario {flood_id!r} has no results here (not completed, expired or "
                               "unknown); run it first and wait for 'completed'")
        summary = json.loads(path.read_text(encoding="utf-8"))
        if summary.get("kind") == "traffic":
            raise NetworkError(f"{flood_id!r} is a traffic scenario; closures_from_flood needs a storm-surge scenario")
        return list(summary.get("roads_cut", []))

    def _execute_traffic(self, event: ScenarioRequested) -> str:
        sid = event.entity_id
        try:
            req = TrafficRequest.model_validate_json(event.request_json)
        except ValidationError as exc:
            self._progress(event, "failed", 0, 0, f"invalid traffic request: {exc}")
            return "failed"
        self._progress(event, "running", 0, 2, "baseline assignment")
        last = {"baseline": 0, "scenario": 0}

        def on_iteration(phase: str, it: int, gap: float) -> bool:
            if it - last[phase] >= 10 or it == 1:
                last[phase] = it
                self._progress(event, "running", 0 if phase == "baseline" else 1, 2,
                               f"{phase}: iteration {it}, relative gap {gap:.2e}")
            return self._goes_on(sid)

        try:
            flood = self.flood_roads(req.closures_from_flood) if req.closures_from_flood else []
            if self._traffic is None:
                self._traffic = Context.of(self.pack)
            result = run_traffic(self.pack, req, flood, self._traffic, on_iteration)
        except NetworkError as exc:
            cancelled = str(exc) == "cancelled"
            self._progress(event, "cancelled" if cancelled else "failed", 0, 2, "cancelled on request" if cancelled else str(exc))
            return "cancelled" if cancelled else "failed"
        except Exception as exc:  # a bug must not take the worker down; the planner sees the reason
            log.exception("traffic scenario %s failed", sid)
            self._progress(event, "failed", 0, 2, f"{type(exc).__name__}: {exc}")
            return "failed"
        finally:
            with self.lock:
                self.cancelled.discard(sid)
        out = scenario_dir(self.data_dir, sid)
        out.mkdir(parents=True, exist_ok=True)
        summary = result.summary()
        summary["scenario_id"] = sid
        summary["request"] = json.loads(req.model_dump_json())
        (out / "links.geojson").write_text(json.dumps(result.geojson(), separators=(",", ":")), encoding="utf-8")
        (out / "zone_times.json").write_text(json.dumps(result.zone_times(), separators=(",", ":")), encoding="utf-8")
        (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")  # last: it marks the run done
        small = {k: v for k, v in summary.items() if k not in ("neighbourhood_times", "closed_links", "displaced_from",
                                                                "gained_most", "unreachable_pairs", "flood_roads_closed",
                                                                "select_link")}  # the lists: in summary.json
        self._progress(event, "completed", 2, 2, f"VHT {summary['vht']['before']} -> {summary['vht']['after']} h, "
                       f"{summary['unreachable_pair_count']} zone pairs unreachable", small)
        return "completed"
