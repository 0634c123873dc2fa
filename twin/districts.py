"""Real administrative districts (Stadtteile) in a region pack: reading a municipality's open data, matching its
population table by name, and the pack's ``districts`` layer.

A district is context, not a twin entity: it has a name, an official number (``code``), its polygon and, where the
municipality publishes it, its population of the newest year; every feature carries its source and licence.

Names are matched between files by :func:`name_key`, one rule instead of a hand list: case and accents of the
separators do not matter, and ``/``, ``-`` and the word ``und`` all separate the same parts (so the population table's
"Gaarden-Süd/Kronsburg" is the polygons' "Gaarden-Süd und Kronsburg", and "Neumühlen/Dietrichsdorf" is
"Neumühlen-Dietrichsdorf")."""

from __future__ import annotations

import csv
import difflib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from shapely import make_valid
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from twin.geo import read_layer

NAME_FIELDS = ("name", "NAME", "AREA_NAME", "stadtteil", "Stadtteil", "STADTTEIL", "bezeichnung")
CODE_FIELDS = ("code", "CODE", "AREA_ID", "nummer", "Nummer", "stadtteilnummer", "id")
_SEPARATORS = re.compile(r"\s*(?:/|-|\bund\b|&|,)\s*")
_LEADING_NUMBER = re.compile(r"^\s*(\d+)\s+(?=\D)")


class DistrictError(ValueError):
    """District data that cannot be used; the message names the file, the feature and what to do."""


def name_key(name: str) -> str:
    """The key two spellings of one district name share: lower case, whitespace collapsed, and '/', '-', '&', ','
    and the word 'und' all one separator. A leading official number ("03 Nordstadt") is not part of the name."""
    text = _LEADING_NUMBER.sub("", name).casefold().strip()
    parts = [p for p in _SEPARATORS.split(text) if p]
    return "|".join(" ".join(p.split()) for p in parts)


def clean_name(name: str) -> str:
    """A display name without a leading official number ("03 Nordstadt" -> "Nordstadt")."""
    return _LEADING_NUMBER.sub("", name).strip()


def parse_code(raw: Any, where: str) -> int:
    """An official district number from a number or a code with digits in it ("STGT03" -> 3)."""
    if isinstance(raw, bool):
        raise DistrictError(f"{where}: district number must be a number or a code with digits, got {raw!r}")
    if isinstance(raw, int):
        return raw
    m = re.search(r"\d+", str(raw)) if raw is not None else None
    if m is None:
        raise DistrictError(f"{where}: district number must be a number or a code with digits, got {raw!r}")
    return int(m.group())


class District(BaseModel):
    """One real district of the pack's ``districts`` layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9-]+:_:district:[0-9]+$")
    name: str = Field(min_length=1)
    code: int = Field(ge=0)
    population: int | None = Field(default=None, ge=0)
    population_year: int | None = None
    source: str = Field(min_length=1)
    licence: str = Field(min_length=1)
    population_source: str = ""
    synthetic: bool = False
    geometry: dict[str, Any]

    def polygon(self) -> BaseGeometry:
        return shape(self.geometry)


def _field(props: dict[str, Any], wanted: str | None, candidates: tuple[str, ...], what: str, where: str) -> Any:
    if wanted is not None:
        if wanted not in props:
            raise DistrictError(f"{where}: no property {wanted!r} (the {what}); it has {', '.join(sorted(props)) or 'none'}")
        return props[wanted]
    for c in candidates:
        if c in props:
            return props[c]
    raise DistrictError(f"{where}: no {what} property (looked for {', '.join(candidates)}); name it with --{what}-field")


def _checked_geometry(geom: Any, where: str) -> BaseGeometry:
    if not isinstance(geom, dict) or geom.get("type") not in ("Polygon", "MultiPolygon"):
        got = geom.get("type") if isinstance(geom, dict) else type(geom).__name__
        raise DistrictError(f"{where}: geometry must be a Polygon or MultiPolygon, got {got}")
    try:
        g = shape(geom)
    except (ValueError, TypeError, IndexError) as exc:
        raise DistrictError(f"{where}: geometry cannot be read ({exc})") from None
    if g.is_empty:
        raise DistrictError(f"{where}: geometry is empty")
    if not g.is_valid:
        raise DistrictError(f"{where}: polygon is not valid ({explain_validity(g)}); repair it, e.g. with "
                            "'ogr2ogr -makevalid' or shapely.make_valid")
    lon0, lat0, lon1, lat1 = g.bounds
    if not (-180 <= lon0 <= lon1 <= 180 and -90 <= lat0 <= lat1 <= 90):
        raise DistrictError(f"{where}: coordinates {g.bounds} are not WGS84 degrees; reproject to EPSG:4326 first")
    return g


def read_source_districts(path: Path, name_field: str | None = None, code_field: str | None = None
                          ) -> list[tuple[str, int, BaseGeometry]]:
    """(name, official number, geometry) of every feature of a municipality's district GeoJSON in WGS84 degrees."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DistrictError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DistrictError(f"{path}: not valid GeoJSON ({exc})") from None
    crs = str(((data.get("crs") or {}).get("properties") or {}).get("name", "CRS84"))
    if not crs.endswith(("CRS84", "4326")):
        raise DistrictError(f"{path}: CRS {crs} is not WGS84; reproject to EPSG:4326 first (ogr2ogr -t_srs EPSG:4326)")
    out: list[tuple[str, int, BaseGeometry]] = []
    seen: dict[int, str] = {}
    for i, feature in enumerate(data.get("features") or []):
        props = feature.get("properties") or {}
        where = f"{Path(path).name} feature #{i}"
        name = clean_name(str(_field(props, name_field, NAME_FIELDS, "name", where)))
        where = f"{Path(path).name} feature #{i} ({name})"
        code = parse_code(_field(props, code_field, CODE_FIELDS, "code", where), where)
        if code in seen:
            raise DistrictError(f"{where}: district number {code} is also {seen[code]!r}")
        seen[code] = name
        out.append((name, code, _checked_geometry(feature.get("geometry"), where)))
    if not out:
        raise DistrictError(f"{path}: no district features")
    return out


def read_population(path: Path, columns: tuple[str, str, str] = ("stadtteil", "jahr", "ew_ins")
                    ) -> dict[str, tuple[str, int, int]]:
    """name_key -> (name as written, newest year, residents) from a table with a row per district and year."""
    name_col, year_col, value_col = columns
    out: dict[str, tuple[str, int, int]] = {}
    with Path(path).open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DistrictError(f"{path}: no column(s) {', '.join(missing)}; it has {', '.join(reader.fieldnames or [])}")
        for lineno, row in enumerate(reader, start=2):
            try:
                year, value = int(row[year_col]), int(float(row[value_col]))
            except (TypeError, ValueError):
                raise DistrictError(f"{path} line {lineno}: year {row[year_col]!r} and residents {row[value_col]!r} "
                                    "must be numbers") from None
            key = name_key(row[name_col])
            if key not in out or year > out[key][1]:
                out[key] = (row[name_col], year, value)
    return out


def build_districts(region_id: str, source: list[tuple[str, int, BaseGeometry]], source_text: str, licence: str,
                    population: dict[str, tuple[str, int, int]] | None = None, population_source: str = "",
                    population_file: str = "") -> list[District]:
    """The pack's districts: every polygon with its population of the newest year, matched by :func:`name_key`.
    A district the population table does not name is an error (a silent gap would skew every per-capita figure)."""
    out = []
    for name, code, geom in sorted(source, key=lambda t: t[1]):
        pop = year = None
        if population is not None:
            hit = population.get(name_key(name))
            if hit is None:
                near = difflib.get_close_matches(name, [v[0] for v in population.values()], n=3)
                raise DistrictError(f"{population_file or 'population table'}: no row for district {code} {name!r} "
                                    f"(key {name_key(name)!r}); closest names there: {', '.join(near) or 'none'}")
            _, year, pop = hit
        out.append(District(id=f"{region_id}:_:district:{code}", name=name, code=code, population=pop,
                            population_year=year, source=source_text, licence=licence,
                            population_source=population_source if pop is not None else "",
                            geometry=_rounded(geom)))
    return out


def _rounded(geom: BaseGeometry) -> dict[str, Any]:
    """Coordinates to 7 decimals (about 1 cm), unless that makes the polygon invalid (near-touching rings): then as given."""
    raw = json.dumps(geom.__geo_interface__)
    rounded = dict(json.loads(raw, parse_float=lambda s: round(float(s), 7)))
    return rounded if shape(rounded).is_valid else dict(json.loads(raw))


def write_districts(path: Path, districts: list[District]) -> None:
    feats = [{"type": "Feature", "geometry": d.geometry, "properties": d.model_dump(exclude={"geometry"})} for d in districts]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False,
                               separators=(",", ":")) + "\n", encoding="utf-8")


def load_districts(path: Path, region_id: str) -> dict[int, District]:
    """The pack's ``districts`` layer, validated: valid polygons, unique numbers, ids in the region."""
    data = read_layer(path, "districts", DistrictError)
    out: dict[int, District] = {}
    for i, feature in enumerate(data.get("features") or []):
        props = dict(feature.get("properties") or {})
        where = f"{path.name} feature #{i} ({props.get('name', '?')})"
        _checked_geometry(feature.get("geometry"), where)
        try:
            d = District.model_validate({**props, "geometry": feature.get("geometry")})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise DistrictError(f"{where}: {problems}") from None
        if not d.id.startswith(f"{region_id}:"):
            raise DistrictError(f"{where}: id {d.id!r} is not in region {region_id!r}")
        if d.code in out:
            raise DistrictError(f"{where}: district number {d.code} appears twice")
        out[d.code] = d
    return out


def union_polygon(districts: list[District], what: str) -> Polygon:
    """The outline of several neighbouring districts as one polygon (shared edges agree in the official data)."""
    from shapely.ops import unary_union

    merged = make_valid(unary_union([d.polygon() for d in districts]))
    if isinstance(merged, MultiPolygon):
        parts = sorted(merged.geoms, key=lambda g: g.area, reverse=True)
        if parts[1].area > 0.01 * parts[0].area:
            raise DistrictError(f"{what}: districts {', '.join(str(d.code) for d in districts)} do not form one area; "
                                "make a quarter of neighbouring districts")
        merged = parts[0]
    if not isinstance(merged, Polygon):
        raise DistrictError(f"{what}: districts {', '.join(str(d.code) for d in districts)} make a {merged.geom_type}")
    return Polygon(merged.exterior)
