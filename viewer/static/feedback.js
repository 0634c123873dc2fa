// The public's feedback in the planner's viewer (issue 12 item 4): approved feedback as pins, with filters (kind,
// category, neighbourhood, scenario: ?scenario=<id> shows the feedback on that scenario), export as GeoJSON or CSV;
// for operators also the moderation queue (approve or reject with a reason). All text goes in as text.
"use strict";
(function () {
  const state = window.plietsch;
  const KINDS = { "": "alle Arten", idea: "Ideen", problem: "Probleme", rating: "Bewertungen" };
  const CATEGORIES = { "": "alle Themen", traffic: "Verkehr", parking: "Parken", environment: "Umwelt und Grün", coast: "Küste und Wasser",
    public_space: "Plätze und Wege", planning: "Planung", other: "Sonstiges" };
  const COLOURS = { idea: "#ffd23a", problem: "#ff8a65", rating: "#9be28f" };
  const fb = state.feedback = { pins: [], queue: [], loaded: false, error: null };
  let entities = [];

  function node(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function select(id, label, options) {
    const l = node("label", { for: id }, label);
    const s = node("select", { id });
    for (const [v, t] of Object.entries(options)) { const o = node("option", { value: v }, t); s.appendChild(o); }
    return [l, s];
  }

  const panel = node("details", { id: "feedback", class: "panel", lang: "de" });
  Object.assign(panel.style, { right: "8px", top: "47%", width: "310px", maxHeight: "40%", overflow: "auto" });
  const summary = node("summary", { id: "feedback-summary" }, "Rückmeldungen der Öffentlichkeit");
  const [kl, kind] = select("feedback-kind", "Art", KINDS);
  const [cl, category] = select("feedback-category", "Thema", CATEGORIES);
  const [nl, hood] = select("feedback-hood", "Quartier", { "": "alle Quartiere" });
  const sl = node("label", { for: "feedback-scenario" }, "Szenario (id)");
  const scenario = node("input", { id: "feedback-scenario", autocomplete: "off" });
  scenario.value = new URLSearchParams(location.search).get("scenario") || "";
  const count = node("p", { id: "feedback-count", role: "status" });
  const geo = node("a", { id: "feedback-geojson", download: "" }, "GeoJSON");
  const csv = node("a", { id: "feedback-csv", download: "" }, "CSV");
  const exports = node("p", {}, "Export: ");
  exports.append(geo, " · ", csv);
  const queueBox = node("section", { id: "feedback-queue", "aria-labelledby": "feedback-queue-title", hidden: "" });
  queueBox.appendChild(node("h3", { id: "feedback-queue-title" }, "Zu prüfen"));
  const queueList = node("ol", { id: "feedback-queue-list" });
  queueBox.appendChild(queueList);
  const grid = node("div");
  Object.assign(grid.style, { display: "grid", gridTemplateColumns: "auto 1fr", gap: "4px 8px", alignItems: "center" });
  grid.append(kl, kind, cl, category, nl, hood, sl, scenario);
  panel.append(summary, grid, count, exports, queueBox);
  document.body.appendChild(panel);
  for (const a of panel.querySelectorAll("a")) a.style.color = "#7fd1ff";

  function query() {
    const q = new URLSearchParams();
    if (kind.value) q.set("kind", kind.value);
    if (category.value) q.set("category", category.value);
    if (hood.value) q.set("neighbourhood", hood.value);
    if (scenario.value.trim()) q.set("scenario_id", scenario.value.trim());
    return q;
  }
  async function load() {
    const q = query();
    geo.href = `/feedback?${q}&format=geojson`;
    csv.href = `/feedback?${q}&format=csv`;
    try {
      const r = await fetch(`/feedback?${q}`, { cache: "no-store" });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const layer = await r.json();
      fb.pins = layer.features;
      fb.error = null;
      draw();
      count.textContent = `${fb.pins.length} angenommene Rückmeldungen` +
        (fb.pins.some((f) => f.geometry === null) ? `, ${fb.pins.filter((f) => f.geometry === null).length} ohne Ort` : "");
    } catch (err) {
      fb.error = String(err);
      count.textContent = `Rückmeldungen nicht geladen (${err.message}); neuer Versuch in 30 s.`;
    }
    if (state.user && state.user.role === "operator") await loadQueue();
    fb.loaded = true;
  }
  function draw() {
    const viewer = state.viewerRef;
    for (const e of entities) viewer.entities.remove(e);
    entities = fb.pins.filter((f) => f.geometry !== null).map((f) => viewer.entities.add({
      id: `feedback:${f.properties.code}`,
      name: `${KINDS[f.properties.kind] || f.properties.kind}: ${f.properties.text || "(Bewertung)"}`,
      position: Cesium.Cartesian3.fromDegrees(f.geometry.coordinates[0], f.geometry.coordinates[1], 30),
      point: { pixelSize: 14, color: Cesium.Color.fromCssColorString(COLOURS[f.properties.kind] || "#ffffff"),
               outlineColor: Cesium.Color.BLACK, outlineWidth: 2, disableDepthTestDistance: Number.POSITIVE_INFINITY },
    }));
    viewer.scene.requestRender();  // the viewer renders on request only
  }
  async function loadQueue() {
    const r = await fetch("/feedback/queue?status=pending", { cache: "no-store" });
    if (!r.ok) return;
    fb.queue = (await r.json()).items;
    queueBox.hidden = false;
    queueList.replaceChildren(...fb.queue.map((item) => {
      const li = node("li", { "data-code": item.code });
      li.appendChild(node("div", {}, `${item.code} · ${KINDS[item.kind] || item.kind} · ${CATEGORIES[item.category] || item.category}` +
        (item.rating ? ` · ${item.rating}/5` : "")));
      li.appendChild(node("q", {}, item.text));
      const rl = node("label", { for: `reason-${item.code}` }, "Grund");
      const reason = node("input", { id: `reason-${item.code}`, maxlength: "500" });
      const ok = node("button", { type: "button", class: "approve" }, "Freigeben");
      const no = node("button", { type: "button", class: "reject" }, "Ablehnen");
      const msg = node("span", { role: "status" });
      const decide = async (decision) => {
        const body = { decision, reason: reason.value.trim() || (decision === "approved" ? "freigegeben" : "abgelehnt") };
        const res = await fetch(`/feedback/${encodeURIComponent(item.code)}/moderation`, {
          method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        const answer = await res.json();
        msg.textContent = res.ok ? (decision === "approved" ? "freigegeben" : "abgelehnt") : `nicht möglich: ${answer.detail}`;
        if (res.ok) await load();
      };
      ok.addEventListener("click", () => decide("approved"));
      no.addEventListener("click", () => decide("rejected"));
      li.append(rl, reason, ok, no, msg);
      return li;
    }));
    if (!fb.queue.length) queueList.replaceChildren(node("li", {}, "nichts zu prüfen"));
    summary.textContent = `Rückmeldungen der Öffentlichkeit (${fb.queue.length} zu prüfen)`;
  }
  async function hoods() {
    try {
      const r = await fetch("/regions", { cache: "no-store" });
      if (!r.ok) return;
      for (const n of (await r.json())[0].neighbourhoods) hood.appendChild(node("option", { value: n.id.split(":")[1] }, n.name));
    } catch (err) { /* the filter keeps "all" */ }
  }
  for (const e of [kind, category, hood]) e.addEventListener("change", load);
  scenario.addEventListener("change", load);

  const start = setInterval(async () => {  // once the viewer is up and someone is logged in
    if (!state.viewerRef || !state.user) return;
    clearInterval(start);
    await hoods();
    await load();
    setInterval(load, 30000);
  }, 300);
  fb.reload = load;
})();
