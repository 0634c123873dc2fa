// Plietsch Twin viewer: CesiumJS, offline (no ion, no remote imagery), live via server-sent events.
"use strict";
const state = window.plietsch = { ready: false, viewerRef: null, buildings: 0, sensors: {}, coast: {}, alerts: {}, lastSeq: 0, errors: [] };
Cesium.Ion.defaultAccessToken = "";
const viewer = new Cesium.Viewer("cesium", {
  baseLayer: false, baseLayerPicker: false, geocoder: false, homeButton: false, sceneModePicker: false,
  navigationHelpButton: false, animation: false, timeline: false, fullscreenButton: false, infoBox: true,
  selectionIndicator: true, terrainProvider: new Cesium.EllipsoidTerrainProvider(),
  contextOptions: { webgl: { preserveDrawingBuffer: true } },
  // Draw a frame only when something changed (camera moves are seen by Cesium itself; every change of what is drawn
  // asks for a frame: redraw()), not 60 times a second: software WebGL on a small machine spends its cores on frames.
  requestRenderMode: true, maximumRenderTimeChange: Infinity,
});
state.viewerRef = viewer;
state.frames = 0;  // frames rendered (request-render mode: none while nothing changes)
const redraw = () => viewer.scene.requestRender();
// Cesium turns entity changes into geometry in its batches over several ticks (web workers), and in request-render
// mode a batch only advances while frames are rendered: while any data source is not ready, ask for the next frame.
let ticks = 0;
let sourcesReady = true;
viewer.clock.onTick.addEventListener(() => {  // after the widget's own tick handler (which updates the data sources)
  ticks += 1;
  sourcesReady = viewer.clockViewModel.canAnimate && (!water || water.primitive.ready);
  if (!sourcesReady) redraw();
});
viewer.scene.postRender.addEventListener(() => { state.frames += 1; });
// Calls back once a frame has been rendered after every change made before the call, with every data source ready
// (the geometry of changed entities built and shown), and that frame is on the screen (the next animation frame).
function whenDrawn(callback) {
  const after = ticks;
  redraw();
  const remove = viewer.scene.postRender.addEventListener(() => {
    if (ticks <= after || !sourcesReady) return;
    remove();
    requestAnimationFrame(callback);
  });
}
// No imagery or terrain tiles: the globe is hidden and land and sea are drawn from the real shoreline, so that the
// water surface can stand at the live level without fighting the globe for depth.
viewer.scene.globe.show = false;
viewer.scene.skyBox.show = false;
viewer.scene.sun.show = false;
viewer.scene.moon.show = false;
viewer.scene.backgroundColor = Cesium.Color.fromCssColorString("#dfe8ee");
viewer.scene.skyAtmosphere.show = false;
viewer.scene.fog.enabled = false;
const FREEBOARD = (s) => !s ? "#95a5a6" : s.overtopped ? "#e74c3c" : s.freeboard_m < 0.5 ? "#e67e22" : s.freeboard_m < 1.0 ? "#f1c40f" : "#2ecc71";
const SENSOR_COLOURS = { water_level: "#3498db", traffic_count: "#9b59b6", parking: "#1abc9c", air_quality: "#e84393",
                         weather: "#fdcb6e", bike_share: "#00cec9" };
const buildingEntities = [];
const coastEntities = {};
const sensorEntities = {};
// The sea: one primitive built once at height 0 and lifted to the level by its model matrix (a translation along the
// region's up direction; over the region's ~40 km the ellipsoid normal turns by < 0.4 degrees: < 1.5 cm sideways at
// 2 m). A new height of an entity polygon rebuilt the whole sea polygon on a web worker: tens of seconds of software
// WebGL per new level on a loaded 2-core machine, while the old level stayed on screen.
let water = null;  // { primitive, up, entity }
let waterLevel = 0;
let live = true;

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status} ${await r.text()}`);
  return r.json();
}
async function all(url) {
  let out = [], offset = 0;
  for (;;) {
    const page = await getJSON(`${url}&limit=1000&offset=${offset}`);
    out = out.concat(page.features);
    offset += page.features.length;
    if (offset >= page.total || page.features.length === 0) return out;
  }
}
function ring(coords) { return Cesium.Cartesian3.fromDegreesArray(coords.flat()); }

// Colours that change (coast segments, buildings) are callback properties that Cesium reads on every tick: a new
// colour becomes a new per-instance attribute of the entity's batch. (Replacing an entity's material property instead
// rebuilds the geometry of every entity in its batch, thousands of extruded buildings, on every change.) The alpha
// stays the same (0.95) so that no entity moves between Cesium's opaque and translucent batches. Buildings are
// recoloured at most every 2 s under the live stream.
const ALPHA = 0.95;
function liveColour(holder, css) {
  holder.css = css;
  holder.colour = Cesium.Color.fromCssColorString(css).withAlpha(ALPHA);
  return new Cesium.ColorMaterialProperty(new Cesium.CallbackProperty(() => holder.colour, false));
}
let colourPending = false;
function scheduleColour() {
  if (colourPending) return;
  colourPending = true;
  setTimeout(() => { colourPending = false; colourBuildings(); }, 2000);
}
function setMaterial(holder, css) {
  if (holder.css === css) return;
  holder.css = css;
  holder.colour = Cesium.Color.fromCssColorString(css).withAlpha(ALPHA);
  redraw();
}
function colourBuildings() {
  const threatened = Object.values(coastEntities).map((c) => ({ pos: c.mid, s: state.coast[c.id] }))
    .filter((c) => c.s && (c.s.overtopped || c.s.low_freeboard || c.s.surge_class));
  for (const b of buildingEntities) {
    let colour = "#f4f1ea";
    for (const c of threatened) {
      const d = Math.hypot((b.lon - c.pos[0]) * 65000, (b.lat - c.pos[1]) * 111000);
      if (d < 250) { colour = c.s.overtopped ? "#e74c3c" : c.s.low_freeboard ? "#e67e22" : "#f9e79f"; break; }
    }
    setMaterial(b, colour);
  }
}
state.showBuildings = (show) => { for (const b of buildingEntities) b.entity.show = show; viewer.scene.requestRender(); };
function setWater(level) {
  waterLevel = level;
  if (level === state.shownLevel || !water) return;
  state.shownLevel = level;
  water.primitive.modelMatrix = Cesium.Matrix4.fromTranslation(Cesium.Cartesian3.multiplyByScalar(water.up, level, new Cesium.Cartesian3()));
  redraw();
}
function applyCoast(id, s) {
  if (s) state.coast[id] = s; else delete state.coast[id];
  const e = coastEntities[id];
  if (e) setMaterial(e, FREEBOARD(s));
}
const NO_READING = "#95a5a6";  // a sensor without a reading (yet) at the time shown
function applySensor(id, s) {
  if (s) state.sensors[id] = s; else delete state.sensors[id];
  const e = sensorEntities[id];
  if (!e) return;
  // a new label text re-renders its glyphs: set it (and the size) only when it changed
  const text = s ? `${e.name}\n${Object.entries(s.values).map(([k, v]) => `${k}: ${v}`).join("\n")}` : e.name;
  if (e.text !== text) { e.text = text; e.label.text = text; redraw(); }
  const size = s ? 11 : 8;
  if (e.size !== size) { e.size = size; e.point.pixelSize = size; redraw(); }
  const css = s ? e.kindColour : NO_READING;
  if (e.css !== css) { e.css = css; e.point.color = Cesium.Color.fromCssColorString(css); redraw(); }
  if (s && s.sensor_kind === "water_level" && id.includes(":gauge-holtenau")) setWater(s.values.level_m);
}
function renderAlerts() {
  const list = document.getElementById("alert-list");
  const items = Object.values(state.alerts);
  list.replaceChildren();  // alert texts go in as text only (textContent), never as HTML
  if (!items.length) { const none = document.createElement("li"); none.textContent = "none"; list.appendChild(none); }
  for (const a of items) {
    const li = document.createElement("li");
    li.className = `sev-${a.severity}`;
    li.dataset.id = a.alert_id;
    li.textContent = `${a.severity.toUpperCase()}: ${a.message}`;
    list.appendChild(li);
  }
}
function applyDelta(d) {
  state.lastSeq = Math.max(state.lastSeq, d.seq);
  if (!live) return;
  if (d.kind === "entity" && d.entity_type === "sensor") applySensor(d.entity_id, d.data.state);
  else if (d.kind === "entity" && d.entity_type === "coast") { applyCoast(d.entity_id, d.data.state); scheduleColour(); }
  else if (d.kind === "entity" && d.entity_type === "vehicle") window.PlietschBuses.apply(d.entity_id, d.data);  // buses.js
  else if (d.kind === "alert") { state.alerts[d.data.alert_id] = d.data; renderAlerts(); }
  else if (d.kind === "alert_cleared") { delete state.alerts[d.data.alert_id]; renderAlerts(); }
}

let eventSource = null;
function connect() {
  const status = document.getElementById("status");
  const es = eventSource = new EventSource("/stream");
  const onDelta = (ev) => applyDelta(JSON.parse(ev.data));
  ["snapshot", "entity", "alert", "alert_cleared"].forEach((k) => es.addEventListener(k, onDelta));
  es.addEventListener("snapshot_end", () => { colourBuildings(); status.textContent = "live"; state.live = true; });
  es.addEventListener("resync", () => { state.alerts = {}; });
  // the server cut this stream off because it fell behind; EventSource reconnects by itself with Last-Event-ID
  es.addEventListener("resume", () => { status.textContent = "catching up ..."; });
  es.onerror = () => { status.textContent = "connection lost, reconnecting ..."; state.live = false; };
}

// What the time slider (timeslider.js) needs of the scene.
window.PlietschView = {
  viewer, state, sensorEntities, coastEntities, applySensor, applyCoast, renderAlerts, colourBuildings, getJSON, whenDrawn,
  setLive(on) { live = on; window.PlietschBuses.show(on); },
  // leave live: stop following the stream; back to live: forget what time travel drew, then a fresh snapshot
  pauseStream() { if (eventSource) { eventSource.close(); eventSource = null; } state.live = false; },
  resumeStream() {
    for (const id of Object.keys(sensorEntities)) applySensor(id, null);
    for (const id of Object.keys(coastEntities)) applyCoast(id, null);
    window.PlietschBuses.reset();
    state.alerts = {};
    renderAlerts();
    live = true;
    connect();
  },
};

// Scenario mode (?scenario=<id>): the slider steps through the surge; the water rises and affected assets are listed.
const scenarioWater = [];
async function showScenarioStep(sid, summary, step) {
  const fc = await getJSON(`/scenarios/${encodeURIComponent(sid)}/flooded?step=${step}`);
  redraw();
  for (const e of scenarioWater) viewer.entities.remove(e);
  scenarioWater.length = 0;
  const f = fc.features[0];
  const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.type === "MultiPolygon" ? f.geometry.coordinates : [];
  for (const p of polys.filter((q) => q.length > 0)) {
    scenarioWater.push(viewer.entities.add({ name: `Flooded at ${f.properties.level_m} m`, polygon: {
      hierarchy: new Cesium.PolygonHierarchy(ring(p[0]), p.slice(1).map((h) => new Cesium.PolygonHierarchy(ring(h)))),
      height: f.properties.level_m, material: Cesium.Color.fromCssColorString("#1b6ec2").withAlpha(0.8) } }));
  }
  setWater(f.properties.level_m);
  state.scenarioStep = step;
  state.scenarioCells = f.properties.cells;
  document.getElementById("scenario-step").textContent =
    `step ${step + 1}/${summary.steps}: ${f.properties.time}, water ${f.properties.level_m.toFixed(2)} m above mean, ${(f.properties.cells * f.properties.cell_m ** 2 / 1e6).toFixed(2)} km² flooded`;
  document.getElementById("time-label").textContent = `scenario step ${step + 1}`;
}
async function scenarioMode(sid) {
  live = false;
  const summary = await getJSON(`/scenarios/${encodeURIComponent(sid)}/summary`);
  const assets = await getJSON(`/scenarios/${encodeURIComponent(sid)}/assets`);
  const panel = document.getElementById("scenario");
  panel.hidden = false;
  document.getElementById("scenario-title").textContent =
    `Scenario ${summary.name || sid}: peak ${summary.peak_level_m} m, ${summary.affected.building} buildings, ${summary.roads_cut.length} roads cut` +
    (summary.synthetic_inputs.length ? ` (SYNTHETIC inputs: ${summary.synthetic_inputs.join(", ")})` : "");
  const list = document.getElementById("scenario-assets");
  for (const a of assets.features.slice(0, 25)) {
    const li = document.createElement("li");
    li.textContent = `${a.properties.kind} ${a.id.split(":").pop()}: ${a.properties.max_depth_m} m from ${a.properties.first_wet.slice(11, 16)}`;
    list.appendChild(li);
  }
  state.scenarioAssets = assets.features.length;
  const slider = document.getElementById("slider");
  slider.max = summary.steps - 1;
  slider.value = 0;
  slider.addEventListener("change", (ev) => showScenarioStep(sid, summary, Number(ev.target.value)));
  document.getElementById("live").disabled = false;
  await showScenarioStep(sid, summary, 0);
}

// Login: the planner view needs a planner or operator; the session is an HttpOnly cookie the page never sees.
async function whoami() {
  const r = await fetch("/auth/me", { cache: "no-store" });
  return r.ok ? r.json() : { role: "public", name: null };
}
function loginForm() {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("status").textContent = "Anmeldung nötig";
  document.getElementById("login-name").focus();
  return new Promise((resolve) => {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const error = document.getElementById("login-error");
      error.textContent = "";
      const body = { name: document.getElementById("login-name").value, password: document.getElementById("login-password").value };
      try {
        const r = await fetch("/auth/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        if (!r.ok) { error.textContent = r.status === 401 ? "Name oder Passwort falsch." : `Anmeldung fehlgeschlagen (HTTP ${r.status}).`; return; }
        form.hidden = true;
        document.getElementById("login-password").value = "";
        resolve(await r.json());
      } catch (err) { error.textContent = `Keine Verbindung zum Server (${err.message}).`; }
    });
  });
}
async function ensureLogin() {
  let me = await whoami();
  if (me.role === "public") me = await loginForm();
  state.user = me;
  document.getElementById("user-name").textContent = `${me.name} (${me.role})`;
  document.getElementById("user").hidden = false;
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/auth/logout", { method: "POST" });
    location.reload();
  });
}

async function drawDistricts(regionId) {
  // the official districts as outlines on the ground, labelled with name, number and residents (real data); the
  // ground is the flat land polygon at -0.5 m (no globe, no terrain), so the outlines lie just above it: lines clamped
  // to the ground were classification volumes that found no globe to drape on, drew nothing here, and cost most of
  // each frame in software WebGL
  const fc = await getJSON(`/regions/${regionId}/districts`);
  const onLand = (coords) => Cesium.Cartesian3.fromDegreesArrayHeights(coords.flatMap((c) => [c[0], c[1], 0.5]));
  for (const f of fc.features) {
    const p = f.properties;
    const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
    polys.forEach((poly, i) => viewer.entities.add({ id: `${f.id}#${i}`, name: `${p.name} (district ${p.code})`,
      polyline: { positions: onLand(poly[0]), width: 2,
                  material: Cesium.Color.fromCssColorString("#5b2c6f").withAlpha(0.8) } }));
    const c = polys[0][0].reduce((a, q) => [a[0] + q[0], a[1] + q[1]], [0, 0]).map((v) => v / polys[0][0].length);
    viewer.entities.add({ id: `${f.id}#label`, position: Cesium.Cartesian3.fromDegrees(c[0], c[1], 60),
      label: { text: `${p.name}${p.population != null ? `\n${p.population.toLocaleString("de-DE")} Einw. (${p.population_year})` : ""}`,
               font: "13px sans-serif", fillColor: Cesium.Color.fromCssColorString("#3b1d48"), outlineColor: Cesium.Color.WHITE,
               outlineWidth: 3, style: Cesium.LabelStyle.FILL_AND_OUTLINE,
               distanceDisplayCondition: new Cesium.DistanceDisplayCondition(0, 20000) } });
  }
  state.districts = fc.features.length;
}

async function main() {
  try {
    await ensureLogin();
    const [region] = await getJSON("/regions");
    const layers = region.synthetic_layers;
    document.getElementById("synthetic").textContent =
      `${region.name}. SYNTHETIC layers (made up, not real data): ${layers.join(", ")}. The shoreline is real (GSHHG).`;
    const real = (region.real_layers || []).map((k) => `${k}: ${region.layers[k].source} (${region.layers[k].licence})`);
    if (real.length) {  // real data, with its source and licence on screen (attribution)
      const credit = document.createElement("div");
      credit.id = "real-layers";
      credit.style.fontWeight = "normal";
      credit.textContent = `Real data: ${real.join("; ")}`;
      document.getElementById("synthetic").appendChild(credit);
    }
    if (region.districts) await drawDistricts(region.id);
    const [minLon, minLat, maxLon, maxLat] = region.bbox;
    const sea = [];
    const seaEntity = new Cesium.Entity({ name: "Water surface (live level)" });  // what a click on the sea selects
    for (const f of (await getJSON(`/regions/${region.id}/surface`)).features) {
      const hierarchy = new Cesium.PolygonHierarchy(ring(f.geometry.coordinates[0]), (f.geometry.coordinates.slice(1)).map((h) => new Cesium.PolygonHierarchy(ring(h))));
      if (f.properties.kind === "water") {
        sea.push(new Cesium.GeometryInstance({ id: seaEntity,
          geometry: new Cesium.PolygonGeometry({ polygonHierarchy: hierarchy, height: 0, vertexFormat: Cesium.PerInstanceColorAppearance.VERTEX_FORMAT }),
          attributes: { color: Cesium.ColorGeometryInstanceAttribute.fromColor(Cesium.Color.fromCssColorString("#2f7fc1")) } }));
      } else {
        viewer.entities.add({ name: "Land", polygon: { hierarchy, height: -0.5, material: Cesium.Color.fromCssColorString("#c9c7b8") } });
      }
    }
    if (sea.length) {
      const up = Cesium.Ellipsoid.WGS84.geodeticSurfaceNormal(Cesium.Cartesian3.fromDegrees((minLon + maxLon) / 2, (minLat + maxLat) / 2));
      water = { up, entity: seaEntity, primitive: viewer.scene.primitives.add(new Cesium.Primitive({ geometryInstances: sea,
        appearance: new Cesium.PerInstanceColorAppearance({ translucent: false }), modelMatrix: Cesium.Matrix4.IDENTITY.clone() })) };
      setWater(waterLevel);
    }
    for (const f of await all("/entities?type=building")) {
      const p = f.properties;
      const c = f.geometry.coordinates[0][0];
      const holder = { lon: c[0], lat: c[1] };
      holder.entity = viewer.entities.add({ id: f.id, name: `${p.name}${p.synthetic ? " (synthetic)" : ""}`, polygon: {
        hierarchy: new Cesium.PolygonHierarchy(ring(f.geometry.coordinates[0])), height: p.ground_m,
        extrudedHeight: p.ground_m + p.height_m, material: liveColour(holder, "#f4f1ea") } });
      buildingEntities.push(holder);
    }
    state.buildings = buildingEntities.length;
    for (const f of await all("/entities?type=road")) {
      viewer.entities.add({ id: f.id, name: f.properties.name, polyline: { positions: ring(f.geometry.coordinates),
        width: f.properties.lanes > 1 ? 4 : 2, material: Cesium.Color.fromCssColorString("#7f8c8d"), clampToGround: false } });
    }
    for (const f of (await getJSON("/coast")).features) {
      const co = f.geometry.coordinates;
      const holder = coastEntities[f.id] = { id: f.id, mid: co[Math.floor(co.length / 2)] };
      holder.entity = viewer.entities.add({ id: f.id, name: `${f.properties.name} (${f.properties.coast_type}, crest ${f.properties.crest_m} m)`,
        polyline: { positions: Cesium.Cartesian3.fromDegreesArrayHeights(co.flatMap((c) => [c[0], c[1], f.properties.crest_m])),
                    width: 6, material: liveColour(holder, FREEBOARD(null)) } });
      if (f.properties.reported) applyCoast(f.id, f.properties.reported);
    }
    for (const f of await all("/entities?type=sensor")) {
      const p = f.properties;
      const entity = viewer.entities.add({ id: f.id, name: p.name, position: Cesium.Cartesian3.fromDegrees(...f.geometry.coordinates, 25),
        point: { pixelSize: 8, color: Cesium.Color.fromCssColorString(SENSOR_COLOURS[p.sensor_kind] || "#fff"),
                 outlineColor: Cesium.Color.BLACK, outlineWidth: 1 },
        label: { text: p.name, font: "12px sans-serif", show: false, pixelOffset: new Cesium.Cartesian2(0, -20) } });
      const kindColour = SENSOR_COLOURS[p.sensor_kind] || "#fff";
      sensorEntities[f.id] = { entity, name: p.name, label: entity.label, point: entity.point, kindColour, css: kindColour };
    }
    const view = new URLSearchParams(location.search).get("view") || "gaarden";
    const spots = { gaarden: [10.1445, 54.2985, 1400], friedrichsort: [10.1800, 54.3800, 1500], fjord: [10.16, 54.27, 9000] };
    let [lon, lat, height] = spots[view] || spots.gaarden;
    if (!(lon >= minLon && lon <= maxLon && lat >= minLat && lat <= maxLat) && buildingEntities.length) {
      // a pack of another region: look at the middle of its buildings (region packs are data, not code)
      lon = buildingEntities.reduce((a, b) => a + b.lon, 0) / buildingEntities.length;
      lat = buildingEntities.reduce((a, b) => a + b.lat, 0) / buildingEntities.length - 0.012;
      height = 2500;
    }
    viewer.camera.setView({ destination: Cesium.Cartesian3.fromDegrees(lon, lat, height),
                            orientation: { heading: 0, pitch: Cesium.Math.toRadians(view === "fjord" ? -50 : -40), roll: 0 } });
    const scenarioId = new URLSearchParams(location.search).get("scenario");
    if (scenarioId) {
      const trafficId = new URLSearchParams(location.search).get("traffic");  // a traffic run over a surge: both shown
      const kind = (await getJSON(`/scenarios/${encodeURIComponent(scenarioId)}/summary`)).kind;
      if (kind === "traffic") {
        live = false;
        await window.PlietschTraffic.show(viewer, scenarioId);  // traffic.js
      } else {
        await scenarioMode(scenarioId);
        if (trafficId) await window.PlietschTraffic.show(viewer, trafficId);
      }
      state.ready = true;
      state.live = true;
      document.getElementById("status").textContent = "scenario (a fork: the live twin is untouched)";
      document.getElementById("live").addEventListener("click", () => { location.href = "/"; });
      return;
    }
    window.PlietschBuses.attach(viewer);
    state.history = await getJSON("/history/range");
    window.PlietschSlider.init(state.history);  // the time slider (timeslider.js)
    connect();
    state.ready = true;
  } catch (err) {
    state.errors.push(String(err));
    document.getElementById("status").textContent = `error: ${err}`;
    throw err;
  }
}
main();
