"""The GBFS source's parts without I/O: MobilityData's GBFS 3.0 schemas against their own examples and against broken
documents, the station mapping's checks, station status into readings, vehicle counts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from streams.settings import StreamSettings
from streams.sources.gbfs.convert import split_problems, station_status, vehicle_counts
from streams.sources.gbfs.mapping import Mapping, MappingError, load_mapping
from streams.sources.gbfs.source import SPROTTENFLOTTE_URL, GbfsSettings
from streams.sources.gbfs.validate import FILES, SCHEMAS, check
from tests.helpers import ROOT
from twin.region import load_pack

FIX = ROOT / "tests" / "fixtures" / "gbfs" / "mobilitydata"
PACK = load_pack(StreamSettings().region_pack)
BIKES = sorted(str(k) for k, s in PACK.sensors.items() if s.sensor_kind == "bike_share")


def example(name: str) -> dict:
    return json.loads((FIX / f"{name}.json").read_text())


def test_the_vendored_schemas_come_with_their_licence_and_accept_mobilitydatas_examples() -> None:
    assert "Apache License" in (SCHEMAS / "LICENSE").read_text() and "Apache License" in (FIX / "LICENSE").read_text()
    assert "commit" in (SCHEMAS / "README.md").read_text()
    for name in FILES:
        assert check(name, example(name)) == [], name


def test_schema_violations_name_the_path_and_what_is_wrong() -> None:
    doc = example("station_status")
    s = doc["data"]["stations"][0]
    s["num_vehicles_available"] = "3"
    s["last_reported"] = "2019-07-04T13:33:03"  # no UTC offset
    del s["is_renting"]
    problems = [str(p) for p in check("station_status", doc)]
    assert "/data/stations/0/num_vehicles_available: '3' is not of type 'integer'" in problems
    assert any(p.startswith("/data/stations/0/last_reported: '2019-07-04T13:33:03' is not a 'date-time'") and
               "no UTC offset" in p for p in problems)
    assert "/data/stations/0: 'is_renting' is a required property" in problems
    whole, entries = split_problems("station_status", check("station_status", doc))
    assert whole == [] and sorted(entries) == [0] and len(entries[0]) == 3
    gbfs = example("gbfs")
    gbfs["version"] = "2.3"
    gbfs["ttl"] = -1
    whole, entries = split_problems("gbfs", check("gbfs", gbfs))
    assert [p.pointer for p in whole] == ["/ttl", "/version"] and entries == {}
    assert "this source reads GBFS 3.0" in str(whole[1])


def write(tmp_path: Path, doc: object) -> Path:
    p = tmp_path / "stations.json"
    p.write_text(json.dumps(doc))
    return p


def test_the_mapping_is_checked_against_the_region_pack(tmp_path: Path) -> None:
    m = load_mapping(write(tmp_path, {"system": "kiel_test", "stations": {"a": BIKES[0], "b": BIKES[1]}}), PACK)
    assert m == Mapping("kiel_test", "kiel", {"a": BIKES[0], "b": BIKES[1]})
    cases = [
        ({"stations": {"a": "kiel:_:sensor:nope"}}, "sensor 'kiel:_:sensor:nope' is not in region pack 'kiel'"),
        ({"stations": {"a": "kiel:_:sensor:gauge-holtenau"}}, "has kind 'water_level'; a GBFS station needs a bike_share"),
        ({"stations": {"a": BIKES[0], "b": BIKES[0]}}, f"sensor {BIKES[0]} is already the sensor of station 'a'"),
        ({"stations": {}}, "maps no station"),
        ({"stations": {"a": BIKES[0]}, "extra": 1}, "extra: Extra inputs are not permitted"),
        ({"system": "a/b", "stations": {"a": BIKES[0]}}, "system: String should match pattern"),
    ]
    for doc, message in cases:
        with pytest.raises(MappingError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_mapping(write(tmp_path, doc), PACK)
    with pytest.raises(MappingError, match="does not exist; set PLIETSCH_GBFS_STATIONS"):
        load_mapping(tmp_path / "missing.json", PACK)


def test_status_into_readings_dedup_and_refusals() -> None:
    doc = example("station_status")
    sid = doc["data"]["stations"][0]["station_id"]
    second = copy.deepcopy(doc["data"]["stations"][0]) | {"station_id": "big", "num_vehicles_available": 20_000,
                                                           "num_docks_available": 3}
    doc["data"]["stations"].append(second)
    m = Mapping("t", "kiel", {sid: BIKES[0], "big": BIKES[1]})
    out = station_status(doc, set(), m, {}, {})
    assert [(s, r.bikes_available, r.docks_available) for s, r in out.readings] == [(sid, 0, 0)]  # no docks: 0 free
    assert out.readings[0][1].occurred_at.isoformat() == "2019-07-04T13:33:03.969000+00:00"
    [refused] = out.dead
    assert refused.error_type == "validation" and "bikes_available" in refused.reason and "big" in refused.reason
    assert set(out.newest) == {sid, "big"}  # a refused report is not tried again; the station's next one is read
    again = station_status(doc, set(), m, {}, {})
    assert again.readings[0][1].event_id == out.readings[0][1].event_id  # the same report, the same event id
    assert again.dead[0].dead_letter_id == refused.dead_letter_id
    seen = {k: v.isoformat() for k, v in out.newest.items()}
    later = station_status(doc, set(), m, seen, {})
    assert later.readings == [] and later.dead == [] and later.duplicates == 2
    skipped = station_status(doc, {0}, m, {}, {})  # entry 0 failed the schema: not read
    assert skipped.readings == [] and skipped.mapped_seen == 1


def test_vehicles_are_counted_per_station_and_status() -> None:
    doc = example("vehicle_status")
    v = doc["data"]["vehicles"]
    v[0]["station_id"] = "s1"
    v[1].update(station_id="s1", is_reserved=True)
    v[2].update(is_disabled=True, is_reserved=True)
    counts = vehicle_counts(doc, {3})
    assert counts == {("s1", "available"): 1, ("s1", "reserved"): 1, ("free_floating", "disabled"): 1,
                      ("free_floating", "available"): 3}


def test_the_default_feed_is_sprottenflotte(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLIETSCH_GBFS_URL", raising=False)
    monkeypatch.delenv("PLIETSCH_GBFS_STATIONS", raising=False)
    s = GbfsSettings()
    assert s.url == SPROTTENFLOTTE_URL and SPROTTENFLOTTE_URL.endswith("/gbfs/3.0/donkey_kielsmile/gbfs.json")
    assert s.stations is None  # off in 'plietsch run' until a mapping is given
