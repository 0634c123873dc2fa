"""The open data hub (issue 13 item 7): ``GET /opendata/catalog`` (DCAT-AP.de, JSON-LD or Turtle by the Accept
header) and ``GET /opendata/datasets/{dataset_id}/distributions/{fmt}`` (GeoJSON or CSV, streamed).

Both routes are open to everyone (api/auth/access.py); each dataset has its own least role (api/opendata/datasets.py):
the catalogue lists only what the caller may download, and a download of a non-public dataset without a login is
refused with 401 and the reason, as every route of this API refuses a caller without a login (api/auth/access.py
enforce: 401 with ``WWW-Authenticate: Bearer``, "needs a login as planner"). Not 404: the datasets are no secret (the
README names them all), so a 404 would hide nothing and only suggest a wrong URL. Not 403: in this API 403 means "logged
in, but your role is too low", and no route open to the public answers it (tests/api/test_openapi.py); every logged-in
role (planner, operator) may download every dataset."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.responses import StreamingResponse

from api.auth.access import allowed, identify
from api.deps import PackDep, ReadModelDep
from api.negotiation import accepted
from api.opendata.catalog import FORMATS, OpenDataSettings, build, serialize
from api.opendata.datasets import BY_ID, DATASETS, Dataset, Provenance
from api.opendata.formats import csv_stream, geojson_stream
from twin.region import RegionPack

router = APIRouter(tags=["opendata"])
JSONLD = "application/ld+json"
TURTLE = "text/turtle"


def _settings(request: Request) -> OpenDataSettings:
    got = getattr(request.app.state, "opendata_settings", None)
    if got is None:
        got = request.app.state.opendata_settings = OpenDataSettings()
    return got  # type: ignore[no-any-return]


def available(pack: RegionPack, d: Dataset) -> bool:
    """The pack has the layer the dataset comes from (a pack without districts has no districts dataset)."""
    if d.layer is None:
        return bool(pack.neighbourhoods) if d.id == "public-figures" else True
    if d.layer not in pack.manifest.layers:
        return False
    return bool(pack.districts) if d.layer == "districts" else True


def _publisher(request: Request) -> str:
    return _settings(request).publisher


def visible(request: Request, pack: RegionPack) -> list[tuple[Dataset, Provenance]]:
    who = identify(request)
    pub = _publisher(request)
    return [(d, d.provenance(pack, pub)) for d in DATASETS if available(pack, d) and allowed(who, d.role)]


def negotiate(accept: str | None) -> str:
    """JSON-LD unless the client prefers Turtle (by its q values); an Accept without either gets JSON-LD."""
    best, best_q = JSONLD, 0.0
    for media, q in accepted(accept):
        kind = {TURTLE: TURTLE, JSONLD: JSONLD, "application/json": JSONLD}.get(media)
        if kind is not None and q > best_q:  # of equal q values the first listed wins
            best, best_q = kind, q
    return best


@router.get("/opendata/catalog", operation_id="opendata_catalog", response_class=Response,
            summary="The DCAT-AP.de catalogue of the open data hub (JSON-LD; Turtle with Accept: text/turtle)",
            responses={200: {"description": "the datasets the caller may download, with their distributions",
                             "content": {JSONLD: {"schema": {"type": "object"}}, TURTLE: {"schema": {"type": "string"}}}}})
def catalog(request: Request, pack: PackDep) -> Response:
    """DCAT-AP.de 2.0: every dataset the caller may see (the public: public datasets only; planners and operators:
    all), in German and English, with licence (DCAT-AP.de licence URIs), provenance, political geocoding of the
    municipality, EU data themes and file types, IANA media types and the download URLs."""
    kind = negotiate(request.headers.get("accept"))
    g = build(pack, visible(request, pack), str(request.base_url), _settings(request))
    body = serialize(g, "turtle" if kind == TURTLE else "json-ld")
    return Response(body, media_type=f"{kind}; charset=utf-8", headers={"Vary": "Accept, Authorization, Cookie"})


DATASET_ID = {"enum": [d.id for d in DATASETS], "description": "a dataset of GET /opendata/catalog"}


def _header(text: str) -> str:
    """A header value in ASCII: other characters percent-encoded (UTF-8), as RFC 8187 does for parameters."""
    return quote(text, safe=" !#$&'()*+,/:;=?@[]-._~<>\"")


def _dataset_for(request: Request, pack: RegionPack, dataset_id: str) -> Dataset:
    """The dataset, if the caller may see it: 404 for an unknown one, 401 for the public asking for a non-public one."""
    d = BY_ID.get(dataset_id)
    if d is None or not available(pack, d):
        known = ", ".join(x.id for x in DATASETS if available(pack, x))
        raise HTTPException(404, f"no dataset {dataset_id!r} in region {pack.id!r}; known: {known} "
                                 "(GET /opendata/catalog describes them)")
    who = identify(request)
    if not allowed(who, d.role) and who.role != "public":  # no dataset needs more than a planner today
        raise HTTPException(403, f"dataset {d.id!r} needs the role {d.role}; you ({who.subject}) are {who.role}")
    if not allowed(who, d.role):
        raise HTTPException(401, f"dataset {d.id!r} is for the role {d.role} and up (single sensors' readings and "
                                 f"unsuppressed figures are not public): log in at / or send an API key. The public "
                                 "figures per quarter are the dataset 'public-figures'", headers={"WWW-Authenticate": "Bearer"})
    return d


NOT_VISIBLE: dict[int | str, dict[str, Any]] = {
    401: {"description": "no login, or credentials that are wrong, expired or deleted; or the dataset is not public "
                         "(sensor-level readings, unsuppressed figures): log in as a planner"},
    404: {"description": "no such dataset, or the region pack has no such layer"}}


@router.get("/opendata/datasets/{dataset_id}", operation_id="opendata_dataset", response_class=Response,
            summary="One dataset's DCAT-AP.de description (its IRI in the catalogue; JSON-LD or Turtle)",
            responses={200: {"description": "the dcat:Dataset with its distributions",
                             "content": {JSONLD: {"schema": {"type": "object"}}, TURTLE: {"schema": {"type": "string"}}}},
                       **NOT_VISIBLE})
def dataset(request: Request, pack: PackDep, dataset_id: Annotated[str, Path(json_schema_extra=DATASET_ID)]) -> Response:
    """What the catalogue says about this dataset, at the dataset's own IRI (so that the catalogue's IRIs resolve)."""
    d = _dataset_for(request, pack, dataset_id)
    kind = negotiate(request.headers.get("accept"))
    g = build(pack, [(d, d.provenance(pack, _publisher(request)))], str(request.base_url), _settings(request), catalogue=False)
    body = serialize(g, "turtle" if kind == TURTLE else "json-ld")
    return Response(body, media_type=f"{kind}; charset=utf-8", headers={"Vary": "Accept, Authorization, Cookie"})


@router.get("/opendata/datasets/{dataset_id}/distributions/{fmt}", operation_id="opendata_download",
            response_class=StreamingResponse,
            summary="One dataset as GeoJSON or CSV, with licence and provenance (streamed)",
            responses={200: {"description": "the data; licence and provenance in the file (GeoJSON) and in the headers",
                             "content": {"application/geo+json": {"schema": {"type": "object"}},
                                         "text/csv": {"schema": {"type": "string"}}}},
                       **NOT_VISIBLE})
def download(request: Request, pack: PackDep, rm: ReadModelDep,
             dataset_id: Annotated[str, Path(json_schema_extra=DATASET_ID)],
             fmt: Annotated[Literal["geojson", "csv"], Path(description="geojson or csv")]) -> StreamingResponse:
    d = _dataset_for(request, pack, dataset_id)
    prov = d.provenance(pack, _publisher(request))
    spec = FORMATS[fmt]
    base = str(request.base_url)
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    headers = {
        "Content-Disposition": f'attachment; filename="{pack.id}-{d.id}.{spec["ext"]}"',
        "Link": f'<{prov.licence.url}>; rel="license", <{prov.licence.dcatde}>; rel="license", '
                f'<{base}opendata/catalog>; rel="describedby"; type="{JSONLD}"',
        "Plietsch-Licence": prov.licence.spdx,
        "Plietsch-Source": _header(prov.source),
        "Plietsch-Publisher": _header(prov.publisher),
        "Plietsch-Synthetic": str(prov.synthetic).lower(),
        "Plietsch-Modified": prov.modified.isoformat(),
        "Plietsch-Generated-At": now,
        "Last-Modified": prov.modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    rows = d.rows(pack, rm)
    if fmt == "csv":
        return StreamingResponse(csv_stream(d, rows), media_type="text/csv; charset=utf-8; header=present", headers=headers)
    meta: dict[str, Any] = {"title": d.title, "description": d.description, "generated_at": now,
                            "catalog": f"{base}opendata/catalog"}
    return StreamingResponse(geojson_stream(d, prov, rows, meta), media_type="application/geo+json", headers=headers)
