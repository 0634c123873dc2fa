"""SensorThings contract cases taken from the OGC conformance test suite (ETS for SensorThings, opengeospatial/ets-sta10,
Apache 2.0, vendored under tests/fixtures/sensorthings/): the entity types' required properties and navigation
properties are read from its EntityType.java (not restated here), and the requests and expectations follow its
Capability1Tests (sensing core: properties, navigation links, self links, entity by id, navigation) and
Capability3Tests (filtering extension: $select, $top with @iot.nextLink, $orderby, the priority of query options)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.api.ngsild_setup import GAUGE, Api
from tests.api.test_sensorthings import api  # noqa: F401 - the same served twin (a module fixture)

pytestmark = pytest.mark.broker
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sensorthings"
B = "/sta/v1.1"


def entity_types() -> dict[str, tuple[str, list[str], list[str]]]:
    """plural -> (singular, properties, relations) as EntityType.java of the ETS declares them."""
    src = (FIXTURES / "EntityType.java").read_text()
    names = {m[0]: (m[1], m[2]) for m in re.findall(r'\b([A-Z_]+)\("(\w+)", "(\w+)"\)', src)}

    def listed(kind: str, enum: str) -> list[str]:
        m = re.search(rf"{enum}\.add{kind}\(([^;]*)\);", src)
        if m is None:
            return []
        out = []
        for arg in (a.strip() for a in m.group(1).split(",")):
            if arg.startswith('"'):
                out.append(arg.strip('"'))
            else:
                ref, _, form = arg.partition(".")
                out.append(names[ref][0 if form == "singular" else 1])
        return out

    return {plural: (singular, listed("Properties", enum), listed("Relations", enum))
            for enum, (singular, plural) in names.items()}


TYPES = entity_types()


def get(api: Api, url: str, **params: Any) -> Any:  # noqa: F811
    r = api.client.get(url, params=params, headers=api.keys["planner"])
    assert r.status_code == 200, (url, params, r.text)
    return r.json()


def test_the_ets_names_eight_entity_types_and_the_service_root_lists_them(api: Api) -> None:  # noqa: F811
    assert len(TYPES) == 8 and TYPES["Datastreams"][1] == ["name", "description", "unitOfMeasurement", "observationType"]
    root = get(api, B)
    assert {v["name"] for v in root["value"]} == set(TYPES)
    for v in root["value"]:
        assert v["url"].endswith(f"{B}/{v['name']}")
    assert "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel" in root["serverSettings"]["conformance"]


@pytest.mark.parametrize("plural", sorted(TYPES))
def test_entities_have_the_ets_properties_navigation_and_self_links(api: Api, plural: str) -> None:  # noqa: F811
    """Capability1Tests.readEntitiesAndCheckResponse / checkEntityProperties / checkEntityRelations / readEntityWithId
    / checkRelatedEntity: every property and every navigation link of the type, the self link answers the entity
    itself, each navigation link answers."""
    singular, props, relations = TYPES[plural]
    page = get(api, f"{B}/{plural}", **{"$top": "2"})
    if plural == "HistoricalLocations":
        assert page["value"] == []  # no sensor of the twin moves (api/sensorthings/model.py)
        return
    assert page["value"], f"no {plural}"
    for e in page["value"]:
        for p in props:
            assert p in e, f"{singular} lacks {p!r}: {e}"
        for rel in relations:
            assert e[f"{rel}@iot.navigationLink"] == f"{e['@iot.selfLink']}/{rel}"
        assert api.client.get(e["@iot.selfLink"], headers=api.keys["planner"]).json() == e
        for rel in relations:
            r = api.client.get(e[f"{rel}@iot.navigationLink"], headers=api.keys["planner"])
            assert r.status_code == 200, (rel, r.text)
            assert ("value" in r.json()) if rel in TYPES else ("@iot.id" in r.json())  # plural: a collection


@pytest.mark.parametrize("plural", ["Things", "Datastreams", "Sensors", "ObservedProperties", "Locations"])
def test_select_gives_exactly_the_selected_properties(api: Api, plural: str) -> None:  # noqa: F811
    """Capability3Tests.checkEntitiesProperties: a selected property is there, an unselected one is not."""
    props = TYPES[plural][1]
    for chosen in ([props[0]], props[:2]):
        e = get(api, f"{B}/{plural}", **{"$select": ",".join(chosen), "$top": "2"})["value"][0]
        assert set(e) == set(chosen), e


def test_top_and_next_link(api: Api) -> None:  # noqa: F811
    """Capability3Tests.checkTopForCollection: $top=n answers n entities and a nextLink while more follow."""
    total = get(api, f"{B}/Things", **{"$count": "true", "$top": "0"})["@iot.count"]
    for n in (1, 2, 3, 5, 12, 13):
        page = get(api, f"{B}/Things", **{"$top": str(n)})
        assert len(page["value"]) == n and "@iot.nextLink" in page
    last = get(api, f"{B}/Things", **{"$top": str(total)})
    assert len(last["value"]) == total and "@iot.nextLink" not in last


def test_orderby_asc_desc_and_several(api: Api) -> None:  # noqa: F811
    """Capability3Tests.checkOrderbyForEntityType: $orderby=p, p asc, p desc, and several properties."""
    for prop in ("name", "description"):
        plain = [e[prop] for e in get(api, f"{B}/Things", **{"$orderby": prop, "$top": "1000"})["value"]]
        asc = [e[prop] for e in get(api, f"{B}/Things", **{"$orderby": f"{prop} asc", "$top": "1000"})["value"]]
        desc = [e[prop] for e in get(api, f"{B}/Things", **{"$orderby": f"{prop} desc", "$top": "1000"})["value"]]
        assert plain == asc == sorted(asc) and desc == sorted(desc, reverse=True)
    both = get(api, f"{B}/Datastreams", **{"$orderby": "unitOfMeasurement/symbol desc,name asc", "$top": "1000"})["value"]
    keys = [(d["unitOfMeasurement"]["symbol"], d["name"]) for d in both]
    assert keys == sorted(keys, key=lambda k: (_rev(k[0]), k[1]))


def _rev(s: str) -> list[int]:
    return [-ord(c) for c in s] + [1]  # descending text, a prefix after the longer text


def test_priority_of_query_options(api: Api) -> None:  # noqa: F811
    """Capability3Tests.checkQueriesPriorityOrdering: $filter first, then $count over what matches, $orderby, $skip,
    $top; a numeric result compared with a numeric string literal. The ETS' own data has results 1..12 and expects
    count 6 and result 6 for result gt '3'; the twin's gauge has readings 1.0..1.9, so the bound is '1.3' (and lt '2'
    keeps the other sensors' readings out): six match, the third in time order is 1.6."""
    q = {"$count": "true", "$top": "1", "$skip": "2", "$orderby": "phenomenonTime asc",
         "$filter": "result gt '1.3' and result lt '2'"}
    page = get(api, f"{B}/Observations", **q)
    assert page["@iot.count"] == 6 and len(page["value"]) == 1 and page["value"][0]["result"] == 1.6
    assert page["value"][0]["@iot.id"].startswith(f"{GAUGE}:height@")
