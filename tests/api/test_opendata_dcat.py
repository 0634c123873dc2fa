"""Issue 13 item 7: the open data hub's DCAT-AP.de catalogue validated against the official SHACL shapes of GovData's
DCAT-AP.de validator (tests/fixtures/dcat/README.md says which files, from where, at which commit), with pyshacl.

The shape set is the validator's profile "DCAT-AP.de 2.0 - Spezifikation" (DCAT-AP 2.1.1 shapes + the German messages,
additions and deprecations) and "... + Konventionen"; the vocabularies the validator pulls in by owl:imports are
vendored (the licence and contributor lists, foaf and vcard) or, where they are large EU tables, reduced to the
concepts used (vocabularies-subset.ttl). Before the catalogue is judged, the shape set is held to the specification's
own examples: the simple example conforms to the specification and breaks exactly conventions K01 and K36; the
political-geocoding test case's good datasets conform and its bad ones do not. Then: the catalogue, as the public and
as a planner sees it, has 0 violations; a catalogue broken in the ways the shapes guard against does not pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyshacl import validate
from rdflib import Graph, Literal, URIRef
from rdflib.namespace import DCAT, DCTERMS, SH

from api.opendata.catalog import THEME, OpenDataSettings, build, serialize
from api.opendata.datasets import DATASETS, OpenDataError, licence_of
from twin.region import RegionPack, bundled_pack

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "dcat"
SPEC = ("dcat-ap_2.1.1_shacl_shapes.ttl", "dcat-ap-spec-german-messages.ttl", "dcat-ap-spec-german-additions.ttl",
        "dcat-ap-de-deprecated.ttl")
CONVENTIONS = (*SPEC, "dcat-ap-konventionen.ttl")
IMPORTS = ("dcat-ap-de-licenses.rdf", "dcat-ap-de-contributors.rdf", "foaf_0_1.rdf", "vcard.ttl", "vocabularies-subset.ttl")
BASE = "https://twin.example.org/"
STATE_SH = "http://dcat-ap.de/def/contributors/schleswigHolstein"  # Kiel's data reaches GovData via the state portal


def _graph(files: tuple[str, ...]) -> Graph:
    g = Graph()
    for f in files:
        g.parse(FIXTURES / f)
    return g


@pytest.fixture(scope="module")
def shapes() -> dict[str, Graph]:
    return {"spec": _graph(SPEC), "conventions": _graph(CONVENTIONS)}


@pytest.fixture(scope="module")
def imports() -> Graph:
    return _graph(IMPORTS)


@pytest.fixture(scope="module")
def pack() -> RegionPack:
    return bundled_pack()


def check(data: Graph, shapes: Graph, imports: Graph) -> tuple[list[tuple[str, str]], int]:
    """(focus node, message) of every violation, and the number of warnings; the imports are loaded into the data as
    the validator's owl:imports do."""
    g = Graph()
    g += data
    g += imports
    _, report, _ = validate(g, shacl_graph=shapes, inference="none", advanced=True, allow_warnings=True)
    violations = sorted({(str(report.value(r, SH.focusNode)), str(report.value(r, SH.resultMessage)))
                         for r in report.subjects(SH.resultSeverity, SH.Violation)})
    return violations, len(set(report.subjects(SH.resultSeverity, SH.Warning)))


def catalogue(pack: RegionPack, role: str, **settings: str) -> Graph:
    """The catalogue as served: built, written as JSON-LD and read back (what a harvester gets)."""
    items = [(d, d.provenance(pack, "Plietsch Twin")) for d in DATASETS if role != "public" or d.role == "public"]
    body = serialize(build(pack, items, BASE, OpenDataSettings(**settings)), "json-ld")  # type: ignore[arg-type]
    return Graph().parse(data=body, format="json-ld")


def test_the_shapes_judge_the_specifications_examples_as_the_specification_does(shapes: dict[str, Graph],
                                                                                 imports: Graph) -> None:
    example = Graph().parse(FIXTURES / "example-simple.ttl")
    assert check(example, shapes["spec"], imports)[0] == []
    broken = [m.split(":")[0] for _, m in check(example, shapes["conventions"], imports)[0]]
    assert sorted(broken) == ["K01", "K36"]  # its contact has a telephone only; its dataset names no publisher
    case = Graph().parse(FIXTURES / "testcase-politicalGeocodingURI.ttl", publicID="http://case.test/x")
    # ok-3 names keys of every level; their vocabularies are not vendored (only Kiel's and the state's keys are)
    for p, o in list(case.predicate_objects(URIRef("http://case.test/ok-3-dataset"))):
        case.remove((URIRef("http://case.test/ok-3-dataset"), p, o))
    failing = {focus for focus, _ in check(case, shapes["spec"], imports)[0]}
    assert "http://case.test/ok-1-dataset" not in failing and "http://case.test/ok-2-dataset" not in failing
    assert {"Berlin", "https://sws.geonames.org/2950157/"} <= failing  # bad-1 (a literal) and bad-2 (not the vocabulary)


@pytest.mark.parametrize("role", ["public", "planner"])
def test_the_catalogue_has_no_violation_of_the_dcat_ap_de_specification(pack: RegionPack, shapes: dict[str, Graph],
                                                                         imports: Graph, role: str) -> None:
    data = catalogue(pack, role)
    violations, warnings = check(data, shapes["spec"], imports)
    assert violations == []
    datasets = set(data.subjects(DCTERMS.identifier, None))
    assert len(datasets) == len([d for d in DATASETS if role != "public" or d.role == "public"])
    print(f"{role}: {len(data)} triples, {len(datasets)} datasets, 0 violations, {warnings} warnings")


def test_the_catalogue_has_no_violation_of_the_conventions_when_it_names_its_contributor(
        pack: RegionPack, shapes: dict[str, Graph], imports: Graph) -> None:
    """Convention 12/13 (dcatde:contributorID, GovData's id of the delivering portal) is set by a deployment that
    delivers to GovData (PLIETSCH_OPENDATA_CONTRIBUTOR_ID); without it exactly that convention fails."""
    assert check(catalogue(pack, "planner", contributor_id=STATE_SH), shapes["conventions"], imports)[0] == []
    without = check(catalogue(pack, "planner"), shapes["conventions"], imports)[0]
    assert without and {m.split(":")[0] for _, m in without} == {"K12&13"}


def test_a_broken_catalogue_does_not_pass(pack: RegionPack, shapes: dict[str, Graph], imports: Graph) -> None:
    """The shapes bite: a dataset without a title, a licence outside the DCAT-AP.de list, a theme outside the EU's."""
    data = catalogue(pack, "public")
    ds = URIRef(BASE + "opendata/datasets/roads")
    for t in list(data.objects(ds, DCTERMS.title)):
        data.remove((ds, DCTERMS.title, t))
    dist = URIRef(BASE + "opendata/datasets/buildings/distributions/csv")
    data.set((dist, DCTERMS.license, URIRef("http://dcat-ap.de/def/licenses/made-up")))
    data.add((URIRef(BASE + "opendata/datasets/sensors"), DCAT.theme, THEME.MADE))
    data.add((URIRef(BASE + "opendata/datasets/quarters"), DCTERMS.modified, Literal("last tuesday")))
    spec = check(data, shapes["spec"], imports)[0]
    focus = {f for f, _ in spec}
    assert {str(ds), str(THEME.MADE)} <= focus
    assert any("dct:modified" in m for _, m in spec), spec  # not a date
    assert "http://dcat-ap.de/def/licenses/made-up" not in focus  # the specification leaves the distribution's
    conventions = check(data, shapes["conventions"], imports)[0]  # licence list to convention K31
    assert [f for f, m in conventions if m.startswith("K31")] == [str(dist)]


def test_a_licence_the_catalogue_cannot_name_is_a_clear_error() -> None:
    assert licence_of("CC-BY-4.0; population MIT", "x")[0].dcatde == "http://dcat-ap.de/def/licenses/cc-by/4.0"
    assert licence_of("LGPL-3.0-or-later", "x")[0].dcatde == "http://dcat-ap.de/def/licenses/other-opensource"
    with pytest.raises(OpenDataError, match=r"region.json layer 'roads': licence 'WTFPL' has no DCAT-AP.de licence URI"):
        licence_of("WTFPL", "region.json layer 'roads'")
