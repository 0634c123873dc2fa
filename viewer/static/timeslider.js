// Plietsch Twin viewer: the time slider. It scrubs a day (or the chosen range) of the archive in 5-minute steps, by
// drag and by keyboard, and draws the twin as it stood at T (GET /history/state): sensors, coast segments with their
// surge class, active alerts, municipal state and the aggregates' running windows. Requests are debounced; only the
// newest position is ever painted (a response that was overtaken is dropped). "Live" returns to the stream.
"use strict";
(() => {
  const STEP_MS = 5 * 60 * 1000;
  const DEBOUNCE_MS = 50;  // a held arrow key repeats every ~30 ms: one request per pause, not per repeat
  const ZONE = "Europe/Berlin";
  const de = new Intl.DateTimeFormat("de-DE", { timeZone: ZONE, weekday: "short", day: "2-digit", month: "2-digit",
    year: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short" });
  const deShort = new Intl.DateTimeFormat("de-DE", { timeZone: ZONE, day: "2-digit", month: "2-digit", hour: "2-digit",
    minute: "2-digit" });
  const dayOf = new Intl.DateTimeFormat("en-CA", { timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit" });
  const offsetOf = new Intl.DateTimeFormat("en-US", { timeZone: ZONE, timeZoneName: "longOffset" });
  const SURGE = { storm_surge: "Sturmflut", medium_storm_surge: "mittlere Sturmflut", severe_storm_surge: "schwere Sturmflut",
                  very_severe_storm_surge: "sehr schwere Sturmflut" };
  const METRIC = { traffic_vehicles: "Verkehr (Fahrzeuge je 15 min)", parking_occupancy: "Parken (belegt)",
                   air_no2_ugm3: "NO₂ (µg/m³, Stundenmittel)", air_pm10_ugm3: "PM10 (µg/m³, Stundenmittel)",
                   air_pm25_ugm3: "PM2,5 (µg/m³, Stundenmittel)",
                   parking_occupied_spaces: "Parken (belegte Plätze, Stundenmittel je Meldung)",
                   parking_capacity_spaces: "Parken (Plätze, Stundenmittel je Meldung)" };

  const el = (id) => document.getElementById(id);
  const V = () => window.PlietschView;
  // what the page shows, for tests and benchmarks: every painted position with its timings, overtaken responses
  const ts = window.plietschSlider = { range: null, position: null, at: null, paints: [], dropped: 0, requests: 0,
                                       loading: false, error: null, mode: "live" };
  let seq = 0;  // id of the newest position asked for
  let timer = null;
  let pending = null;

  const local = (ms) => de.format(new Date(ms));
  const short = (iso) => deShort.format(new Date(iso));
  function berlinOffsetMs(ms) {  // "GMT+02:00" -> 7200000
    const name = offsetOf.formatToParts(new Date(ms)).find((p) => p.type === "timeZoneName").value;
    const m = /GMT([+-])(\d\d):(\d\d)/.exec(name);
    return m ? (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) * 60000 : 0;
  }
  function berlinMidnight(isoDay) {  // "2026-10-20" -> the UTC instant of 00:00 in Kiel that day
    const [y, mo, d] = isoDay.split("-").map(Number);
    const guess = Date.UTC(y, mo - 1, d);
    let ms = guess - berlinOffsetMs(guess);
    ms = guess - berlinOffsetMs(ms);
    return ms;
  }

  function setRange(t0, t1) {
    const slider = el("slider");
    ts.range = { start: new Date(t0).toISOString(), end: new Date(t1).toISOString() };
    slider.min = 0;
    slider.max = Math.max(1, Math.ceil((t1 - t0) / STEP_MS));
    ts.t0 = t0;
    ts.t1 = t1;
  }
  const timeAt = (i) => Math.min(ts.t0 + i * STEP_MS, ts.t1);

  function showTime(ms) {
    const iso = new Date(ms).toISOString();
    el("time-label").textContent = local(ms);
    el("slider").setAttribute("aria-valuetext", local(ms));
    const utc = el("time-utc");
    utc.dateTime = iso;
    utc.textContent = `UTC ${iso.slice(0, 16).replace("T", " ")}`;
    utc.title = iso;
  }

  function onInput() {
    const i = Number(el("slider").value);
    const t = timeAt(i);
    showTime(t);
    const id = ++seq;
    pending = { id, i, t, inputAt: performance.now() };
    ts.loading = true;
    el("time-loading").textContent = "lädt …";
    el("time").setAttribute("aria-busy", "true");
    clearTimeout(timer);
    timer = setTimeout(() => request(pending), DEBOUNCE_MS);
  }

  function leaveLive() {
    if (ts.mode === "history") return;
    ts.mode = "history";
    V().setLive(false);
    V().pauseStream();
    el("live").disabled = false;
    el("at").hidden = false;
    el("status").textContent = "Zeitreise: Zustand aus dem Archiv";
  }

  async function request(p) {
    leaveLive();
    ts.requests += 1;
    const iso = new Date(p.t).toISOString();
    const sentAt = p.sentAt = performance.now();
    let snap = null, problem = null;
    try {
      // only the running window of each aggregate (what the panel draws), not every window of the horizon
      const r = await fetch(`/history/state?time=${encodeURIComponent(iso)}&aggregates=running`);
      if (r.ok) snap = await r.json();
      else {
        let detail = "";
        try { detail = (await r.json()).detail; } catch (_) { detail = ""; }
        problem = `Zeitreise nicht möglich: der Server lehnt ${local(p.t)} ab (HTTP ${r.status}${detail ? `: ${detail}` : ""}).`;
      }
    } catch (err) {
      problem = `Zeitreise nicht möglich: keine Verbindung zum Server (${err.message}). Bitte später erneut versuchen.`;
    }
    const apiMs = performance.now() - sentAt;
    if (p.id !== seq) { ts.dropped += 1; return; }  // a newer position was asked for meanwhile: never paint this one
    if (problem) {
      ts.error = problem;
      el("time-error").textContent = problem;
      done();
      return;
    }
    ts.error = null;
    el("time-error").textContent = "";
    const paintAt = performance.now();
    paint(snap);
    const paintMs = performance.now() - paintAt;
    ts.position = p.i;
    ts.at = snap.time;
    // the measure before request-render mode: two animation frames after the drawing (it did not wait for Cesium's
    // batches to show rebuilt geometry); kept beside the one below for comparison
    let twoFrames = null;
    requestAnimationFrame(() => requestAnimationFrame(() => { twoFrames = performance.now(); }));
    const framesBefore = V().state.frames;
    V().whenDrawn(() => {  // a frame with every change drawn and every batch ready is on the screen
      if (p.id !== seq) return;
      const now = performance.now();
      const two = twoFrames ?? now;
      // where the time went: debounce and waiting (sentAt - inputAt), the request (with the JSON), drawing, the frame
      ts.paints.push({ position: p.i, time: snap.time, input_to_paint_ms: now - p.inputAt, wait_ms: p.sentAt - p.inputAt,
                       request_ms: apiMs, paint_ms: paintMs, frame_ms: now - paintAt - paintMs,
                       two_frames_ms: two - p.inputAt, frames: V().state.frames - framesBefore,
                       events_applied: snap.events_applied });
      done();
    });
  }
  function done() {
    ts.loading = false;
    el("time-loading").textContent = "";
    el("time").removeAttribute("aria-busy");
  }

  function paint(snap) {
    const v = V();
    for (const id of Object.keys(v.sensorEntities)) v.applySensor(id, snap.sensors[id] || null);
    for (const id of Object.keys(v.coastEntities)) v.applyCoast(id, snap.coast[id] || null);
    v.state.alerts = {};
    for (const a of snap.active_alerts) v.state.alerts[a.alert_id] = a;
    v.renderAlerts();
    v.colourBuildings();
    const gauge = Object.values(snap.sensors).find((s) => s.sensor_kind === "water_level" && s.entity_id.includes(":gauge-holtenau"));
    el("at-water").textContent = gauge ? `Pegel Kiel-Holtenau: ${gauge.values.level_m.toFixed(2)} m über Mittelwasser (${short(gauge.observed_at)})`
      : "Pegel Kiel-Holtenau: noch kein Messwert";
    renderCoast(snap);
    renderMunicipal(snap);
    renderAggregates(snap);
    v.viewer.scene.requestRender();
  }

  function li(id, text, extra = {}) {
    const item = document.createElement("li");
    item.dataset.id = id;
    Object.assign(item.dataset, extra);
    item.textContent = text;
    return item;
  }
  function renderCoast(snap) {
    const list = el("at-coast");
    list.replaceChildren();
    const v = V();
    for (const id of Object.keys(v.coastEntities).sort()) {
      const s = snap.coast[id];
      const name = v.coastEntities[id].entity.name.split(" (")[0];
      const cls = s && s.surge_class ? s.surge_class : "none";
      const text = !s ? `${name}: kein Messwert` :
        `${name}: ${SURGE[cls] || "keine Sturmflut"}, Freibord ${s.freeboard_m.toFixed(2)} m${s.overtopped ? " (überströmt)" : ""}`;
      list.appendChild(li(id, text, { surgeClass: cls }));
    }
  }
  function municipalText(id, m, at) {
    const v = V();
    if (m.works) {
      const road = (v.viewer.entities.getById(id) || {}).name || id.split(":").pop();
      const parts = m.works.map((w) => {
        const state = Date.parse(w.starts_at) > at ? "angekündigt" : Date.parse(w.ends_at) <= at ? "beendet" : "aktiv";
        return `${state}: ${w.lanes_closed} Spur(en) gesperrt ${short(w.starts_at)}–${short(w.ends_at)}`;
      });
      return `Baustelle ${road}: ${parts.join("; ")}`;
    }
    if (m.category) return `Mangel (${m.category}): ${m.description}, gemeldet ${short(m.reported_at)}`;
    if (m.title) {
      const state = Date.parse(m.starts_at) > at ? "angekündigt" : Date.parse(m.ends_at) <= at ? "vorbei" : "läuft";
      return `Veranstaltung ${m.title} (${state}): ${short(m.starts_at)}–${short(m.ends_at)}, ${m.expected_visitors} Besucher erwartet`;
    }
    return `${id}: ${m.last_event_id}`;
  }
  function renderMunicipal(snap) {
    const list = el("at-municipal");
    list.replaceChildren();
    const at = Date.parse(snap.time);
    const ids = Object.keys(snap.municipal).sort();
    if (!ids.length) list.appendChild(li("", "nichts gemeldet"));
    for (const id of ids) list.appendChild(li(id, municipalText(id, snap.municipal[id], at)));
  }
  // the running window of every (metric, group): the newest window that starts at or before T ("current" for parking)
  function currentWindows(snap) {
    const at = Date.parse(snap.time);
    const best = {};
    for (const [key, a] of Object.entries(snap.aggregates)) {
      const g = `${a.metric}|${a.group}`;
      const start = a.window ? Date.parse(a.window) : Infinity;
      if (a.window && start > at) continue;
      if (!best[g] || start > best[g].start) best[g] = { key, a, start };
    }
    return Object.keys(best).sort().map((g) => best[g]);
  }
  ts.currentWindows = currentWindows;
  function renderAggregates(snap) {
    const body = el("at-aggregates").tBodies[0];
    body.replaceChildren();
    for (const { key, a } of currentWindows(snap)) {
      const tr = document.createElement("tr");
      tr.dataset.key = key;
      const value = a.window ? (a.metric === "traffic_vehicles" ? String(a.sum) : a.mean.toFixed(1))
        : `${a.occupied}/${a.capacity}`;
      for (const text of [METRIC[a.metric] || a.metric, a.group.split(":").pop(), a.window ? short(a.window) : "aktuell", value]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      tr.lastChild.dataset.value = value;
      body.appendChild(tr);
    }
  }

  function backToLive() {
    clearTimeout(timer);
    seq += 1;  // whatever is still on its way is dropped
    ts.mode = "live";
    ts.position = null;
    ts.at = null;
    done();
    el("time-error").textContent = "";
    el("at").hidden = true;
    el("live").disabled = true;
    const slider = el("slider");
    slider.value = slider.max;
    el("time-label").textContent = "live";
    el("slider").setAttribute("aria-valuetext", "live");
    el("time-utc").textContent = "";
    el("status").textContent = "verbinde …";
    V().resumeStream();
  }

  function init(history) {
    const slider = el("slider");
    const day = el("day");
    if (!history || !history.start) {
      slider.disabled = true;
      day.disabled = true;
      el("time-label").textContent = "noch keine Geschichte archiviert";
      return;
    }
    const start = Date.parse(history.start), end = Date.parse(history.end);
    const params = new URLSearchParams(location.search);
    const from = params.get("from") ? Date.parse(params.get("from")) : Math.max(start, end - 24 * 3600 * 1000);
    const to = params.get("to") ? Date.parse(params.get("to")) : end;
    if (!(from < to)) {
      el("time-error").textContent = `Ungültiger Zeitraum: from=${params.get("from")} to=${params.get("to")} (from muss vor to liegen).`;
      return;
    }
    setRange(from, to);
    slider.value = slider.max;
    day.min = dayOf.format(new Date(start));
    day.max = dayOf.format(new Date(end));
    day.value = dayOf.format(new Date(to));
    slider.addEventListener("input", onInput);
    slider.addEventListener("keydown", (ev) => {  // an hour per page key (the browser's own step would be 10 %)
      if (ev.key !== "PageUp" && ev.key !== "PageDown") return;
      ev.preventDefault();
      const hour = 3600 * 1000 / STEP_MS;
      slider.value = Math.max(0, Math.min(Number(slider.max), Number(slider.value) + (ev.key === "PageUp" ? hour : -hour)));
      onInput();
    });
    day.addEventListener("change", () => {
      if (!day.value) return;
      const t0 = berlinMidnight(day.value);
      const next = new Date(t0 + 36 * 3600 * 1000);
      setRange(t0, berlinMidnight(dayOf.format(next)));
      slider.value = 0;
      onInput();
    });
    el("live").addEventListener("click", backToLive);
    ts.ready = true;
  }

  window.PlietschSlider = { init, timeAt: (i) => timeAt(i), local };
})();
