// Info-Cube kiosk (issue 12): public figures only (aggregates, public alerts, published feedback), German by default,
// English and Danish one touch away. It cycles by itself, starts again after 60 s without input (clearing anything
// typed), reconnects on its own, and takes feedback with a pin on the map. ?phone=1: the same form for a phone.
// Every text goes in as text (textContent), never as HTML.
"use strict";
const params = new URLSearchParams(location.search);
const INTERVAL_MS = Number(params.get("interval") || 12000);
const REFRESH_MS = Number(params.get("refresh") || 5000);
const IDLE_MS = Number(params.get("idle") || 60000);
const PHONE = params.get("phone") === "1";
// ?stops=kiel-hbf,gaarden-vinetaplatz: the bus stops (GTFS stop_id) whose departure board this screen shows
const STOPS = (params.get("stops") || "").split(",").map((s) => s.trim()).filter(Boolean);
const STRINGS = window.KIOSK_STRINGS;
const START_LANG = STRINGS[params.get("lang")] ? params.get("lang") : "de";
const CATEGORIES = ["traffic", "parking", "environment", "coast", "public_space", "planning", "other"];
const kiosk = window.kiosk = {
  slides: 0, shown: [], online: false, summary: null, data: null, pins: [], counts: null, lang: START_LANG,
  resets: 0, formOpen: false, pin: null, receipt: null, boards: {},
};
const draw = window.kioskDraw;
let index = 0;
let lastInput = Date.now();
let refreshes = 0;

function t(key) { return STRINGS[kiosk.lang][key] ?? STRINGS.de[key] ?? key; }
function $(id) { return document.getElementById(id); }
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
function fmt(v, unit) { return v === undefined || v === null ? "–" : v === "<5" ? t("few") : `${v}${unit}`; }
function surgeName(c) { return t(c ? `surge_${c}` : "surge_none"); }
function alertText(a) {
  const what = STRINGS[kiosk.lang][`alert_${a.category}`] ? t(`alert_${a.category}`) : t("alert_other");
  return `${what} (${t(`sev_${a.severity}`)})` + (a.where ? `: ${a.where}` : "");
}

// -- the slides ----------------------------------------------------------------------------------------------------
function mapSlide() {
  const nodes = [node("h1", null, t("map_title"))];
  if (kiosk.data) {
    const box = node("div", "mapbox");
    box.appendChild(draw.map(kiosk.data, kiosk.pins, `${t("map_title")}. ${t("map_hint")}: ${kiosk.pins.length}`));
    nodes.push(box, node("p", "hint", t("map_hint")));
  }
  return { key: "map", nodes };
}
function hoodSlide(n) {
  const slug = n.id.split(":")[1];
  const curves = (kiosk.data && kiosk.data.curves[slug])
    || { traffic_vehicles_15min: [], air_no2_ugm3_hourly: [], parking_occupancy_pct_hourly: [] };
  const charts = node("div", "charts");
  for (const [key, series, unit] of [["curve_traffic", curves.traffic_vehicles_15min, ""],
    ["curve_no2", curves.air_no2_ugm3_hourly, " µg/m³"], ["curve_parking", curves.parking_occupancy_pct_hourly, " %"]]) {
    const box = node("div", "chartbox");
    box.append(node("h2", "chart-title", t(key)), draw.chart(t(key), series, unit, t("no_data")));
    charts.appendChild(box);
  }
  return { key: n.id, nodes: [
    node("h1", null, n.name),
    figure(t("parking"), fmt(n.parking_occupancy_pct, " %")),
    figure(t("vehicles"), fmt(n.traffic_vehicles_15min, "")),
    figure(t("no2"), fmt(n.air_no2_ugm3_hourly_mean, " µg/m³")),
    charts,
  ] };
}
function coastSlide(s) {
  const c = s.coast;
  const level = c.water_level_m === null ? "–" : (c.water_level_m >= 0 ? "+" : "") + c.water_level_m.toFixed(2) + " m";
  const names = { none: t("surge_none") };
  for (const k of ["storm_surge", "medium_storm_surge", "severe_storm_surge", "very_severe_storm_surge"]) names[k] = t(`surge_${k}`);
  const row = node("div", "coast");
  const text = node("div", "coast-text");
  text.append(figure(t("water_level"), level), figure(t("surge"), surgeName(c.surge_class)));
  if (s.alerts.length) s.alerts.forEach((a) => text.appendChild(node("div", "alert", alertText(a))));
  else text.appendChild(node("div", "calm", t("alerts_none")));
  row.appendChild(text);
  if (kiosk.data) row.appendChild(draw.gauge(c.water_level_m, kiosk.data.surge_classes, names, `${t("water_level")}: ${level}, ${surgeName(c.surge_class)}`));
  return { key: "coast", nodes: [node("h1", null, t("coast_title")), row] };
}
function feedbackSlide() {
  const list = node("ul", "counts");
  const counts = kiosk.counts ? kiosk.counts.categories : {};
  for (const c of CATEGORIES) {
    const li = node("li", null, `${t(`cat_${c}`)}: `);
    li.appendChild(node("b", null, fmt(counts[c] ?? 0, "")));
    list.appendChild(li);
  }
  return { key: "feedback", nodes: [node("h1", null, t("feedback_title")), node("h2", null, t("feedback_counts")), list,
    node("p", "hint", t("qr"))] };
}
function clock(iso) {
  return new Date(iso).toLocaleTimeString(kiosk.lang, { timeZone: "Europe/Berlin", hour: "2-digit", minute: "2-digit" });
}
function delayText(d) {
  if (d.cancelled) return t("dep_cancelled");
  if (!d.realtime) return t("dep_timetable");
  const min = Math.round(d.delay_s / 60);
  return min === 0 ? t("dep_on_time") : `${min > 0 ? "+" : "−"}${Math.abs(min)} min`;
}
function boardSlide(b) {
  const table = node("table", "board");
  const head = node("tr");
  for (const k of ["dep_route", "dep_headsign", "dep_scheduled", "dep_expected"]) {
    const th = node("th", null, t(k));
    th.scope = "col";
    head.appendChild(th);
  }
  table.appendChild(node("thead")).appendChild(head);
  const body = table.appendChild(node("tbody"));
  for (const d of b.departures) {
    const tr = node("tr", d.cancelled ? "cancelled" : d.realtime && d.delay_s >= 120 ? "late" : null);
    tr.append(node("td", "route", d.route), node("td", null, d.headsign), node("td", null, clock(d.scheduled)),
      node("td", null, `${d.estimated && !d.cancelled ? clock(d.estimated) + " " : ""}(${delayText(d)})`));
    body.appendChild(tr);
  }
  const nodes = [node("h1", null, `${t("dep_title")}: ${b.name}`)];
  if (b.synthetic) nodes.push(node("p", "synthetic-note", t("dep_synthetic")));
  for (const a of b.alerts || []) {  // service alerts: the feed's header in German or English, as given
    const lang = a.header[kiosk.lang] ? kiosk.lang : a.header.en ? "en" : "de";  // Danish: the English, if given
    const lines = a.routes.length ? ` (${t("dep_lines")} ${a.routes.join(", ")})` : "";
    const p = node("p", "stop-alert", `${t("dep_alert")}${lines}: `);
    const text = p.appendChild(node("span", null, a.header[lang] || a.effect));
    if (a.header[lang]) text.lang = lang;
    nodes.push(p);
  }
  nodes.push(b.departures.length ? table : node("p", "calm", t("dep_none")));
  return { key: `stop:${b.stop_id}`, nodes };
}
function slides() {
  const s = kiosk.summary;
  const boards = STOPS.map((id) => kiosk.boards[id]).filter(Boolean).map(boardSlide);
  return [...s.neighbourhoods.map(hoodSlide), coastSlide(s), mapSlide(), ...boards, feedbackSlide()];
}
function render(step) {
  if (!kiosk.summary) return;
  const all = slides();
  if (kiosk.shown.length === 0) step = 0;  // the first slide first, also when the cycle's timer beats the first render
  index = ((index + step) % all.length + all.length) % all.length;
  const slide = all[index];
  $("slide").replaceChildren(...slide.nodes);
  kiosk.shown.push(slide.key);
  kiosk.slides = all.length;
}

// -- language ------------------------------------------------------------------------------------------------------
function applyLanguage(lang) {
  kiosk.lang = lang;
  document.documentElement.lang = lang;
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
  for (const e of document.querySelectorAll("[data-t-label]")) e.setAttribute("aria-label", t(e.dataset.tLabel));
  for (const b of document.querySelectorAll("button.lang")) {
    b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
    b.setAttribute("aria-label", `${b.textContent} ${STRINGS[b.dataset.lang].lang_name}`);
  }
  $("qr").alt = t("qr_alt");
  $("qr").src = `/public/qr.svg?lang=${lang}`;
  const cat = $("fb-category"), chosen = cat.value;
  cat.replaceChildren(...CATEGORIES.map((c) => { const o = node("option", null, t(`cat_${c}`)); o.value = c; return o; }));
  if (chosen) cat.value = chosen;
  buildStars();
  placeText();
  notice();
  $("conn").textContent = kiosk.online ? t("conn_live") : kiosk.summary ? t("conn_lost") : t("loading");
  if (kiosk.receipt) $("rc-status").textContent = `${kiosk.receipt.code}: ${t(`st_${kiosk.receipt.status}`)}`;
  render(0);
  if (kiosk.formOpen) drawFormMap();
}
function notice() {
  if (!kiosk.summary) return;
  const syn = kiosk.summary.synthetic_layers;
  const names = syn.map((l) => (STRINGS[kiosk.lang][`layer_${l}`] ? t(`layer_${l}`) : l));
  $("notice").textContent = `${kiosk.summary.region}. ${t("real")} ${syn.length ? `${t("synthetic")}: ${names.join(", ")}.` : ""}`;
}

// -- the feedback form ---------------------------------------------------------------------------------------------
function buildStars() {
  const box = $("fb-stars"), chosen = box.querySelector("input:checked");
  const legend = node("legend", null, t("stars"));
  const labels = [1, 2, 3, 4, 5].map((n) => {
    const l = node("label", "choice star");
    const i = document.createElement("input");
    Object.assign(i, { type: "radio", name: "rating", value: String(n) });
    if (chosen && chosen.value === String(n)) i.checked = true;
    l.append(i, node("span", null, `${n} ${n === 1 ? t("star") : t("stars")}`));
    return l;
  });
  box.replaceChildren(legend, ...labels);
}
function kind() { return document.querySelector("#fb-kinds input:checked").value; }
function placeText() {
  $("fb-place").textContent = kiosk.pin ? `${t("place_set")} (${kiosk.pin[1].toFixed(4)}, ${kiosk.pin[0].toFixed(4)})` : t("place_none");
  $("fb-place-clear").hidden = !kiosk.pin;
}
function drawFormMap() {
  if (!kiosk.data) return;
  const m = draw.map(kiosk.data, [], t("place"), kiosk.pin);
  m.id = "fb-map";
  m.setAttribute("tabindex", "0");
  m.addEventListener("click", (ev) => {
    const r = m.getBoundingClientRect(), p = m.projection;
    const scale = Math.min(r.width / p.width, r.height / p.height);  // preserveAspectRatio: meet, centred
    const x = (ev.clientX - r.left - (r.width - p.width * scale) / 2) / scale;
    const y = (ev.clientY - r.top - (r.height - p.height * scale) / 2) / scale;
    if (x < 0 || y < 0 || x > p.width || y > p.height) return;
    setPin(p.lonlat(x, y));
  });
  m.addEventListener("keydown", (ev) => {  // keyboard: arrows move the pin (from the middle of the map)
    const steps = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
    if (!steps[ev.key]) return;
    ev.preventDefault();
    const [w, s, e, n] = kiosk.data.view;
    const at = kiosk.pin || [(w + e) / 2, (s + n) / 2];
    setPin([Math.min(e, Math.max(w, at[0] + steps[ev.key][0] * (e - w) / 50)), Math.min(n, Math.max(s, at[1] + steps[ev.key][1] * (n - s) / 50))]);
    $("fb-map").focus();
  });
  $("fb-map-box").replaceChildren(m);
}
function setPin(lonlat) {
  kiosk.pin = lonlat;
  placeText();
  drawFormMap();
}
function showKinds() {
  const rating = kind() === "rating";
  $("fb-stars").hidden = !rating;
}
function openForm() {
  kiosk.formOpen = true;
  $("form").hidden = false;
  $("fb-form").hidden = false;
  $("fb-done").hidden = true;
  drawFormMap();
  $("fb-text").focus();
}
function clearForm() {
  $("fb-form").reset();
  $("rc-form").reset();
  $("rc-status").textContent = "";
  $("fb-error").textContent = "";
  $("fb-code").textContent = "";
  $("fb-removed").textContent = "";
  kiosk.pin = null;
  kiosk.receipt = null;
  showKinds();
  buildStars();
  placeText();
}
function closeForm() {
  if (PHONE) { clearForm(); openForm(); return; }
  kiosk.formOpen = false;
  $("form").hidden = true;
  clearForm();
  $("open-form").focus();
}
async function submit(ev) {
  ev.preventDefault();
  const rating = document.querySelector("#fb-stars input:checked");
  const body = { kind: kind(), category: $("fb-category").value, text: $("fb-text").value,
    channel: PHONE ? "online" : "kiosk", language: kiosk.lang };
  if (body.kind === "rating") body.rating = rating ? Number(rating.value) : null;
  if (kiosk.pin) { body.lon = kiosk.pin[0]; body.lat = kiosk.pin[1]; }
  $("fb-error").textContent = t("sending");
  try {
    const r = await fetch("/feedback", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const answer = await r.json();
    if (!r.ok) {
      const detail = typeof answer.detail === "string" ? answer.detail : `HTTP ${r.status}`;
      $("fb-error").textContent = `${t("error")} ${detail}`;
      return;
    }
    kiosk.lastCode = answer.code;
    $("fb-error").textContent = "";
    $("fb-form").hidden = true;
    $("fb-done").hidden = false;
    $("fb-code").textContent = answer.code;
    $("fb-removed").textContent = answer.removed ? t("removed") : "";
    $("fb-close").focus();
  } catch (err) {
    $("fb-error").textContent = `${t("error")} ${t("conn_lost")}`;
  }
}
async function lookUp(ev) {
  ev.preventDefault();
  const code = $("rc-code").value.trim();
  if (!code) return;
  try {
    const r = await fetch(`/feedback/receipt/${encodeURIComponent(code)}`, { cache: "no-store" });
    const answer = await r.json();
    if (!r.ok) { kiosk.receipt = null; $("rc-status").textContent = `${t("error")} ${answer.detail}`; return; }
    kiosk.receipt = answer;
    $("rc-status").textContent = `${answer.code}: ${t(`st_${answer.status}`)}` + (answer.reason ? ` (${answer.reason})` : "");
  } catch (err) {
    $("rc-status").textContent = `${t("error")} ${t("conn_lost")}`;
  }
}

// -- idle reset, refresh, cycling ----------------------------------------------------------------------------------
function reset() {
  kiosk.resets += 1;
  if (kiosk.formOpen && !PHONE) closeForm(); else clearForm();
  index = 0;
  applyLanguage(START_LANG);
}
function touched() { lastInput = Date.now(); }
async function getJson(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  return r.json();
}
async function refreshBoards() {  // a stop without a board (404: the GTFS source is not running) has no slide
  await Promise.all(STOPS.map(async (id) => {
    const r = await fetch(`/stops/${encodeURIComponent(id)}/departures?limit=8`, { cache: "no-store" });
    if (r.ok) kiosk.boards[id] = await r.json();
    else if (r.status === 404) delete kiosk.boards[id];
    else throw new Error(`HTTP ${r.status}`);
  }));
}
async function refresh() {
  try {
    kiosk.summary = await getJson("/public/summary");
    if (refreshes % 6 === 0 || !kiosk.data) {
      const [data, layer, counts] = await Promise.all([getJson("/public/kiosk"), getJson("/public/feedback"), getJson("/public/feedback/counts")]);
      const first = !kiosk.data;
      Object.assign(kiosk, { data, pins: layer.features, counts });
      if (first && kiosk.formOpen) drawFormMap();
    }
    await refreshBoards();
    refreshes += 1;
    const was = kiosk.online;
    kiosk.online = true;
    $("conn").textContent = t("conn_live");
    notice();
    if (!was && kiosk.shown.length === 0) render(0);
  } catch (err) {
    kiosk.online = false;
    $("conn").textContent = t("conn_lost");
  }
}

for (const b of document.querySelectorAll("button.lang")) b.addEventListener("click", () => applyLanguage(b.dataset.lang));
$("next").addEventListener("click", () => render(1));
$("prev").addEventListener("click", () => render(-1));
$("open-form").addEventListener("click", openForm);
$("fb-cancel").addEventListener("click", closeForm);
$("fb-close").addEventListener("click", closeForm);
$("fb-place-clear").addEventListener("click", () => setPin(null));
$("fb-form").addEventListener("submit", submit);
$("rc-form").addEventListener("submit", lookUp);
for (const i of document.querySelectorAll("#fb-kinds input")) i.addEventListener("change", showKinds);
for (const type of ["pointerdown", "keydown", "input", "wheel"]) document.addEventListener(type, touched, { capture: true, passive: true });
document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && kiosk.formOpen && !PHONE) closeForm(); });
window.addEventListener("online", refresh);
kiosk.refreshNow = () => { refreshes = 0; return refresh(); };
if (PHONE) document.body.classList.add("phone");

applyLanguage(START_LANG);
refresh().then(() => { render(0); if (PHONE) openForm(); });
setInterval(refresh, REFRESH_MS);
setInterval(() => { if (!kiosk.formOpen && !PHONE && Date.now() - lastInput >= Math.min(INTERVAL_MS, IDLE_MS)) render(1); }, INTERVAL_MS);
setInterval(() => {
  if (PHONE || Date.now() - lastInput < IDLE_MS) return;
  const dirty = kiosk.formOpen || kiosk.lang !== START_LANG || $("rc-code").value || $("fb-text").value;
  if (dirty) reset();
  lastInput = Date.now();
}, 1000);
