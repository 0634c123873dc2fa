"""The DCAT-AP.de catalogue of the open data hub as an RDF graph (rdflib), served as JSON-LD or Turtle.

It follows DCAT-AP.de 2.0 (https://www.dcat-ap.de/def/dcatde/2.0/spec/) and is validated in the tests against the
official SHACL shapes of GovData's DCAT-AP.de validator (tests/fixtures/dcat/). Per dataset: German and English title,
description and keywords, EU data themes, publisher, contact point, political geocoding (URI and level) of the
municipality, spatial (bounding box) and temporal coverage where the data has one, modification time, access rights,
update frequency, provenance and, per distribution, access and download URL, EU file type, IANA media type, the
DCAT-AP.de licence URI and the attribution text."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, RDFS, XSD

from api.opendata.datasets import Dataset, Provenance
from twin.region import RegionPack

DCATDE = Namespace("http://dcat-ap.de/def/dcatde/")
VCARD = Namespace("http://www.w3.org/2006/vcard/ns#")
GSP = Namespace("http://www.opengis.net/ont/geosparql#")
EU = "http://publications.europa.eu/resource/authority/"
THEME, FILE_TYPE, LANGUAGE, ACCESS, FREQUENCY = (Namespace(EU + n + "/") for n in
                                                  ("data-theme", "file-type", "language", "access-right", "frequency"))
GEOCODING = "http://dcat-ap.de/def/politicalGeocoding/"
IANA = "https://www.iana.org/assignments/media-types/"
FORMATS: dict[str, dict[str, Any]] = {
    "geojson": {"media": "application/geo+json", "type": "GEOJSON", "ext": "geojson", "title": "GeoJSON",
                "spec": "https://www.rfc-editor.org/rfc/rfc7946"},
    "csv": {"media": "text/csv", "type": "CSV", "ext": "csv", "title": "CSV",
            "spec": "https://www.rfc-editor.org/rfc/rfc4180"},
}
CONTEXT = {"dcat": str(DCAT), "dct": str(DCTERMS), "dcatde": str(DCATDE), "foaf": str(FOAF), "vcard": str(VCARD),
           "rdfs": str(RDFS), "xsd": str(XSD), "gsp": str(GSP)}


class OpenDataSettings(BaseSettings):
    """Who publishes the catalogue and where it lies (environment ``PLIETSCH_OPENDATA_*``). The defaults name the
    project and the City of Kiel's municipality key; a deployment sets its own publisher and contact."""

    model_config = SettingsConfigDict(env_prefix="PLIETSCH_OPENDATA_", extra="ignore")
    publisher: str = "Plietsch Twin (KielRegion)"
    publisher_url: str = ""  # default: the API's own address
    contact_name: str = "Plietsch Twin open data"
    contact_email: str = ""  # vcard:hasEmail; without it the contact is the API's address (vcard:hasURL)
    contact_url: str = ""
    # Amtlicher Gemeindeschlüssel of the municipality the data covers (Kiel: 01002000), as the DCAT-AP.de
    # politicalGeocoding vocabulary names it; level "municipality"
    municipality_key: str = "01002000"
    # GovData's dcatde:contributorID (http://dcat-ap.de/def/contributors/...), given to portals that deliver to
    # GovData (DCAT-AP.de convention 12/13); empty: not delivered, not stated
    contributor_id: str = ""


def _text(g: Graph, s: URIRef | BNode, p: URIRef, texts: dict[str, str]) -> None:
    for lang, t in texts.items():
        g.add((s, p, Literal(t, lang=lang)))


def _when(t: datetime) -> Literal:
    return Literal(t.astimezone(UTC).replace(microsecond=0).isoformat(), datatype=XSD.dateTime)


def build(pack: RegionPack, items: list[tuple[Dataset, Provenance]], base: str, settings: OpenDataSettings,
          catalogue: bool = True) -> Graph:
    """The catalogue of *items* (the datasets the caller may see, with their provenance); *base* ends with '/'. Without
    *catalogue* only the datasets (what a dataset's own URL answers)."""
    g = Graph()
    for k, v in CONTEXT.items():
        g.bind(k, v)
    cat = URIRef(base + "opendata/catalog")
    publisher = URIRef(settings.publisher_url or base + "#publisher")
    g.add((publisher, RDF.type, FOAF.Organization))
    g.add((publisher, RDF.type, FOAF.Agent))
    g.add((publisher, FOAF.name, Literal(settings.publisher)))
    contact = BNode("contact")
    g.add((contact, RDF.type, VCARD.Organization))
    g.add((contact, RDF.type, VCARD.Kind))
    g.add((contact, VCARD.fn, Literal(settings.contact_name)))
    if settings.contact_email:
        g.add((contact, VCARD.hasEmail, URIRef("mailto:" + settings.contact_email)))
    g.add((contact, VCARD.hasURL, URIRef(settings.contact_url or base)))
    w, s, e, n = pack.manifest.bbox
    spatial = BNode("spatial")
    g.add((spatial, RDF.type, DCTERMS.Location))
    g.add((spatial, DCAT.bbox, Literal(f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))", datatype=GSP.wktLiteral)))
    g.add((spatial, RDFS.label, Literal(pack.manifest.name)))
    newest = max((p.modified for _, p in items), default=datetime.now(UTC))

    if not catalogue:
        for d, prov in items:
            _dataset(g, pack, d, prov, base, publisher, contact, spatial, settings)
        return g
    g.add((cat, RDF.type, DCAT.Catalog))
    _text(g, cat, DCTERMS.title, {"de": f"Plietsch Twin: offene Daten – {pack.manifest.name}",
                                  "en": f"Plietsch Twin: open data – {pack.manifest.name}"})
    _text(g, cat, DCTERMS.description, {
        "de": "Die Schichten des digitalen Zwillings der KielRegion als GeoJSON und CSV, mit Lizenz und Herkunft. "
              "Als synthetisch gekennzeichnete Daten sind erzeugt, nicht gemessen.",
        "en": "The layers of the KielRegion's digital twin as GeoJSON and CSV, with licence and provenance. Data "
              "marked synthetic is generated, not measured."})
    g.add((cat, DCTERMS.publisher, publisher))
    g.add((cat, FOAF.homepage, URIRef(base)))
    g.add((cat, DCTERMS.language, LANGUAGE.DEU))
    g.add((cat, DCTERMS.language, LANGUAGE.ENG))
    g.add((cat, DCAT.themeTaxonomy, URIRef(EU + "data-theme")))
    g.add((cat, DCTERMS.spatial, spatial))
    g.add((cat, DCTERMS.modified, _when(newest)))
    for d, prov in items:
        g.add((cat, DCAT.dataset, _dataset(g, pack, d, prov, base, publisher, contact, spatial, settings)))
    return g


def _dataset(g: Graph, pack: RegionPack, d: Dataset, prov: Provenance, base: str, publisher: URIRef, contact: BNode,
             spatial: BNode, settings: OpenDataSettings) -> URIRef:
    ds = URIRef(f"{base}opendata/datasets/{d.id}")
    g.add((ds, RDF.type, DCAT.Dataset))
    g.add((ds, DCTERMS.identifier, Literal(f"{pack.id}/{d.id}")))
    _text(g, ds, DCTERMS.title, d.title)
    _text(g, ds, DCTERMS.description, d.description)
    for lang, words in d.keywords.items():
        for word in words:
            g.add((ds, DCAT.keyword, Literal(word, lang=lang)))
    for theme in d.themes:
        g.add((ds, DCAT.theme, THEME[theme]))
    g.add((ds, DCTERMS.publisher, publisher))
    g.add((ds, DCAT.contactPoint, contact))
    g.add((ds, DCATDE.politicalGeocodingURI, URIRef(f"{GEOCODING}municipalityKey/{settings.municipality_key}")))
    g.add((ds, DCATDE.politicalGeocodingLevelURI, URIRef(f"{GEOCODING}Level/municipality")))
    if settings.contributor_id:
        g.add((ds, DCATDE.contributorID, URIRef(settings.contributor_id)))
    g.add((ds, DCTERMS.spatial, spatial))
    period = _period(pack, d, prov)
    if period is not None:
        node = BNode(f"period-{d.id}")
        g.add((node, RDF.type, DCTERMS.PeriodOfTime))
        g.add((node, DCAT.startDate, period[0]))
        if period[1] is not None:
            g.add((node, DCAT.endDate, period[1]))
        g.add((ds, DCTERMS.temporal, node))
    g.add((ds, DCTERMS.modified, _when(prov.modified)))
    g.add((ds, DCTERMS.accessRights, ACCESS.PUBLIC if d.role == "public" else ACCESS.RESTRICTED))
    g.add((ds, DCTERMS.accrualPeriodicity, FREQUENCY.CONT if d.live else FREQUENCY.IRREG))
    g.add((ds, DCTERMS.language, LANGUAGE.DEU))
    statement = BNode(f"provenance-{d.id}")
    g.add((statement, RDF.type, DCTERMS.ProvenanceStatement))
    synthetic = {True: "synthetic", False: "real data", "partly": "partly synthetic"}[prov.synthetic]
    g.add((statement, RDFS.label, Literal(f"{prov.source}. {prov.generated}; {synthetic}."
                                          + (f" {prov.note}." if prov.note else ""), lang="en")))
    g.add((ds, DCTERMS.provenance, statement))
    for fmt, spec in FORMATS.items():
        dist = URIRef(f"{base}opendata/datasets/{d.id}/distributions/{fmt}")
        g.add((ds, DCAT.distribution, dist))
        g.add((dist, RDF.type, DCAT.Distribution))
        _text(g, dist, DCTERMS.title, {"de": f"{d.title['de']} ({spec['title']})", "en": f"{d.title['en']} ({spec['title']})"})
        cols = ", ".join(f"{c} ({why})" for c, why in d.columns)
        geo = {"geojson": "GeoJSON FeatureCollection, WGS 84; properties: ",
               "csv": "UTF-8, comma-separated, header row; columns: "}[fmt]
        extra = "" if fmt == "geojson" or d.geometry == "none" else \
            ("; then lon, lat (points) and wkt (WGS 84)" if "point" in d.geometry else "; then wkt (WGS 84)")
        g.add((dist, DCTERMS.description, Literal(geo + cols + extra, lang="en")))
        geo_de = {"geojson": "GeoJSON-FeatureCollection, WGS 84; Eigenschaften: ",
                  "csv": "UTF-8, kommagetrennt, Kopfzeile; Spalten: "}[fmt]
        extra_de = "" if fmt == "geojson" or d.geometry == "none" else \
            ("; dann lon, lat (Punkte) und wkt (WGS 84)" if "point" in d.geometry else "; dann wkt (WGS 84)")
        names = ", ".join(c for c, _ in d.columns)
        g.add((dist, DCTERMS.description, Literal(geo_de + names + extra_de + " (Bedeutung: siehe englische Beschreibung)",
                                                  lang="de")))
        g.add((dist, DCAT.accessURL, dist))
        g.add((dist, DCAT.downloadURL, dist))
        g.add((dist, DCTERMS.format, FILE_TYPE[spec["type"]]))
        g.add((dist, DCAT.mediaType, URIRef(IANA + spec["media"])))
        g.add((dist, DCTERMS.conformsTo, URIRef(spec["spec"])))
        g.add((dist, DCTERMS.license, URIRef(prov.licence.dcatde)))
        attribution = prov.source + (f"; {prov.licence_note}" if prov.licence_note else "")
        g.add((dist, DCATDE.licenseAttributionByText, Literal(attribution)))
        g.add((dist, DCTERMS.modified, _when(prov.modified)))
    return ds


def _period(pack: RegionPack, d: Dataset, prov: Provenance) -> tuple[Literal, Literal | None] | None:
    """The time the data describes: the residents' year for the districts, from the moment the figures describe for
    live data; None for the pack's geometry layers (they describe no period)."""
    if d.id == "districts":
        years = sorted({x.population_year for x in pack.districts.values() if x.population_year})
        if years:
            return Literal(f"{years[0]}-01-01", datatype=XSD.date), Literal(f"{years[-1]}-12-31", datatype=XSD.date)
        return None
    if d.live:
        return _when(prov.modified), None
    return None


def serialize(g: Graph, fmt: str) -> bytes:
    if fmt == "turtle":
        return g.serialize(format="turtle", encoding="utf-8")
    return g.serialize(format="json-ld", context=CONTEXT, auto_compact=True, encoding="utf-8")
