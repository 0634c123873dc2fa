// Plietsch Twin viewer: traffic what-if scenarios. Colours every road link by its volume/capacity ratio, by the
// change of its volume against the baseline, or (with closures: the select-link analysis) by how much of the closed
// roads' baseline traffic it carries now, with a legend and the scenario's settings and key figures.
// Used by viewer.js for ?scenario=<traffic id>, and over a storm surge for ?scenario=<flood id>&traffic=<traffic id>.
"use strict";
(function () {
  const VC = [[0.5, "#2ecc71", "< 0.5"], [0.75, "#f1c40f", "0.5 - 0.75"], [0.9, "#e67e22", "0.75 - 0.9"],
              [1.0, "#e74c3c", "0.9 - 1.0"], [Infinity, "#8e0000", "> 1.0 (over capacity)"]];
  const DIFF = [[-50, "#2471a3", "< -50 veh/h"], [-5, "#85c1e9", "-50 to -5"], [5, "#95a5a6", "about the same"],
                [50, "#f5b041", "+5 to +50"], [Infinity, "#c0392b", "> +50 veh/h"]];
  // displaced_volume: the scenario's volume on a link of the trips that used a closed link in the baseline
  const REROUTED = [[0.5, "#d5d8dc", "none of it"], [10, "#d7bde2", "0.5 - 10 veh/h"], [50, "#af7ac5", "10 - 50"],
                    [150, "#7d3c98", "50 - 150"], [Infinity, "#4a235a", "> 150 veh/h"]];
  // each colouring: its button, the link property it shows, its scale and its legend's heading
  const MODES = {
    vc: { label: "v/c", value: (p) => p.vc, scale: VC, head: "Colour: volume / capacity" },
    diff: { label: "difference", value: (p) => p.volume_diff, scale: DIFF,
            head: "Colour: change of volume against the baseline" },
    rerouted: { label: "rerouted", value: (p) => p.displaced_volume, scale: REROUTED,
                head: "Colour: where the closed roads' traffic went (select link)" },
  };
  const CLOSED = ["#1c1c1c", "closed"];
  const t = { mode: "vc", links: 0, closed: 0, colours: {}, ready: false };  // window.plietsch.traffic once shown
  const entities = [];
  let scene = null;  // the viewer's scene: it renders on request only

  function colour(p, mode) {
    if (p.closed) return CLOSED[0];
    const { value: of, scale } = MODES[mode];
    const value = of(p);
    for (const [upper, css] of scale) if (value < upper) return css;
    return scale[scale.length - 1][1];
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function legend(box, mode) {
    box.replaceChildren();
    const { scale, head: text } = MODES[mode];
    const head = el("h3", text);
    Object.assign(head.style, { margin: "6px 0 4px", fontSize: "13px" });
    box.appendChild(head);
    for (const [, css, label] of [...scale, [0, CLOSED[0], CLOSED[1]]]) {
      const row = el("div");
      const sw = el("span", undefined, "swatch");
      sw.style.background = css;  // CSSOM, not an inline style attribute: allowed by the page's CSP
      row.append(sw, label);
      box.appendChild(row);
    }
  }

  function recolour(mode) {
    t.mode = mode;
    t.colours = {};
    for (const { entity, props } of entities) {
      const css = colour(props, mode);
      t.colours[css] = (t.colours[css] || 0) + 1;
      entity.polyline.material = Cesium.Color.fromCssColorString(css).withAlpha(0.95);
    }
    legend(document.getElementById("traffic-legend"), mode);
    if (scene) scene.requestRender();
  }

  function settings(summary) {
    const r = summary.request || {};
    const out = [];
    if ((r.closures || []).length) out.push(`${r.closures.length} closure(s)`);
    if (r.closures_from_flood) out.push(`roads cut by ${r.closures_from_flood.split(":").pop()} (${summary.flood_roads_closed.length})`);
    if ((r.lane_closures || []).length) out.push(`${r.lane_closures.length} lane closure(s)`);
    for (const d of r.extra_demand || []) out.push(`+${d.trips} trips to ${d.zone.split(":").pop()}${d.note ? ` (${d.note})` : ""}`);
    out.push(`gap ${r.gap}`);
    return out.join("; ");
  }

  async function show(viewer, sid) {
    scene = viewer.scene;
    window.plietsch.traffic = t;
    const get = async (url) => {
      const r = await fetch(url);
      if (!r.ok) throw new Error(`${url}: HTTP ${r.status} ${await r.text()}`);
      return r.json();
    };
    const base = `/scenarios/${encodeURIComponent(sid)}`;
    const [summary, fc] = await Promise.all([get(`${base}/summary`), get(`${base}/traffic/links`)]);
    const panel = el("section", undefined, "panel");
    panel.id = "traffic";
    panel.setAttribute("aria-labelledby", "traffic-title");
    Object.assign(panel.style, { bottom: "160px", right: "8px", width: "330px", maxHeight: "42%", overflow: "auto" });
    const title = el("h2", `Traffic scenario ${summary.name || sid.split(":").pop()}`);
    title.id = "traffic-title";
    const syn = summary.synthetic_inputs.length ? ` SYNTHETIC inputs: ${summary.synthetic_inputs.join(", ")}.` : "";
    const facts = el("p", `Settings: ${settings(summary)}. Vehicle-hours ${summary.vht.before} -> ${summary.vht.after}, ` +
      `vehicle-km ${summary.vkt.before} -> ${summary.vkt.after}, max v/c ${summary.max_vc.before} -> ${summary.max_vc.after}, ` +
      `${summary.unreachable_pair_count} zone pairs unreachable.${syn}`);
    facts.id = "traffic-facts";
    const delayed = el("ol");
    delayed.id = "traffic-delayed";
    for (const p of summary.most_delayed_pairs) {
      delayed.appendChild(el("li", `${p.from.split(":").pop()} -> ${p.to.split(":").pop()}: +${p.delay_min} min`));
    }
    const buttons = el("div");
    const sl = summary.select_link;  // null without closures
    for (const mode of sl ? ["vc", "diff", "rerouted"] : ["vc", "diff"]) {
      const b = el("button", MODES[mode].label);
      b.type = "button";
      b.id = `traffic-mode-${mode}`;
      b.addEventListener("click", () => recolour(mode));
      buttons.appendChild(b);
    }
    const box = el("div");
    box.id = "traffic-legend";
    for (const h of [title]) Object.assign(h.style, { margin: "0 0 6px", fontSize: "14px" });
    panel.append(title, buttons, box, facts);
    if (sl) {
      const moved = el("p", `Closed roads: ${sl.displaced_trips} trips used them in the baseline; ` +
        `${sl.displaced_trips_rerouted} found another route, ${sl.displaced_trips_unreachable} have none.`);
      moved.id = "traffic-rerouted";
      panel.appendChild(moved);
    }
    panel.append(el("div", "Most delayed neighbourhood pairs:"), delayed);
    document.querySelector("main").appendChild(panel);
    for (const f of fc.features) {
      const p = f.properties;
      const width = p.closed ? 4 : 2 + Math.min(8, Math.max(p.volume, p.volume_before) / 150);
      const entity = viewer.entities.add({ id: `traffic:${f.id}`, name: `${f.id}: ${p.volume} veh/h (was ${p.volume_before}), v/c ${p.vc}`,
        polyline: { positions: Cesium.Cartesian3.fromDegreesArrayHeights(f.geometry.coordinates.flatMap((c) => [c[0], c[1], 4])),
                    width, material: Cesium.Color.WHITE } });
      entities.push({ entity, props: p });
    }
    t.links = entities.length;
    t.closed = fc.features.filter((f) => f.properties.closed).length;
    recolour("vc");
    t.ready = true;
    return summary;
  }

  window.PlietschTraffic = { show, colour, recolour };
})();
