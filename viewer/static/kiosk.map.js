// Inline SVG drawings of the Info-Cube: the map (outlines, pins), the day's curves and the water-level gauge.
// Built with createElementNS and textContent only: no text ever goes in as HTML.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function svg(w, h, label) {
    const s = el("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": label, preserveAspectRatio: "xMidYMid meet" });
    s.appendChild(el("title", {}, label));
    return s;
  }

  // The map: equirectangular, x scaled by cos(latitude) so that the shapes keep their proportions.
  function projection(bbox, width) {
    const [w, s, e, n] = bbox;
    const k = Math.cos(((s + n) / 2) * Math.PI / 180);
    const height = Math.round(width * (n - s) / ((e - w) * k));
    return {
      width, height,
      xy: (lon, lat) => [((lon - w) / (e - w)) * width, ((n - lat) / (n - s)) * height],
      lonlat: (x, y) => [w + (x / width) * (e - w), n - (y / height) * (n - s)],
    };
  }
  function path(points, p, close) {
    return points.map(([lon, lat], i) => { const [x, y] = p.xy(lon, lat); return `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`; })
      .join("") + (close ? "Z" : "");
  }
  const KIND_COLOUR = { idea: "#ffd23a", problem: "#ff8a65", rating: "#9be28f" };

  function map(data, pins, label, pin) {
    const p = projection(data.view || data.bbox, 900);
    const s = svg(p.width, p.height, label);
    s.classList.add("map");
    s.appendChild(el("rect", { x: 0, y: 0, width: p.width, height: p.height, fill: "#0b3a56" }));
    const roads = el("path", { d: data.roads.map((r) => path(r, p, false)).join(""), stroke: "#8fb3c9", "stroke-width": 2, fill: "none" });
    s.appendChild(roads);
    s.appendChild(el("path", { d: data.coast.map((c) => path(c, p, false)).join(""), stroke: "#5ec8ff", "stroke-width": 5, fill: "none" }));
    for (const n of data.neighbourhoods) {
      s.appendChild(el("path", { d: path(n.polygon, p, true), fill: "rgba(127,209,255,0.25)", stroke: "#ffffff", "stroke-width": 3 }));
      const xs = n.polygon.map((q) => p.xy(q[0], q[1]));
      const cx = xs.reduce((a, q) => a + q[0], 0) / xs.length, cy = Math.min(...xs.map((q) => q[1])) - 12;
      s.appendChild(el("text", { x: cx, y: cy, "text-anchor": "middle", fill: "#ffffff", "font-size": 34, "font-weight": "bold" }, n.name));
    }
    for (const f of pins || []) {
      const [x, y] = p.xy(f.geometry.coordinates[0], f.geometry.coordinates[1]);
      s.appendChild(el("circle", { cx: x, cy: y, r: 12, fill: KIND_COLOUR[f.properties.kind] || "#fff", stroke: "#000", "stroke-width": 2, class: "pin" }));
    }
    if (pin) {
      const [x, y] = p.xy(pin[0], pin[1]);
      s.appendChild(el("path", { d: `M${x},${y} l-16,-40 a17,17 0 1,1 32,0 z`, fill: "#ff3b3b", stroke: "#fff", "stroke-width": 3, id: "fb-pin" }));
    }
    s.projection = p;
    return s;
  }

  // A day's curve: a polyline with the first and last time and the highest value written beside it.
  function chart(title, series, unit, noData) {
    const W = 600, H = 220, L = 70, B = 40;
    const values = series.map(([, v]) => (v === "<5" ? 0 : Number(v)));
    const label = series.length
      ? `${title}: ${series.length}, ${values[values.length - 1]}${unit}`
      : `${title}: ${noData}`;
    const s = svg(W, H, label);
    s.classList.add("chart");
    s.appendChild(el("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#cfe8f7", "stroke-width": 2 }));
    s.appendChild(el("line", { x1: L, y1: 10, x2: L, y2: H - B, stroke: "#cfe8f7", "stroke-width": 2 }));
    if (!series.length) {
      s.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#ffffff", "font-size": 28 }, noData));
      return s;
    }
    const max = Math.max(1, ...values);
    const x = (i) => L + (series.length === 1 ? 0 : (i / (series.length - 1)) * (W - L - 20));
    const y = (v) => H - B - (v / max) * (H - B - 20);
    s.appendChild(el("polyline", { points: values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      fill: "none", stroke: "#7fd1ff", "stroke-width": 5, "stroke-linejoin": "round" }));
    s.appendChild(el("text", { x: L - 8, y: 28, "text-anchor": "end", fill: "#ffffff", "font-size": 24 }, String(Math.round(max))));
    s.appendChild(el("text", { x: L - 8, y: H - B, "text-anchor": "end", fill: "#ffffff", "font-size": 24 }, "0"));
    const time = (t) => (typeof t === "string" && t.length > 15 ? new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : String(t));
    s.appendChild(el("text", { x: L, y: H - 8, fill: "#ffffff", "font-size": 24 }, time(series[0][0])));
    s.appendChild(el("text", { x: W - 10, y: H - 8, "text-anchor": "end", fill: "#ffffff", "font-size": 24 }, time(series[series.length - 1][0])));
    return s;
  }

  // The gauge: -0.5 m to 2.5 m, the storm-surge classes as coloured bands, a marker at the level.
  const BAND = { storm_surge: "#ffd23a", medium_storm_surge: "#ffa000", severe_storm_surge: "#ff5a36", very_severe_storm_surge: "#c2185b" };
  function gauge(level, classes, names, label) {
    const W = 720, H = 560, top = 20, bottom = H - 20, lo = -0.5, hi = 2.5;
    const y = (m) => bottom - ((Math.max(lo, Math.min(hi, m)) - lo) / (hi - lo)) * (bottom - top);
    const s = svg(W, H, label);
    s.classList.add("gauge");
    s.appendChild(el("rect", { x: 40, y: top, width: 90, height: bottom - top, fill: "#1d5f86", stroke: "#fff", "stroke-width": 3 }));
    classes.forEach((c, i) => {
      const upper = i + 1 < classes.length ? classes[i + 1].from_m : hi;
      s.appendChild(el("rect", { x: 40, y: y(upper), width: 90, height: y(c.from_m) - y(upper), fill: BAND[c.class] || "#fff" }));
      s.appendChild(el("text", { x: 150, y: (y(upper) + y(c.from_m)) / 2 + 9, fill: "#ffffff", "font-size": 26 },
        `${c.from_m.toFixed(2)} m  ${names[c.class] || c.class}`));
    });
    s.appendChild(el("text", { x: 150, y: y(0) + 9, fill: "#ffffff", "font-size": 26 }, `0 m  ${names.none}`));
    if (level !== null && level !== undefined) {
      s.appendChild(el("rect", { x: 40, y: y(level), width: 90, height: bottom - y(level), fill: "rgba(127,209,255,0.85)" }));
      s.appendChild(el("line", { x1: 20, y1: y(level), x2: 140, y2: y(level), stroke: "#ffffff", "stroke-width": 6, id: "gauge-level" }));
    }
    return s;
  }

  window.kioskDraw = { map, chart, gauge, projection };
})();
