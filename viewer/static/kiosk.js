// Info-Cube kiosk: public figures only (aggregates, public alerts), cycles through the quarters and the coast,
// and reconnects on its own after a lost connection.
"use strict";
const params = new URLSearchParams(location.search);
const INTERVAL_MS = Number(params.get("interval") || 12000);
const kiosk = window.kiosk = { slides: 0, shown: [], online: false, summary: null };
let index = 0;

function fmt(v, unit) { return v === undefined || v === null ? "-" : `${v}${unit}`; }
function slides(s) {
  const out = s.neighbourhoods.map((n) => ({ key: n.id, html:
    `<h1>${n.name}</h1>
     <div class="figure">Parking occupied: <b>${fmt(n.parking_occupancy_pct, " %")}</b></div>
     <div class="figure">Vehicles, last 15 minutes: <b>${fmt(n.traffic_vehicles_15min, "")}</b></div>
     <div class="figure">NO2, hourly mean: <b>${fmt(n.air_no2_ugm3_hourly_mean, " µg/m³")}</b></div>` }));
  const c = s.coast;
  out.push({ key: "coast", html:
    `<h1>Kiel Fjord coast</h1>
     <div class="figure">Water level: <b>${c.water_level_m === null ? "-" : (c.water_level_m >= 0 ? "+" : "") + c.water_level_m.toFixed(2) + " m"}</b></div>
     <div class="figure">Storm surge: <b>${c.surge_class ? c.surge_class.replaceAll("_", " ") : "none"}</b></div>
     ${s.alerts.map((a) => `<div class="alert">${a.message}</div>`).join("")}` });
  return out;
}
function show() {
  if (!kiosk.summary) return;
  const all = slides(kiosk.summary);
  const slide = all[index % all.length];
  document.getElementById("slide").innerHTML = slide.html;
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
