// Info-Cube kiosk: public figures only (aggregates, public alerts), cycles through the quarters and the coast,
// and reconnects on its own after a lost connection. Every text goes in as text (textContent), never as HTML.
"use strict";
const params = new URLSearchParams(location.search);
const INTERVAL_MS = Number(params.get("interval") || 12000);
const kiosk = window.kiosk = { slides: 0, shown: [], online: false, summary: null };
let index = 0;

function fmt(v, unit) { return v === undefined || v === null ? "-" : `${v}${unit}`; }
function node(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}
function figure(label, value) {
  const d = node("div", "figure", `${label}: `);
  d.appendChild(node("b", null, value));
  return d;
}
function slides(s) {
  const out = s.neighbourhoods.map((n) => ({ key: n.id, nodes: [
    node("h1", null, n.name),
    figure("Parking occupied", fmt(n.parking_occupancy_pct, " %")),
    figure("Vehicles, last 15 minutes", fmt(n.traffic_vehicles_15min, "")),
    figure("NO2, hourly mean", fmt(n.air_no2_ugm3_hourly_mean, " µg/m³")),
  ] }));
  const c = s.coast;
  out.push({ key: "coast", nodes: [
    node("h1", null, "Kiel Fjord coast"),
    figure("Water level", c.water_level_m === null ? "-" : (c.water_level_m >= 0 ? "+" : "") + c.water_level_m.toFixed(2) + " m"),
    figure("Storm surge", c.surge_class ? c.surge_class.replaceAll("_", " ") : "none"),
    ...s.alerts.map((a) => node("div", "alert", a.text)),
  ] });
  return out;
}
function show() {
  if (!kiosk.summary) return;
  const all = slides(kiosk.summary);
  const slide = all[index % all.length];
  document.getElementById("slide").replaceChildren(...slide.nodes);
  kiosk.shown.push(slide.key);
  kiosk.slides = all.length;
  index += 1;
}
async function refresh() {
  try {
    const r = await fetch("/public/summary", { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    kiosk.summary = await r.json();
    document.getElementById("notice").textContent =
      `${kiosk.summary.region} - public figures, aggregates only. SYNTHETIC data: ${kiosk.summary.synthetic_layers.join(", ")}.`;
    kiosk.online = true;
    document.getElementById("conn").textContent = "live";
  } catch (err) {
    kiosk.online = false;
    document.getElementById("conn").textContent = "connection lost, reconnecting ...";
  }
}
refresh().then(show);
setInterval(refresh, Number(params.get("refresh") || 5000));
setInterval(show, INTERVAL_MS);
