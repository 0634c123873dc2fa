"""NGSI-LD read side and temporal API over a real broker (the read model's input) and real archive files (the history
engine's input): queries, geo-queries, content negotiation, ProblemDetails, roles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tests.api.ngsild_setup import (
    AIR_URN,
    GAUGE,
    GAUGE_URN,
    PARKING_URN,
    SECRET_TEXT,
    SEGMENT_URN,
    Api,
    T,
    served_api,
)

pytestmark = pytest.mark.broker
E = "/ngsi-ld/v1/entities"
TE = "/ngsi-ld/v1/temporal/entities"
BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from served_api(tmp_path_factory.mktemp("ngsild"))


def get(api: Api, path: str, role: str = "planner", **params: Any) -> Any:
    return api.client.get(path, params=params, headers=api.keys[role])


def ids(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [e["id"] for e in r.json()]


def test_query_by_type_id_pattern_attrs_count_and_paging(api: Api) -> None:
    water = ids(get(api, E, type="WaterObserved", limit=100))
    assert GAUGE_URN in water and len(water) == 4 and all(i.startswith("urn:ngsi-ld:WaterObserved:kiel:") for i in water)
    r = get(api, E, type="WaterObserved,OffStreetParking", count="true", limit=5)
    assert r.headers["NGSILD-Results-Count"] == "16" and len(r.json()) == 5  # 4 gauges, 12 car parks
    assert ids(get(api, E, type="OffStreetParking", limit=5, offset=10)) == ids(get(api, E, type="OffStreetParking",
                                                                                    limit=100))[10:]
    assert ids(get(api, E, id=f"{GAUGE_URN},{PARKING_URN},urn:ngsi-ld:Thing:x")) == [PARKING_URN, GAUGE_URN]
    assert ids(get(api, E, idPattern="^urn:ngsi-ld:CoastSegment:kiel:_:coast:friedrichsort-.*", limit=100))[0] == SEGMENT_URN
    assert ids(get(api, E, type="Vehicle")) == []  # an unknown type matches nothing
    gauge = get(api, E, id=GAUGE_URN).json()[0]
    assert gauge["height"] == {"type": "Property", "value": 1.42, "observedAt": "2026-05-05T10:00:00.000Z", "unitCode": "MTR"}
    assert gauge["location"] == {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [10.15704, 54.37208]}}
    assert gauge["dateObserved"]["value"] == {"@type": "DateTime", "@value": "2026-05-05T10:00:00.000Z"}
    park = get(api, E, id=PARKING_URN, attrs="occupancy,availableSpotNumber").json()[0]
    assert park == {"id": PARKING_URN, "type": "OffStreetParking",
                    "occupancy": {"type": "Property", "value": 0.25, "observedAt": "2026-05-05T10:00:00.000Z", "unitCode": "C62"},
                    "availableSpotNumber": {"type": "Property", "value": 90, "observedAt": "2026-05-05T10:00:00.000Z"}}
    # attrs: entities with none of them are left out (only the three with live state have measurements)
    assert set(ids(get(api, E, attrs="height,occupancy,no2,waterLevel", limit=100))) == {GAUGE_URN, PARKING_URN, AIR_URN,
                                                                                          SEGMENT_URN}
    kv = get(api, E, id=AIR_URN, options="keyValues").json()[0]
    assert kv["no2"] == 41.5 and kv["location"]["type"] == "Point" and kv["name"] == "Kiel-Theodor-Heuss-Ring (DESH052)"
    seg = get(api, E, id=SEGMENT_URN, options="keyValues").json()[0]
    assert seg["refWaterObserved"] == GAUGE_URN and seg["surgeClass"] == "storm_surge" and seg["waterLevel"] == 1.42


@pytest.mark.parametrize(("q", "expected"), [
    ("height>1.4", {GAUGE_URN}),
    ("height>1.42", set()),
    ("height>=1.42;height<=1.42", {GAUGE_URN}),
    ("height==1..2", {GAUGE_URN}),
    ("height==1.0,1.42,3", {GAUGE_URN}),
    ("height!=1.42", set()),  # != needs the attribute: entities without it do not match
    ("occupancy>=0.25;totalSpotNumber==120", {PARKING_URN}),
    ("no2>40|height>1.4", {GAUGE_URN, AIR_URN}),
    ("(no2>40|height>1.4);synthetic==false", {GAUGE_URN, AIR_URN}),
    ("(no2>40|occupancy<0.5);pm25<7", set()),
    ('surgeClass=="storm_surge"', {SEGMENT_URN}),
    ("height.observedAt>=2026-05-05T10:00:00Z", {GAUGE_URN}),
    ("no2.observedAt<2026-05-05T10:00:00Z", {AIR_URN}),
    ('height.unitCode=="MTR"', {GAUGE_URN}),
    (f"refWaterObserved=={GAUGE_URN};waterLevel>1", {SEGMENT_URN}),
    ("dateObserved>2026-05-05T09:58:00Z", {GAUGE_URN}),
])
def test_query_language(api: Api, q: str, expected: set[str]) -> None:
    assert set(ids(get(api, E, q=q, limit=1000))) == expected


def test_geo_queries(api: Api) -> None:
    gauge = [10.15704, 54.37208]
    near = ids(get(api, E, georel="near;maxDistance==50", geometry="Point", coordinates=json.dumps(gauge), limit=100))
    assert GAUGE_URN in near and all(":gaarden:" not in i for i in near)
    far = ids(get(api, E, georel="near;minDistance==50", geometry="Point", coordinates=json.dumps(gauge), limit=1000))
    assert GAUGE_URN not in far and PARKING_URN in far
    box = "[[[10.15,54.37],[10.16,54.37],[10.16,54.375],[10.15,54.375],[10.15,54.37]]]"
    within = ids(get(api, E, georel="within", geometry="Polygon", coordinates=box, type="WaterObserved"))
    assert within == [GAUGE_URN]
    line = get(api, E, id=SEGMENT_URN, options="keyValues").json()[0]["location"]["coordinates"]
    crossing = json.dumps([[line[0][0], line[0][1] - 0.001], [line[0][0], line[0][1] + 0.001]]).replace(" ", "")
    assert SEGMENT_URN in ids(get(api, E, georel="intersects", geometry="LineString", coordinates=crossing, limit=1000))
    assert ids(get(api, E, georel="within", geometry="Polygon", coordinates="[[[0,0],[1,0],[1,1]]]")) == []


def test_one_entity_content_negotiation_and_context(api: Api) -> None:
    r = get(api, f"{E}/{GAUGE_URN}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    link = r.headers["Link"]
    assert link == ('<http://testserver/ngsi-ld/v1/jsonldContexts/plietsch.jsonld>; '
                    'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"')
    assert "@context" not in r.json() and r.json()["height"]["value"] == 1.42
    ld = api.client.get(f"{E}/{GAUGE_URN}", headers={**api.keys["planner"], "Accept": "application/ld+json"})
    assert ld.headers["content-type"] == "application/ld+json" and "link" not in ld.headers
    assert ld.json()["@context"] == "http://testserver/ngsi-ld/v1/jsonldContexts/plietsch.jsonld"
    listed = api.client.get(E, params={"type": "WaterObserved"}, headers={**api.keys["planner"],
                                                                          "Accept": "application/json;q=0.5, application/ld+json"})
    assert listed.headers["content-type"] == "application/ld+json" and all("@context" in e for e in listed.json())
    no = api.client.get(f"{E}/{GAUGE_URN}", headers={**api.keys["planner"], "Accept": "text/html"})
    assert no.status_code == 406 and "text/html" in no.json()["detail"]
    # the context: public, and every term the entities use is defined in it (or is an NGSI-LD core term)
    doc = api.client.get("/ngsi-ld/v1/jsonldContexts/plietsch.jsonld")
    assert doc.status_code == 200 and doc.headers["content-type"] == "application/ld+json"
    core, terms = doc.json()["@context"]
    assert core.startswith("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context")
    used = {k for e in get(api, E, limit=1000).json() for k in e} | {e["type"] for e in get(api, E, limit=1000).json()}
    assert used - {"id", "type", "location"} <= set(terms)


@pytest.mark.parametrize(("params", "says"), [
    ({"q": "height>>1"}, "'height>>1' is not an NGSI-LD query"),
    ({"q": "name==Mercedes"}, "strings in double quotes"),
    ({"georel": "near;maxDistance==10", "geometry": "Point"}, "coordinates missing"),
    ({"georel": "within", "geometry": "Point", "coordinates": "[[10,54]]"}, "are not a Point"),
    ({"georel": "touches", "geometry": "Point", "coordinates": "[10,54]"}, "georel 'touches'"),
    ({"geoproperty": "loc-ation"}, "geoproperty 'loc-ation' is not an attribute name"),  # also without a geo-query
    ({"limit": "5000"}, "limit"),
    ({"type": "Water Observed"}, "type 'Water Observed'"),
    ({"options": "concise"}, "options 'concise'"),
    ({"idPattern": "(a|b"}, "idPattern '(a|b'"),
    ({"count": "maybe"}, "count"),
])
def test_errors_are_problem_details_naming_the_value(api: Api, params: dict[str, str], says: str) -> None:
    r = api.client.get(E, params=params, headers=api.keys["planner"])
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["type"] == BAD and body["status"] == 400 and body["title"] and says in body["detail"], body


def test_not_found_and_bad_ids(api: Api) -> None:
    for path in (f"{E}/urn:ngsi-ld:WaterObserved:kiel:_:sensor:nope", f"{E}/urn:ngsi-ld:OffStreetParking:{GAUGE}"):
        r = get(api, path)
        assert r.status_code == 404 and r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
    r = get(api, f"{E}/not a uri")
    assert r.status_code == 400 and "'not a uri' is not a URI" in r.json()["detail"]


def test_roles(api: Api) -> None:
    """The public sees no sensor-level entity and no history through NGSI-LD (as elsewhere: issue 11 item 3), only the
    @context; planners and operators see the entities; free text (a citizen report's description) never appears."""
    for path in (E, f"{E}/{GAUGE_URN}", TE, f"{TE}/{GAUGE_URN}"):
        r = get(api, path, role="public")
        assert r.status_code == 401 and r.json()["type"] == "about:blank" and "needs a login as planner" in r.json()["detail"]
        for role in ("planner", "operator"):
            assert get(api, path, role=role).status_code == 200, (path, role)
    assert api.client.get("/ngsi-ld/v1/jsonldContexts/plietsch.jsonld").status_code == 200
    everything = get(api, E, role="operator", limit=1000)
    assert SECRET_TEXT not in everything.text and "report" not in {e["type"] for e in everything.json()}
    assert get(api, f"{E}/urn:ngsi-ld:CoastSegment:kiel:gaarden:report:r-ngsild-1", role="operator").status_code == 404


def test_temporal_from_history(api: Api) -> None:
    levels = [r.level_m for r in api.readings]
    one = get(api, f"{TE}/{GAUGE_URN}").json()
    assert [i["value"] for i in one["height"]] == levels
    assert one["height"][0] == {"type": "Property", "value": 1.0, "observedAt": "2026-05-05T10:00:00.000Z", "unitCode": "MTR",
                                "instanceId": f"urn:ngsi-ld:instance:{api.readings[0].event_id}"}
    t = lambda m: (T + timedelta(minutes=m)).isoformat().replace("+00:00", "Z")  # noqa: E731
    between = get(api, f"{TE}/{GAUGE_URN}", timerel="between", timeAt=t(2), endTimeAt=t(5)).json()
    assert [i["value"] for i in between["height"]] == levels[2:5]  # the end is exclusive
    assert [i["value"] for i in get(api, f"{TE}/{GAUGE_URN}", timerel="before", timeAt=t(2)).json()["height"]] == levels[:2]
    assert [i["value"] for i in get(api, f"{TE}/{GAUGE_URN}", timerel="after", timeAt=t(7)).json()["height"]] == levels[8:]
    last = get(api, f"{TE}/{GAUGE_URN}", lastN=3, attrs="height").json()
    assert [i["value"] for i in last["height"]] == levels[-3:] and set(last) == {"id", "type", "height"}
    simple = get(api, f"{TE}/{GAUGE_URN}", options="temporalValues", lastN=2).json()
    assert simple["height"] == {"type": "Property", "values": [[levels[-2], t(8).replace("Z", ".000Z")],
                                                                [levels[-1], t(9).replace("Z", ".000Z")]]}
    listed = get(api, TE, type="WaterObserved", timerel="after", timeAt=t(8), limit=100).json()
    assert [e["id"] for e in listed if "height" in e] == [GAUGE_URN] and len(listed) == 4
    assert get(api, TE, id=f"{GAUGE_URN},{PARKING_URN}", attrs="height").json() == [
        {"id": GAUGE_URN, "type": "WaterObserved", **{"height": one["height"]}}]
    coast = get(api, f"{TE}/{SEGMENT_URN}")
    assert coast.status_code == 404 and GAUGE_URN in coast.json()["detail"]
    for params, says in (({"timerel": "between", "timeAt": t(1)}, "needs endTimeAt"),
                         ({"timeAt": t(1)}, "timerel and timeAt together"),
                         ({"timerel": "before", "timeAt": "yesterday"}, "'yesterday' is not an ISO 8601"),
                         ({"timerel": "after", "timeAt": t(1), "endTimeAt": t(2)}, "only for timerel=between")):
        r = get(api, f"{TE}/{GAUGE_URN}", **params)
        assert r.status_code == 400 and r.json()["type"] == BAD and says in r.json()["detail"], (params, r.json())


def test_history_is_asked_through_the_engine_for_the_entity_only(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporal API reads history through the history engine, by entity ids and time range (the engine prunes
    files and row groups); it never opens archive files itself."""
    engine = api.client.app.state.history_engine  # type: ignore[attr-defined]
    calls: list[tuple[Any, ...]] = []
    real = engine.events

    def spy(start: Any, end: Any, entity_ids: Any, limit: int, offset: int) -> Any:
        calls.append((start, end, tuple(entity_ids), limit, offset))
        return real(start, end, entity_ids, limit, offset)

    monkeypatch.setattr(engine, "events", spy)
    get(api, f"{TE}/{GAUGE_URN}", lastN=2)
    assert [c[2] for c in calls] == [(GAUGE,), (GAUGE,)] and calls[-1][3:] == (2, 8)


def test_document_says_which_parameters_come_together(api: Api) -> None:
    """The geo-query and the temporal query are documented as form-exploded object parameters whose members are the
    plain query parameters, so the document says which come together."""
    doc = api.client.get("/openapi.json").json()
    geo = next(p for p in doc["paths"][E]["get"]["parameters"] if p["name"] == "geoQuery")
    assert geo["style"] == "form" and geo["explode"] and set(geo["schema"]["properties"]) == {
        "georel", "geometry", "coordinates", "geoproperty"}
    temporal = next(p for p in doc["paths"][TE]["get"]["parameters"] if p["name"] == "temporalQuery")
    assert set(temporal["schema"]["properties"]) == {"timerel", "timeAt", "endTimeAt"}
