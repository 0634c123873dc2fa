"""Geometry helpers: GMT shoreline files, land/water polygons and metric projections (pure, no I/O beyond reading)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import polygonize, transform, unary_union

WGS84 = "EPSG:4326"
UTM32 = "EPSG:25832"  # ETRS89 / UTM zone 32N, the CRS of Schleswig-Holstein's open geodata


@lru_cache(maxsize=8)
def transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def to_metric(geom: BaseGeometry) -> BaseGeometry:
    return transform(transformer(WGS84, UTM32).transform, geom)


def to_wgs84(geom: BaseGeometry, src: str = UTM32) -> BaseGeometry:
    return transform(transformer(src, WGS84).transform, geom)


def read_gmt_segments(path: Path) -> list[LineString]:
    """Read a GMT multi-segment text file (``>`` opens a segment, then ``lon lat`` lines)."""
    segments: list[LineString] = []
    current: list[tuple[float, float]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith(">"):
            if len(current) > 1:
                segments.append(LineString(current))
            current = []
            continue
        parts = text.split()
        try:
            current.append((float(parts[0]), float(parts[1])))
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{lineno}: expected 'lon lat', got {text!r}") from None
    if len(current) > 1:
        segments.append(LineString(current))
    if not segments:
        raise ValueError(f"{path}: no shoreline segments found")
    return segments


def water_polygon(segments: Iterable[LineString], bbox: tuple[float, float, float, float], sea_point: tuple[float, float]) -> Polygon:
    """The water body that contains *sea_point*, from open shoreline segments clipped at *bbox*."""
    frame = box(*bbox)
    faces = list(polygonize(unary_union([*segments, frame.boundary])))
    sea = Point(sea_point)
    for face in faces:
        if face.contains(sea):
            return face
    raise ValueError(f"no face of the shoreline contains the sea point {sea_point}")


def land_polygon(segments: Iterable[LineString], bbox: tuple[float, float, float, float], sea_point: tuple[float, float]) -> BaseGeometry:
    return box(*bbox).difference(water_polygon(list(segments), bbox, sea_point))


def read_layer(path: Path, layer: str, error: type[Exception]) -> dict[str, Any]:
    """A pack layer's GeoJSON file as JSON; *error* naming the file when it is missing or not JSON."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: layer {layer!r} is listed in region.json but the file is missing") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid GeoJSON ({exc})") from None
    return data
