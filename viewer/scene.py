"""A static 3D scene of a region pack built from Python with cesiumpy (0.3.3), for reports and quick looks.

cesiumpy writes HTML that loads CesiumJS from a dead CDN and asks Cesium ion for imagery; both are rewritten here to the
locally served CesiumJS with no imagery, so the page works offline. The live viewer (``viewer/static``) is plain JS.
"""

from __future__ import annotations

import html
from typing import Any

import cesiumpy

from twin.region import RegionPack

CDN = "https://cesiumjs.org/Cesium/Build/Cesium/"
FREEBOARD_COLOURS = ((0.0, cesiumpy.color.RED), (0.5, cesiumpy.color.ORANGE), (1.0, cesiumpy.color.YELLOW))


def _freeboard_colour(state: dict[str, Any] | None) -> Any:
    if not state:
        return cesiumpy.color.GRAY
    for limit, colour in FREEBOARD_COLOURS:
        if state["freeboard_m"] < limit:
            return colour
    return cesiumpy.color.GREEN


def build_scene(pack: RegionPack, coast_states: dict[str, dict[str, Any]] | None = None, cesium_base: str = "/cesium/") -> str:
    """An HTML page: buildings extruded to their heights, coast segments coloured by freeboard, sensors as points."""
    coast_states = coast_states or {}
    v = cesiumpy.Viewer(divid="scene", animation=False, timeline=False, baseLayerPicker=False, geocoder=False,
                        homeButton=False, sceneModePicker=False, navigationHelpButton=False, fullscreenButton=False,
                        infoBox=False, selectionIndicator=False)
    for b in pack.buildings.values():
        flat = [c for xy in b.footprint[:-1] for c in xy]
        v.entities.add(cesiumpy.Polygon(hierarchy=flat, height=b.ground_m, extrudedHeight=b.ground_m + b.height_m,
                                        material=cesiumpy.color.WHITESMOKE, name=b.name))
    for c in pack.coast.values():
        v.entities.add(cesiumpy.Polyline(positions=[x for xy in c.line for x in xy], width=5,
                                         material=_freeboard_colour(coast_states.get(c.id)), name=c.name))
    for s in pack.sensors.values():
        v.entities.add(cesiumpy.Point(position=[s.lon, s.lat, 20.0], pixelSize=7, color=cesiumpy.color.BLUE, name=s.name))
    body = v.to_html()
    body = body.replace(CDN, cesium_base)
    body = body.replace('new Cesium.Viewer("scene", {', 'new Cesium.Viewer("scene", {baseLayer : false, ')
    synthetic = ", ".join(pack.synthetic_layers()) or "none"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>{html.escape(pack.manifest.name)} - scene</title>
<style>html, body {{ margin: 0; height: 100%; font-family: sans-serif; }} #scene {{ height: 100%; }}
#notice {{ position: absolute; top: 8px; left: 8px; z-index: 5; background: #8c4600; color: #fff; padding: 6px 10px; }}</style>
<script>window.CESIUM_BASE_URL = "{cesium_base}";</script>
</head><body>
<div id="notice">{html.escape(pack.manifest.name)}: static scene built with cesiumpy. SYNTHETIC layers: {html.escape(synthetic)}.</div>
<script>window.addEventListener("load", function () {{ window.sceneReady = true; }});</script>
<script src="{cesium_base}Cesium.js"></script>
<script>Cesium.Ion.defaultAccessToken = "";</script>
{body.split(chr(10), 2)[2]}
</body></html>
"""
