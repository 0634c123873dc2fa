"""The downloads' two formats, written as a stream of chunks (a layer is never built in memory at once).

GeoJSON (RFC 7946): a FeatureCollection whose foreign members carry the dataset's id, titles, licence and provenance
(``"license"``, ``"provenance"``, ``"synthetic"``), then the features one by one.
CSV (RFC 4180, UTF-8, header row): the dataset's documented columns, then the geometry: ``lon`` and ``lat`` for points
and ``wkt`` (OGC Well-Known Text, WGS 84 lon/lat) for every geometry; nested values (a sensor's state) as JSON.
Licence and provenance of a CSV travel in the response headers (api/routes/opendata.py), as CSV has no place for them."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from shapely.geometry import shape

from api.opendata.datasets import Dataset, Provenance, Row

CHUNK = 200  # features per chunk written to the socket


def csv_columns(d: Dataset) -> list[str]:
    cols = [c for c, _ in d.columns]
    if d.geometry in ("point", "point_or_shape"):
        cols += ["lon", "lat"]
    if d.geometry != "none":
        cols.append("wkt")
    return cols


def geojson_stream(d: Dataset, prov: Provenance, rows: Iterable[Row], meta: dict[str, Any]) -> Iterator[bytes]:
    head = {"type": "FeatureCollection", "id": d.id, **meta, "license": {
        "id": prov.licence.spdx, "uri": prov.licence.dcatde, "url": prov.licence.url, "note": prov.licence_note},
        "provenance": prov.as_json(), "synthetic": prov.synthetic}
    text = json.dumps(head, ensure_ascii=False)
    yield (text[:-1] + ', "features": [').encode()
    buf: list[str] = []
    first = True
    for geom, props in rows:
        fid = props.get("id")
        feat = {"type": "Feature", **({"id": fid} if fid is not None else {}), "geometry": geom, "properties": props}
        buf.append(("" if first else ",") + json.dumps(feat, ensure_ascii=False, default=str))
        first = False
        if len(buf) >= CHUNK:
            yield "".join(buf).encode()
            buf.clear()
    buf.append("]}")
    yield "".join(buf).encode()


def _cell(v: Any) -> Any:
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"), default=str)
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else v


def csv_stream(d: Dataset, rows: Iterable[Row]) -> Iterator[bytes]:
    cols = csv_columns(d)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(cols)
    for n, (geom, props) in enumerate(rows, 1):
        rec = [_cell(props.get(c)) for c, _ in d.columns]
        if d.geometry in ("point", "point_or_shape"):
            point = geom is not None and geom["type"] == "Point"
            rec += [geom["coordinates"][0], geom["coordinates"][1]] if point else ["", ""]  # type: ignore[index]
        if d.geometry != "none":
            rec.append("" if geom is None else shape(geom).wkt)
        w.writerow(rec)
        if n % CHUNK == 0:
            yield out.getvalue().encode()
            out.seek(0)
            out.truncate()
    yield out.getvalue().encode()
