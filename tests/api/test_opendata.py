"""Issue 13 item 7 over HTTP, on a broker of this test's own (twin updates and aggregate partials produced onto the
output topics, read by the API's read model): the catalogue per role and by content negotiation, the downloads of
every dataset in both formats with licence and provenance in the file and the headers, the public's figures with small
counts suppressed, refusals with their reasons, and the GeoJSON written as a stream of chunks.

Request -> expected response cases (DCAT-AP.de and the formats' RFCs): GET /opendata/catalog with Accept
application/ld+json, application/json, */* or none -> JSON-LD (a dcat:Catalog); with Accept text/turtle (also at a
higher q than JSON-LD) -> Turtle of the same graph; a dataset's dcat:downloadURL -> 200 with the dcat:mediaType the
catalogue names; GeoJSON per RFC 7946 (a FeatureCollection, lon/lat, foreign members for licence and provenance); CSV
per RFC 4180 (CRLF, header row, UTF-8)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rdflib import Graph, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import DCAT, DCTERMS, RDF
from shapely import wkt
from shapely.geometry import shape

from api.auth.store import AuthStore
from api.main import create_app
from api.opendata.datasets import BY_ID, DATASETS
from api.opendata.formats import CHUNK, csv_columns, csv_stream, geojson_stream
from api.settings import ApiSettings
from infra.broker import EmbeddedBroker
from streams.catalogue import ensure_topics
from tests.api.readside import HOOD, ROAD, SEGMENT, SENSOR, TOPICS, Out, coast_state, partial, update
from tests.credentials import OPERATOR
from tests.helpers import wait_for
from twin.region import BUNDLED_DIR, bundled_pack

pytestmark = pytest.mark.broker
PUBLIC = [d.id for d in DATASETS if d.role == "public"]
PLANNER = [d.id for d in DATASETS if d.role == "planner"]
T = "2030-03-01T12:00:00+00:00"
UPD, AGG = TOPICS["updates"], TOPICS["aggregates"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    """The API over its own broker, after one sensor's and one coast segment's state and 3 vehicles on a road of
    Gaarden reached its read model."""
    from datetime import datetime

    data = tmp_path_factory.mktemp("opendata")
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap_servers)
        out = Out(broker.bootstrap_servers)
        out.send(UPD, SENSOR, update(SENSOR, 1, {"values": {"vehicles": 3}}))
        out.send(UPD, SEGMENT, update(SEGMENT, 1, coast_state(0.4)))
        out.send(AGG, *partial(datetime.fromisoformat(T), 0, 3.0, 1, rev=1))
        app = create_app(ApiSettings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, region_pack=BUNDLED_DIR / "kiel",
                                     data_dir=data, public_rate=10_000, public_burst=10_000))
        planner = AuthStore(data / "auth.sqlite3").add_key("opendata planner", "planner", "test")[1]
        with TestClient(app) as c:
            wait_for(lambda: c.get("/aggregates", headers=OPERATOR).json() and c.get(f"/entities/{SEGMENT}", headers=OPERATOR)
                     .json()["properties"].get("reported"), 60, "the twin's outputs in the read model")
            yield c, {"public": {}, "planner": {"Authorization": f"Bearer {planner}"}, "operator": OPERATOR}


def _catalog(c: TestClient, headers: dict[str, str], accept: str | None = None) -> tuple[Graph, Any]:
    r = c.get("/opendata/catalog", headers={**headers, **({"Accept": accept} if accept else {})})
    assert r.status_code == 200, r.text
    fmt = "turtle" if r.headers["content-type"].startswith("text/turtle") else "json-ld"
    return Graph().parse(data=r.content, format=fmt), r


def _ids(g: Graph) -> set[str]:
    return {str(o).split("/", 1)[1] for o in g.objects(None, DCTERMS.identifier)}


def test_the_public_catalogue_lists_the_public_datasets_only_planners_and_operators_see_all(
        client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, headers = client
    public, r = _catalog(c, headers["public"])
    assert r.headers["content-type"] == "application/ld+json; charset=utf-8" and "Accept" in r.headers["vary"]
    assert _ids(public) == set(PUBLIC) and not set(PLANNER) & _ids(public)
    assert "live-state" not in r.text and "aggregates/distributions" not in r.text
    for role in ("planner", "operator"):
        g, _ = _catalog(c, headers[role])
        assert _ids(g) == {d.id for d in DATASETS}
        restricted = {str(s) for s in g.subjects(DCTERMS.accessRights,
                                                 URIRef("http://publications.europa.eu/resource/authority/access-right/RESTRICTED"))}
        assert {s.rsplit("/", 1)[1] for s in restricted} == set(PLANNER)
    cat = next(iter(public.subjects(RDF.type, DCAT.Catalog)))
    titles = {t.language: str(t) for t in public.objects(cat, DCTERMS.title)}
    assert set(titles) == {"de", "en"} and "offene Daten" in titles["de"]


@pytest.mark.parametrize("accept,kind", [(None, "application/ld+json"), ("*/*", "application/ld+json"),
                                         ("application/json", "application/ld+json"),
                                         ("application/ld+json", "application/ld+json"), ("text/turtle", "text/turtle"),
                                         ("application/ld+json;q=0.5, text/turtle", "text/turtle"),
                                         ("text/turtle;q=0.2, application/ld+json;q=0.9", "application/ld+json"),
                                         ("text/html", "application/ld+json")])
def test_content_negotiation(client: tuple[TestClient, dict[str, dict[str, str]]], accept: str | None, kind: str) -> None:
    c, headers = client
    g, r = _catalog(c, headers["public"], accept)
    assert r.headers["content-type"].split(";")[0] == kind
    other, _ = _catalog(c, headers["public"], "text/turtle" if kind != "text/turtle" else "application/ld+json")
    for graph in (g, other):  # live data is "modified" at the time of each request: the two may differ by a second
        for p in (DCTERMS.modified, DCAT.startDate):
            graph.remove((None, p, None))
    assert isomorphic(g, other)  # the same graph in either syntax


def test_every_distribution_downloads_as_the_catalogue_says(client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, headers = client
    g, _ = _catalog(c, headers["planner"])
    dists = list(g.subjects(RDF.type, DCAT.Distribution))
    assert len(dists) == 2 * len(DATASETS)
    for dist in dists:
        url = str(g.value(dist, DCAT.downloadURL))
        media = str(g.value(dist, DCAT.mediaType)).split("media-types/")[1]
        lic = str(g.value(dist, DCTERMS.license))
        r = c.get(url, headers=headers["planner"])
        assert r.status_code == 200, (url, r.text)
        assert r.headers["content-type"].split(";")[0] == media
        assert f'<{lic}>; rel="license"' in r.headers["link"] and 'rel="describedby"' in r.headers["link"]
        assert r.headers["plietsch-licence"] and r.headers["plietsch-synthetic"] in ("true", "false", "partly")
        assert "attachment" in r.headers["content-disposition"]


def test_geojson_carries_licence_and_provenance_and_every_feature(client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, headers = client
    pack = bundled_pack()
    sizes = {"districts": len(pack.districts), "quarters": len(pack.neighbourhoods), "buildings": len(pack.buildings),
             "roads": len(pack.roads), "coast-segments": len(pack.coast), "sensors": len(pack.sensors),
             "public-figures": len(pack.neighbourhoods)}
    for did, n in sizes.items():
        doc = c.get(f"/opendata/datasets/{did}/distributions/geojson").json()
        assert doc["type"] == "FeatureCollection" and len(doc["features"]) == n, did
        assert doc["license"]["uri"].startswith("http://dcat-ap.de/def/licenses/") and doc["license"]["url"].startswith("https://")
        prov = doc["provenance"]
        assert prov["source"] and prov["publisher"] and prov["modified"] and doc["generated_at"]
        assert doc["synthetic"] == prov["synthetic"]
        for f in doc["features"][:50]:
            assert shape(f["geometry"]).is_valid and f["properties"]["id"] == f["id"]
    assert c.get("/opendata/datasets/buildings/distributions/geojson").json()["synthetic"] is True
    assert c.get("/opendata/datasets/districts/distributions/geojson").json()["synthetic"] is False
    assert c.get("/opendata/datasets/districts/distributions/geojson").json()["license"]["uri"] == \
        "http://dcat-ap.de/def/licenses/cc-by/4.0"
    coast = c.get("/opendata/datasets/coast-segments/distributions/geojson").json()
    assert coast["synthetic"] == "partly" and coast["license"]["id"] == "LGPL-3.0-or-later"


def test_csv_has_the_documented_columns_and_geometry(client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, headers = client
    pack = bundled_pack()
    for did in [*PUBLIC, *PLANNER]:
        r = c.get(f"/opendata/datasets/{did}/distributions/csv", headers=headers["planner"])
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv; charset=utf-8")
        assert b"\r\n" in r.content[:2000]
        rows = list(csv.reader(io.StringIO(r.content.decode("utf-8"))))
        assert rows[0] == csv_columns(BY_ID[did]), did
        for row in rows[1:40]:
            rec = dict(zip(rows[0], row, strict=True))
            if "wkt" in rec and rec["wkt"]:
                assert wkt.loads(rec["wkt"]).is_valid
            if rec.get("lon"):
                x0, y0, x1, y1 = pack.manifest.bbox
                assert x0 - 1 <= float(rec["lon"]) <= x1 + 1 and y0 - 1 <= float(rec["lat"]) <= y1 + 1
    names = {row[1] for row in csv.reader(io.StringIO(c.get("/opendata/datasets/districts/distributions/csv").text))}
    assert any(ch in "".join(names) for ch in "äöüß")  # UTF-8 as written: Düsternbrook, Südfriedhof, ...


def test_the_public_figures_never_show_more_than_the_public_summary(client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    """3 vehicles on a Gaarden road: the planners' aggregates say 3, the public's figures "<5", as /public/summary."""
    c, headers = client
    figures = c.get("/opendata/datasets/public-figures/distributions/geojson").json()["features"]
    allowed = {"id", "name", *(k for k, _ in BY_ID["public-figures"].columns)}
    assert all(set(f["properties"]) <= allowed for f in figures)
    gaarden = next(f["properties"] for f in figures if f["id"] == HOOD)
    assert gaarden["traffic_vehicles_15min"] == "<5"
    summary = {h["id"]: h for h in c.get("/public/summary").json()["neighbourhoods"]}
    for f in figures:
        assert {k: v for k, v in f["properties"].items() if v is not None} == \
            {k: v for k, v in summary[f["id"]].items() if v is not None}
    rows = list(csv.DictReader(io.StringIO(c.get("/opendata/datasets/aggregates/distributions/csv",
                                                 headers=headers["planner"]).text)))
    assert [(r["group"], float(r["sum"])) for r in rows if r["metric"] == "traffic_vehicles"] == [(ROAD, 3.0)]


def test_live_state_is_for_planners_with_the_reading(client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, headers = client
    doc = c.get("/opendata/datasets/live-state/distributions/geojson", headers=headers["planner"]).json()
    by_id = {f["id"]: f["properties"] for f in doc["features"]}
    assert by_id[SENSOR]["state"] == {"values": {"vehicles": 3}} and by_id[SENSOR]["revision"] == 1
    assert by_id[SEGMENT]["state"]["level_m"] == 0.4
    rows = list(csv.DictReader(io.StringIO(c.get("/opendata/datasets/live-state/distributions/csv",
                                                 headers=headers["operator"]).text)))
    assert json.loads(next(r for r in rows if r["id"] == SENSOR)["state"]) == {"values": {"vehicles": 3}}


def test_the_catalogues_dataset_iris_resolve_to_what_the_catalogue_says(
        client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    """A dataset's IRI in the catalogue answers its DCAT description: the same triples about it, no catalogue."""
    c, headers = client
    cat, _ = _catalog(c, headers["planner"], "text/turtle")
    for ds in cat.subjects(RDF.type, DCAT.Dataset):
        r = c.get(str(ds), headers={**headers["planner"], "Accept": "text/turtle"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/turtle")
        own = Graph().parse(data=r.content, format="turtle")
        assert not list(own.subjects(RDF.type, DCAT.Catalog))
        for p in (DCTERMS.title, DCTERMS.description, DCAT.theme, DCAT.distribution, DCTERMS.accessRights):
            assert set(own.objects(ds, p)) == set(cat.objects(ds, p)), (ds, p)
    assert c.get("/opendata/datasets/live-state").status_code == 401
    assert c.get("/opendata/datasets/roads").headers["content-type"].startswith("application/ld+json")


@pytest.mark.parametrize("did", PLANNER)
def test_the_public_is_refused_non_public_datasets_with_the_reason(client: tuple[TestClient, dict[str, dict[str, str]]],
                                                                   did: str) -> None:
    c, _ = client
    for url in (f"/opendata/datasets/{did}/distributions/geojson", f"/opendata/datasets/{did}/distributions/csv",
                f"/opendata/datasets/{did}"):
        r = c.get(url)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert f"dataset {did!r} is for the role planner" in r.json()["detail"] and "log in" in r.json()["detail"]


def test_unknown_datasets_and_formats(client: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, headers = client
    r = c.get("/opendata/datasets/unicorns/distributions/csv", headers=headers["operator"])
    assert r.status_code == 404 and "no dataset 'unicorns'" in r.json()["detail"] and "districts" in r.json()["detail"]
    assert c.get("/opendata/datasets/roads/distributions/xlsx").status_code == 422
    assert c.get("/opendata/datasets/unicorns").status_code == 404


def _counted(rows: Iterator[Any], taken: list[int]) -> Iterator[Any]:
    for r in rows:
        taken[0] += 1
        yield r


def test_downloads_are_written_in_chunks_not_built_at_once() -> None:
    """The downloads are generators of chunks (a StreamingResponse writes each as it comes): chunks of rows go out
    after at most CHUNK rows each, long before the whole layer was read; joined, the chunks are one document."""
    pack = bundled_pack()
    d = BY_ID["buildings"]
    n = len(pack.buildings)
    assert n > CHUNK + 1
    for fmt in ("geojson", "csv"):
        taken = [0]
        rows = _counted(d.rows(pack, None), taken)
        stream = geojson_stream(d, d.provenance(pack, "P"), rows, {}) if fmt == "geojson" else csv_stream(d, rows)
        read_when_written = [taken[0] for _ in stream]
        assert read_when_written[-1] == n and len(read_when_written) >= n // CHUNK
        assert [t for t in read_when_written if 0 < t < n][0] <= CHUNK + 1, (fmt, read_when_written)
    chunks = list(geojson_stream(d, d.provenance(pack, "P"), d.rows(pack, None), {}))
    assert len(json.loads(b"".join(chunks))["features"]) == n
