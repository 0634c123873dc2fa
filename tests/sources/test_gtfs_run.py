"""``plietsch run`` with GTFS configured: it starts the GTFS source, a bus of a local GTFS-Realtime feed is counted,
the departure board of a stop of the SYNTHETIC schedule (a trip 3 minutes late) is public in the API, Ctrl-C stops the
source with the rest."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from infra.broker import free_port
from tests.helpers import metric, wait_for
from tests.sources.test_gtfs_source import TS, FakeRealtime, today_trip
from tests.sources.test_gtfs_units import feed, trip_update, vehicle
from tests.sources.threaded import plietsch_run

pytestmark = pytest.mark.broker


def board(api: str) -> dict | None:
    try:
        r = httpx.get(f"{api}/stops/kiel-hbf/departures", timeout=5)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def test_make_run_with_gtfs_configured(tmp_path: Path) -> None:
    fake = FakeRealtime()
    fake.set("vehicle_positions", feed(vehicle("e1", "4711", "syn-11-now", 54.3146, 10.139, TS)))
    fake.set("trip_updates", feed(trip_update("n", "syn-11-now", (1, "gaarden-vinetaplatz", 180))))
    gtfs = today_trip(tmp_path / "gtfs", (10, 16))
    metrics_port = free_port()
    try:
        with plietsch_run(tmp_path, "plietsch-gtfs-run", {
                "PLIETSCH_GTFS_STATIC": str(gtfs), "PLIETSCH_GTFS_VEHICLE_POSITIONS_URL": fake.url("vehicle_positions"),
                "PLIETSCH_GTFS_TRIP_UPDATES_URL": fake.url("trip_updates"), "PLIETSCH_GTFS_STOPS": "kiel-hbf",
                "PLIETSCH_GTFS_INTERVAL_S": "1", "PLIETSCH_GTFS_METRICS_PORT": str(metrics_port)}) as (api, log):
            wait_for(lambda: metric(metrics_port, "plietsch_gtfs_vehicles") == 1, 120,
                     "the GTFS source of 'plietsch run' to read the bus\n" + log.read_text()[-2000:])
            got = wait_for(lambda: board(api), 120, "the board in the API\n" + log.read_text()[-2000:])
            late = [d for d in got["departures"] if d["trip_id"] == "syn-11-now"]
            assert len(late) == 1 and late[0]["delay_s"] == 180, got
            assert f"GTFS     {gtfs}, {fake.url('vehicle_positions')}, {fake.url('trip_updates')}" in log.read_text()
    finally:
        fake.close()
    assert metric(metrics_port, "plietsch_gtfs_up") is None  # the source stopped with the rest
