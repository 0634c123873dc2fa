"""``plietsch region new | synth | info``: a region pack from a municipality's open data, by data alone.

Example (see README, "A region pack for another municipality")::

    plietsch region new --out packs/<town> --id <town> --name "<Town>" \
        --districts <town>_districts.geojson --districts-source "<publisher>" --districts-licence CC0-1.0 \
        --shoreline gshhg_<fjord>.txt --bbox <gmt -R box> --sea-point <lon>,<lat> \
        --quarter "<Quarter>=1,2,3:quay_wall:1.8" --gauge "<Gauge>=<lat>,<lon>" \
        --surge "<town>-2023-10-20=2023-10-20T19:33:00+00:00,2.27"
    plietsch region synth --out packs/<town>
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

STATION_SOURCES = {"water_level": "WSV / PEGELONLINE (station positions)",
                   "air_quality": "Umweltbundesamt / LLUR Schleswig-Holstein air-quality network (station positions)"}
_STATION = re.compile(r"^(?:(?P<slug>[a-z0-9][a-z0-9-]*):)?(?P<name>[^#=]+?)(?:#(?P<code>[^=]+))?=(?P<lat>[-0-9.]+),(?P<lon>[-0-9.]+)$")


def slugify(text: str) -> str:
    text = text.replace("ß", "ss")
    for a, b in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("Ä", "Ae"), ("Ö", "Oe"), ("Ü", "Ue")):
        text = text.replace(a, b)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63] or "x"


def _pair(text: str, what: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{what} {text!r}: give two numbers separated by a comma") from None
    return a, b


def parse_station(text: str, kind: str, prefix: str) -> dict[str, object]:
    """``[slug:]Name[#code]=lat,lon`` -> a Station's fields."""
    m = _STATION.match(text.strip())
    if m is None:
        raise ValueError(f"station {text!r}: expected '[slug:]Name[#code]=lat,lon', e.g. 'Kiel-Holtenau#9610066=54.37208,10.15704'")
    lat, lon = _pair(f"{m['lat']},{m['lon']}", "position")
    code = (m["code"] or "").strip()
    slug = m["slug"] or slugify(code or m["name"])
    return {"slug": f"{prefix}-{slug}", "name": m["name"].strip(), "code": code, "sensor_kind": kind,
            "lat": lat, "lon": lon, "source": STATION_SOURCES.get(kind, "")}


def parse_quarter(text: str) -> dict[str, object]:
    """``Name=code,code[:coast_kind[:crest_m]]`` -> a Quarter's fields."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"quarter {text!r}: expected 'Name=12,13[:quay_wall[:2.1]]' (district numbers)")
    parts = rest.split(":")
    try:
        codes = [int(c) for c in parts[0].split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"quarter {text!r}: district numbers must be integers, got {parts[0]!r}") from None
    out: dict[str, object] = {"slug": slugify(name), "name": name.strip(), "districts": codes}
    if len(parts) > 1 and parts[1]:
        out["coast_kind"] = parts[1]
    if len(parts) > 2 and parts[2]:
        out["crest_m"] = float(parts[2])
    return out


def parse_surge(text: str, source: str, note: str) -> tuple[str, dict[str, object]]:
    """``name=peak_at,peak_m[,duration_h]`` -> (preset name, SurgePreset fields)."""
    name, sep, rest = text.partition("=")
    parts = rest.split(",")
    if not sep or len(parts) not in (2, 3):
        raise ValueError(f"surge {text!r}: expected 'name=2023-10-20T19:33:00+00:00,2.27[,14]'")
    peak_at = datetime.fromisoformat(parts[0].replace("Z", "+00:00"))
    if peak_at.tzinfo is None:
        raise ValueError(f"surge {text!r}: the peak time needs a UTC offset, e.g. +00:00")
    out: dict[str, object] = {"peak_at": peak_at, "peak_m": float(parts[1]), "source": source, "note": note}
    if len(parts) == 3:
        out["duration_h"] = float(parts[2])
    return slugify(name), out


def register(region_app: typer.Typer, console: Console, fail: Callable[[str], typer.Exit]) -> None:
    @region_app.command("new")
    def region_new(
        out: Annotated[Path, typer.Option(help="pack folder to write")],
        region_id: Annotated[str, typer.Option("--id", help="region id (lower-case slug), the first part of every entity id")],
        name: Annotated[str, typer.Option(help="display name")],
        districts: Annotated[Path, typer.Option(help="the municipality's districts as GeoJSON polygons in WGS84")],
        districts_source: Annotated[str, typer.Option(help="who publishes the districts (attribution)")],
        districts_licence: Annotated[str, typer.Option(help="their licence, e.g. CC-BY-4.0")],
        shoreline: Annotated[Path, typer.Option(help="GSHHG shoreline as GMT multi-segment text (gmt coast -Df -W -M)")],
        sea_point: Annotated[str, typer.Option(help="lon,lat of a point in open water")],
        quarter: Annotated[list[str], typer.Option(help="twin quarter 'Name=12,13[:quay_wall[:2.1]]' (district "
                                                        "numbers; coast kind and synthetic crest height); repeat")],
        gauge: Annotated[list[str] | None, typer.Option(help="water-level gauge '[slug:]Name[#number]=lat,lon'; repeat")] = None,
        air_quality: Annotated[list[str] | None, typer.Option(help="air-quality station '[slug:]Name[#code]=lat,lon'; repeat")] = None,
        surge: Annotated[list[str] | None, typer.Option(help="surge preset 'name=peak_at,peak_m[,duration_h]' (metres above "
                                                              "mean water level at the gauge); repeat")] = None,
        surge_source: Annotated[str, typer.Option(help="where the surge figures are published")] = "",
        surge_note: Annotated[str, typer.Option(help="what the preset assumes")] = "",
        population: Annotated[Path | None, typer.Option(help="CSV of residents per district and year")] = None,
        population_columns: Annotated[str, typer.Option(help="its name, year and residents columns")] = "stadtteil,jahr,ew_ins",
        population_source: Annotated[str, typer.Option(help="attribution of the population table")] = "",
        population_licence: Annotated[str, typer.Option(help="its licence")] = "",
        name_field: Annotated[str | None, typer.Option(help="district name property (default: looked up)")] = None,
        code_field: Annotated[str | None, typer.Option(help="district number property (default: looked up)")] = None,
        bbox: Annotated[str | None, typer.Option(help="lon0,lat0,lon1,lat1: the box the shoreline was cut to "
                                                      "(gmt coast -R); default: the shoreline's extent")] = None,
        mean_water_level_note: Annotated[str, typer.Option(help="what the heights are relative to")] = "",
        shoreline_note: Annotated[str, typer.Option(help="how the shoreline was extracted (attribution)")] = "",
        source_file: Annotated[list[Path] | None, typer.Option(help="another source file to keep in the pack's "
                                                                     "sources/ folder; repeat")] = None,
        attribution: Annotated[str, typer.Option(help="a further line for ATTRIBUTION.md")] = "",
    ) -> None:
        """Start a region pack from a municipality's open data (real layers only); then 'plietsch region synth'."""
        from twin.districts import DistrictError
        from twin.region import Quarter, RegionPackError, Station, SurgePreset
        from twin.synth import new_pack

        try:
            cols = tuple(c.strip() for c in population_columns.split(","))
            if len(cols) != 3:
                raise ValueError(f"--population-columns {population_columns!r}: give three column names")
            stations = [Station(**parse_station(g, "water_level", "gauge")) for g in gauge or []]  # type: ignore[arg-type]
            stations += [Station(**parse_station(a, "air_quality", "aq")) for a in air_quality or []]  # type: ignore[arg-type]
            presets = dict(parse_surge(s, surge_source, surge_note) for s in surge or [])
            box = tuple(float(v) for v in bbox.split(",")) if bbox else None
            if box is not None and len(box) != 4:
                raise ValueError(f"--bbox {bbox!r}: give lon0,lat0,lon1,lat1")
            new_pack(out, region_id=region_id, name=name, districts=districts, shoreline=shoreline,
                     sea_point=_pair(sea_point, "--sea-point"),
                     quarters=[Quarter(**parse_quarter(q)) for q in quarter],  # type: ignore[arg-type]
                     stations=stations, surge_presets={k: SurgePreset(**v) for k, v in presets.items()},  # type: ignore[arg-type]
                     districts_source=districts_source, districts_licence=districts_licence, population=population,
                     population_columns=cols, population_source=population_source,  # type: ignore[arg-type]
                     population_licence=population_licence, name_field=name_field, code_field=code_field,
                     bbox=box, shoreline_note=shoreline_note, mean_water_level_note=mean_water_level_note,  # type: ignore[arg-type]
                     extra_sources=source_file or [], attribution=attribution)
        except (ValueError, ValidationError, DistrictError, RegionPackError, OSError) as exc:
            raise fail(str(exc)) from exc
        console.print(f"wrote {out}: real layers and what to synthesise; now run 'plietsch region synth --out {out}'")

    @region_app.command("synth")
    def region_synth(
        out: Annotated[Path, typer.Option(help="pack folder (made by 'region new'); its region.json says what to make")]
        = Path("twin/regions/kiel"),
        seed: Annotated[int | None, typer.Option(help="random seed (default: the pack's)")] = None,
        sensors_per_kind: Annotated[int | None, typer.Option(help="synthetic sensors per kind and quarter")] = None,
    ) -> None:
        """(Re)generate a pack's SYNTHETIC layers inside its real districts, on land."""
        from twin.districts import DistrictError
        from twin.region import RegionPackError, load_pack
        from twin.synth import synthesise

        try:
            synthesise(out, seed=seed, sensors_per_kind=sensors_per_kind)
            pack = load_pack(out)
        except (ValueError, ValidationError, DistrictError, RegionPackError, OSError) as exc:
            raise fail(str(exc)) from exc
        console.print(f"wrote {out}: {len(pack.districts)} districts, {len(pack.neighbourhoods)} quarters, "
                      f"{len(pack.buildings)} buildings, {len(pack.roads)} roads, {len(pack.sensors)} sensors, "
                      f"{len(pack.coast)} coast segments")

    @region_app.command("info")
    def region_info(path: Annotated[Path, typer.Argument(help="region pack folder")] = Path("twin/regions/kiel")) -> None:
        """Summarise a region pack and its provenance."""
        from twin.region import RegionPackError, load_pack

        try:
            pack = load_pack(path)
        except RegionPackError as exc:
            raise fail(str(exc)) from exc
        print(f"{pack.manifest.name} ({pack.id}): {len(pack.districts)} districts, {len(pack.neighbourhoods)} "
              f"neighbourhoods, {len(pack.buildings)} buildings, {len(pack.roads)} roads, {len(pack.sensors)} sensors, "
              f"{len(pack.coast)} coast segments")
        for layer, info in pack.manifest.layers.items():
            print(f"  {layer}: {'SYNTHETIC' if info.synthetic else 'real'}; {info.source}; licence {info.licence}")
        if pack.manifest.terrain is not None:
            t = pack.manifest.terrain
            print(f"  terrain: {'SYNTHETIC' if t.synthetic else 'real'}; {t.source}; licence {t.licence}")
        stations = [s for s in pack.sensors.values() if not s.synthetic]
        for s in stations:
            print(f"  station {s.id}: {s.name} ({s.sensor_kind}) at {s.lat:.5f} N {s.lon:.5f} E")
        for name, p in pack.manifest.surge_presets.items():
            print(f"  surge preset {name}: {p.peak_m:.2f} m above mean water level at {p.peak_at.isoformat()}"
                  f"{'; ' + p.source if p.source else ''}")
