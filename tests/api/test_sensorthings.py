"""OGC SensorThings API 1.1 read side (issue 13 item 6) over a real broker (the read model's input: twin state and
aggregates) and real archive files (the history engine's input): entity sets, navigation, query options, observations
from history, and what each role sees."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.auth.store import AuthStore
from api.main import create_app
from api.settings import ApiSettings
from streams.archive import ArchiveWriter
from streams.catalogue import AGGREGATES, SENSOR_TOPICS
from tests.api.ngsild_setup import AIR, GAUGE, PARKING, REPORT, SECRET_TEXT, SEGMENT, Api, T, archive, twin_broker
from tests.api.readside import ROAD, Out, aggregate_record, partial
from tests.api.readside import T as AGG_T
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.aggregates import Partial
from twin.events import WeatherObserved
from twin.region import BUNDLED_DIR

pytestmark = pytest.mark.broker
B = "/sta/v1.1"
GAUGE_DS = f"{GAUGE}:height"
HOOD = "kiel:friedrichsort:neighbourhood:friedrichsort"
WEATHER = "kiel:gaarden:sensor:weather-001"


def _parking(group: str, occupied: float, capacity: float) -> tuple[str, bytes]:
    p = Partial("parking_occupancy", group, None, 0, 0, members={f"{group}-car-park": (occupied, capacity)}, rev=1)
    return p.key, aggregate_record(p, json.dumps(p.to_json()))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The NGSI-LD tests' twin (a gauge with ten archived readings, a car park, an air station, a coast segment, a
    citizen report with personal text) plus public aggregates: 3 vehicles on a Gaarden road ("<5") and a car park of
    120 spaces in Friedrichsort (25 %)."""
    data = tmp_path_factory.mktemp("sta")
    with twin_broker() as (bootstrap, _pub):
        out = Out(bootstrap)
        out.send(AGGREGATES.name, *partial(AGG_T, 0, 3.0, 3, group=ROAD, rev=1))
        out.send(AGGREGATES.name, *_parking(HOOD, 30, 120))
        readings = archive(data / "archive")
        w = ArchiveWriter(data / "archive")  # a weather station: 48 readings two hours apart, the last at T
        for i in range(48):
            w.add(SENSOR_TOPICS["weather"].name, 0, i, WeatherObserved(
                entity_id=WEATHER, region="kiel", occurred_at=T - timedelta(hours=2 * (47 - i)), source="t",
                temperature_c=float(i), wind_speed_ms=1.0, wind_dir_deg=90.0, precipitation_mm=0.0))
        w.flush()
        app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=bootstrap, region_pack=BUNDLED_DIR / "kiel",
                                     data_dir=data, public_rate=10_000, public_burst=10_000))
        planner = AuthStore(data / "auth.sqlite3").add_key("sta planner", "planner", "test")[1]
        with TestClient(app) as client:
            rm = app.state.read_model
            wait_for(lambda: rm.get(REPORT) is not None and rm.get(SEGMENT) and rm.get(AIR) and len(rm.aggregates()) >= 2,
                     60, "the twin's state and the aggregates in the read model")
            yield Api(client, {"public": {}, "planner": {"Authorization": f"Bearer {planner}"}, "operator": OPERATOR},
                      readings, bootstrap)


def get(api: Api, path: str, role: str = "planner", **params: Any) -> Any:
    r = api.client.get(path, params={f"${k}": v for k, v in params.items()}, headers=api.keys[role])
    assert r.status_code == 200, (path, params, r.status_code, r.text)
    return r.json()


def at(minute: int) -> str:
    return (T + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")


def test_things_with_navigation_expand_select_and_paging(api: Api) -> None:
    things = get(api, f"{B}/Things", count="true", top=5, orderby="id")
    assert things["@iot.count"] == 63 and len(things["value"]) == 5  # the pack's sensors, one Thing each
    assert things["@iot.nextLink"].endswith("$skip=5") and "$top=5" in things["@iot.nextLink"]
    ids = [t["@iot.id"] for t in things["value"]]
    assert ids == sorted(ids)
    nxt = api.client.get(things["@iot.nextLink"], headers=api.keys["planner"]).json()
    assert nxt["value"][0]["@iot.id"] > ids[-1] and "@iot.count" in nxt
    gauge = get(api, f"{B}/Things('{GAUGE}')", expand="Datastreams($top=1),Locations")
    assert gauge["@iot.selfLink"].endswith(f"{B}/Things('{GAUGE}')")
    assert gauge["Datastreams@iot.navigationLink"].endswith(f"Things('{GAUGE}')/Datastreams")
    assert [d["@iot.id"] for d in gauge["Datastreams"]] == [GAUGE_DS]
    assert gauge["Locations"][0]["location"]["type"] == "Point"
    assert get(api, f"{B}/Things('{GAUGE}')/Datastreams")["value"][0]["unitOfMeasurement"] == {
        "name": "metre", "symbol": "m", "definition": "http://qudt.org/vocab/unit/M"}
    chosen = get(api, f"{B}/Things", filter="properties/kind eq 'water_level'", select="id,name", orderby="name desc")
    names = [t["name"] for t in chosen["value"]]
    assert len(names) == 4 and names == sorted(names, reverse=True) and set(chosen["value"][0]) == {"@iot.id", "name"}
    deep = get(api, f"{B}/Things('{GAUGE}')", expand="Datastreams/Observations($orderby=phenomenonTime desc;$top=1)")
    assert deep["Datastreams"][0]["Observations"][0]["result"] == api.readings[-1].level_m
    assert get(api, f"{B}/HistoricalLocations", count="true") == {"@iot.count": 0, "value": []}


@pytest.fixture
def engine_calls(api: Api, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The history engine's events() calls from here on: (start, end, entity ids, limit, offset)."""
    engine = api.client.app.state.history_engine  # type: ignore[attr-defined]
    calls: list[tuple[Any, ...]] = []
    real = engine.events

    def spy(start: Any, end: Any, entity_ids: Any, limit: int, offset: int) -> Any:
        calls.append((start, end, tuple(entity_ids), limit, offset))
        return real(start, end, entity_ids, limit, offset)

    monkeypatch.setattr(engine, "events", spy)
    return calls


def test_datastream_observations_from_history(api: Api, engine_calls: list[tuple[Any, ...]]) -> None:
    """The archive's readings in time order, paged, ordered desc, and a phenomenonTime range pushed into the engine's
    query (its time range and the one entity), with $top/$skip as its LIMIT/OFFSET."""
    levels = [r.level_m for r in api.readings]
    obs = f"{B}/Datastreams('{GAUGE_DS}')/Observations"
    assert [o["result"] for o in get(api, obs)["value"]] == levels
    first = get(api, obs, top=1)["value"][0]
    assert first["phenomenonTime"] == "2026-05-05T10:00:00.000Z" and first["resultTime"] == first["phenomenonTime"]
    assert get(api, f"{B}/Observations('{first['@iot.id']}')")["result"] == levels[0]
    assert get(api, f"{B}/Observations('{first['@iot.id']}')/Datastream")["@iot.id"] == GAUGE_DS
    assert get(api, f"{B}/Observations('{first['@iot.id']}')/FeatureOfInterest")["feature"]["type"] == "Point"
    desc = get(api, obs, orderby="phenomenonTime desc", top=3, skip=1, count="true")
    assert [o["result"] for o in desc["value"]] == levels[-2:-5:-1] and desc["@iot.count"] == 10
    engine_calls.clear()
    window = get(api, obs, filter=f"phenomenonTime ge {at(2)} and phenomenonTime lt {at(5)}", top=2, skip=1,
                 count="true")
    assert [o["result"] for o in window["value"]] == levels[3:5] and window["@iot.count"] == 3
    assert {c[2] for c in engine_calls} == {(GAUGE,)}
    assert all(c[0] == T + timedelta(minutes=2) and c[1] == T + timedelta(minutes=5) - timedelta(microseconds=1)
               for c in engine_calls if c[3] != 1 or c[4] != 0)
    assert (2, 1) in [(c[3], c[4]) for c in engine_calls]  # $top and $skip in the engine's LIMIT and OFFSET
    both = get(api, f"{B}/Observations", filter=f"Datastream/id eq '{GAUGE_DS}' and (result gt 1.6 or result eq 1.1)")
    assert sorted(o["result"] for o in both["value"]) == [1.1, 1.7, 1.8, 1.9]
    assert [o["result"] for o in get(api, obs, filter=f"not (phenomenonTime lt {at(8)}) and result ne 1.8")["value"]] == [1.9]


def test_newest_first_looks_back_from_the_archive_end_only_as_far_as_the_page_needs(
        api: Api, engine_calls: list[tuple[Any, ...]]) -> None:
    """$orderby=phenomenonTime desc without $count (a map's "latest reading"): the engine is asked for the last hour,
    then 8 hours, ... back from the archive's end until the page is full, never for the whole history; a full page
    carries an @iot.nextLink, and following the links walks the whole history newest first."""
    obs = f"{B}/Datastreams('{WEATHER}:temperature')/Observations"
    page = get(api, obs, orderby="phenomenonTime desc", top=3)
    assert [o["result"] for o in page["value"]] == [47.0, 46.0, 45.0] and "@iot.nextLink" in page
    assert min(c[0] for c in engine_calls) >= T - timedelta(hours=8)  # 1 h held one reading, 8 h hold four
    seen = [o["result"] for o in page["value"]]
    link = page.get("@iot.nextLink")
    while link:
        page = api.client.get(link, headers=api.keys["planner"]).json()
        seen += [o["result"] for o in page["value"]]
        link = page.get("@iot.nextLink")
    assert seen == [float(i) for i in range(47, -1, -1)]


def test_live_reading_from_the_read_model_until_archived(api: Api) -> None:
    """The air station has no archived reading: its newest comes from the read model, with the event id as the id."""
    ds = get(api, f"{B}/Things('{AIR}')/Datastreams", orderby="name")["value"]
    assert [d["@iot.id"] for d in ds] == [f"{AIR}:no2", f"{AIR}:pm10", f"{AIR}:pm25"]
    assert ds[0]["observationType"].endswith("OM_Measurement") and ds[0]["unitOfMeasurement"]["symbol"] == "ug/m3"
    no2 = get(api, f"{B}/Datastreams('{AIR}:no2')/Observations")["value"]
    assert [(o["result"], o["phenomenonTime"]) for o in no2] == [(41.5, "2026-05-05T09:55:00.000Z")]
    assert no2[0]["@iot.id"].endswith(f"@e-{AIR}-1")
    latest = get(api, f"{B}/Datastreams('{AIR}:no2')/Observations", orderby="phenomenonTime desc", top=1)
    assert latest["value"] == no2 and "@iot.nextLink" in latest  # the read model's newest; the archive has none newer
    assert get(api, f"{B}/Observations('{no2[0]['@iot.id']}')")["result"] == 41.5
    parking = get(api, f"{B}/Datastreams", filter=f"Thing/id eq '{PARKING}'",
                  expand="Observations($select=result),ObservedProperty($select=definition)")["value"]
    assert {d["ObservedProperty"]["definition"]: d["Observations"] for d in parking} == {
        "https://smartdatamodels.org/dataModel.Parking/occupiedSpotNumber": [{"result": 30}],
        "https://smartdatamodels.org/dataModel.Parking/totalSpotNumber": [{"result": 120}]}


def test_geo_filter(api: Api) -> None:
    box = "geography'POLYGON((10.10 54.35, 10.20 54.35, 10.20 54.40, 10.10 54.40, 10.10 54.35))'"
    inside = get(api, f"{B}/Locations", filter=f"st_within(location, {box})", select="id")["value"]
    assert {"@iot.id": GAUGE} in inside and len(inside) < 63
    same = get(api, f"{B}/Locations", filter=f"geo.intersects(location, {box})", select="id")["value"]
    assert same == inside


@pytest.mark.parametrize(("params", "says"), [
    ({"$filter": "name eq"}, "$filter 'name eq' is not a filter"),
    ({"$filter": "name eq 'a' and (x eq 1 or (y eq 2))"}, "one level of parentheses"),
    ({"$orderby": "name sideways"}, "$orderby 'name sideways'"),
    ({"$expand": "Sensors"}, "$expand 'Sensors' is not one this service reads"),
    ({"$expand": "Datastreams($top=x)"}, "is not one this service reads"),
    ({"$select": "name;id"}, "$select 'name;id'"),
])
def test_errors_name_the_option_and_value(api: Api, params: dict[str, str], says: str) -> None:
    r = api.client.get(f"{B}/Things", params=params, headers=api.keys["planner"])
    assert r.status_code == 400 and says in r.json()["detail"], r.text


def test_not_found(api: Api) -> None:
    for path in (f"{B}/Things('nope')", f"{B}/Datastreams('{GAUGE}:nope')/Observations",
                 f"{B}/Observations('{GAUGE_DS}@1@x')", f"{B}/Things('{REPORT}')"):
        r = api.client.get(path, headers=api.keys["operator"])
        assert r.status_code == 404 and "no " in r.json()["detail"], (path, r.text)


def test_the_public_sees_the_public_aggregates_only(api: Api) -> None:
    """The public gets what /public/summary gives it (api/privacy.py), as Things per neighbourhood and the coast: no
    sensor, no reading of one, no free text, counts under 5 as "<5"."""
    everything = json.dumps([get(api, f"{B}/{s}", role="public", top=1000)
                             for s in ("Things", "Locations", "Datastreams", "Sensors", "ObservedProperties",
                                       "Observations", "FeaturesOfInterest")])
    assert ":sensor:" not in everything and SECRET_TEXT not in everything and ":report:" not in everything
    obs = {o["Datastream"]["@iot.id"]: o["result"]
           for o in get(api, f"{B}/Observations", role="public", expand="Datastream($select=id)")["value"]}
    assert obs == {f"{HOOD}:parking_occupancy_pct": 25, "kiel:gaarden:neighbourhood:gaarden:traffic_vehicles_15min": "<5",
                   "kiel:coast:water_level_m": 1.42}
    hood = get(api, f"{B}/Things('{HOOD}')", role="public", expand="Locations,Datastreams")
    assert hood["Locations"][0]["location"]["type"] == "Polygon"
    assert [d["unitOfMeasurement"]["symbol"] for d in hood["Datastreams"]] == ["%"]
    r = api.client.get(f"{B}/Things('{GAUGE}')")
    assert r.status_code == 404  # a sensor is not the public's, as on /entities (401 there: planners only)
    assert get(api, f"{B}/Things('{GAUGE}')")["@iot.id"] == GAUGE  # the same path with a login


def test_operator_sees_what_a_planner_sees(api: Api) -> None:
    assert get(api, f"{B}/Datastreams", role="operator", count="true")["@iot.count"] == \
        get(api, f"{B}/Datastreams", count="true")["@iot.count"] > 63
