// Plietsch Twin viewer: the buses of GTFS-Realtime (issue 13 item 3). The GTFS source writes one twin entity per bus
// (<region>:_:vehicle:bus-<id>) to twin.updates; the live stream (/stream) brings them in its snapshot and as deltas.
// Each bus is a billboard at its position, labelled with its route's short name, an arrow turned to its bearing (a
// dot when the feed gives none); a new position moves it. A bus is removed when its state has no position, or when
// its last position is stale: observed more than STALE_S seconds before the browser's clock (checked on each delta
// and every CHECK_MS), since the twin keeps the last state of a bus that has left the feed.
"use strict";
(function () {
  const STALE_S = 300;  // 10 polls of the default 30 s interval: a bus not heard of for 5 minutes is not shown
  const CHECK_MS = 10_000;
  const buses = {};  // entity id -> { entity, state, text, bearing }
  const left = {};  // entity id -> observed_at of the buses left out (stale or without position): window.plietsch.staleBuses
  let viewer = null;
  let shown = true;
  const images = {};

  function image(bearing) {  // an arrow pointing north (turned by the billboard's rotation), or a dot without bearing
    const key = bearing ? "arrow" : "dot";
    if (images[key]) return images[key];
    const c = document.createElement("canvas");
    c.width = c.height = 32;
    const g = c.getContext("2d");
    g.fillStyle = "#f39c12";
    g.strokeStyle = "#1c1c1c";
    g.lineWidth = 2;
    g.beginPath();
    if (bearing) { g.moveTo(16, 2); g.lineTo(28, 29); g.lineTo(16, 22); g.lineTo(4, 29); g.closePath(); }
    else g.arc(16, 16, 11, 0, 2 * Math.PI);
    g.fill();
    g.stroke();
    return (images[key] = c);
  }

  function stale(s, now) {
    const t = Date.parse(s.observed_at);
    return !(t > now - STALE_S * 1000);
  }

  function escape(v) {
    return String(v).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
  }

  function labelText(s) {
    return `${s.route || s.label || "Bus"}${s.synthetic ? " SYNTHETISCH" : ""}`;
  }

  function title(s) {  // what the entity info panel (Cesium's info box) shows as the heading
    const what = s.route ? `Bus Linie ${s.route}${s.headsign ? ` nach ${s.headsign}` : ""}` : `Bus ${s.label || s.vehicle_id}`;
    return `${what}${s.synthetic ? " (SYNTHETISCH: erfundene Testdaten)" : ""}`;
  }

  function description(s) {
    const rows = [["Fahrzeug", s.label || s.vehicle_id], ["Linie", s.route], ["Ziel", s.headsign], ["Fahrt", s.trip_id],
      ["Richtung", s.bearing_deg == null ? null : `${Math.round(s.bearing_deg)}°`],
      ["Geschwindigkeit", s.speed_ms == null ? null : `${Math.round(s.speed_ms * 3.6)} km/h`],
      ["Position vom", new Date(s.observed_at).toLocaleString("de-DE")], ["Quelle", s.source]]
      .filter(([, v]) => v != null && v !== "");
    const note = s.synthetic ? "<p><strong>SYNTHETISCH:</strong> erfundene Testdaten, kein echter Bus.</p>" : "";
    return `${note}<table class="cesium-infoBox-defaultTable"><tbody>${rows.map(([k, v]) =>
      `<tr><th>${escape(k)}</th><td>${escape(v)}</td></tr>`).join("")}</tbody></table>`;
  }

  function remove(id) {
    const b = buses[id];
    if (!b) return;
    viewer.entities.remove(b.entity);
    delete buses[id];
  }

  function apply(id, rec) {
    if (!viewer) return;
    const s = rec && rec.state;
    if (!s || s.lat == null || s.lon == null || stale(s, Date.now())) {
      left[id] = s ? s.observed_at || null : null;
      if (buses[id]) { remove(id); render(); }
      return;
    }
    delete left[id];
    const position = Cesium.Cartesian3.fromDegrees(s.lon, s.lat, 12);
    const bearing = s.bearing_deg == null ? null : Cesium.Math.toRadians(s.bearing_deg);
    let b = buses[id];
    if (!b) {
      const entity = viewer.entities.add({ id, position,
        billboard: { image: image(bearing !== null), width: 22, height: 22, alignedAxis: Cesium.Cartesian3.UNIT_Z,
                     rotation: bearing === null ? 0 : -bearing },
        label: { text: labelText(s), font: "bold 13px sans-serif", fillColor: Cesium.Color.WHITE,
                 outlineColor: Cesium.Color.BLACK, outlineWidth: 3, style: Cesium.LabelStyle.FILL_AND_OUTLINE,
                 pixelOffset: new Cesium.Cartesian2(0, -22) } });
      b = buses[id] = { entity, text: labelText(s), bearing };
    } else {
      b.entity.position = position;
      if (b.text !== labelText(s)) { b.text = labelText(s); b.entity.label.text = b.text; }
      if (b.bearing !== bearing) {
        if ((b.bearing === null) !== (bearing === null)) b.entity.billboard.image = image(bearing !== null);
        b.bearing = bearing;
        b.entity.billboard.rotation = bearing === null ? 0 : -bearing;
      }
    }
    b.state = s;
    b.entity.name = title(s);
    b.entity.description = description(s);
    b.entity.show = shown;
    render();
  }

  function prune() {
    const now = Date.now();
    let gone = false;
    for (const [id, b] of Object.entries(buses)) if (stale(b.state, now)) { left[id] = b.state.observed_at; remove(id); gone = true; }
    if (gone) render();
  }

  function render() {  // the panel: how many buses are live, and whether any are SYNTHETIC
    const panel = document.getElementById("buses");
    const list = Object.values(buses);
    window.plietsch.buses = Object.fromEntries(Object.entries(buses).map(([id, b]) => [id, b.state]));
    panel.hidden = list.length === 0;
    const synthetic = list.filter((b) => b.state.synthetic).length;
    document.getElementById("buses-count").textContent = `${list.length} ${list.length === 1 ? "Bus" : "Busse"} live ` +
      `(Pfeil: Fahrtrichtung; nach ${STALE_S / 60} Minuten ohne Position ausgeblendet)`;
    document.getElementById("buses-synthetic").textContent =
      synthetic ? `SYNTHETISCH: ${synthetic} davon aus erfundenen Testdaten, keine echten Busse.` : "";
    viewer.scene.requestRender();
  }

  function attach(v) {
    viewer = v;
    window.plietsch.buses = {};
    window.plietsch.staleBuses = left;
    setInterval(prune, CHECK_MS);
  }

  function reset() {  // back to live: forget the buses drawn, show what the fresh snapshot brings
    shown = true;
    for (const id of Object.keys(buses)) remove(id);
    if (viewer) render();
  }

  function show(on) {  // time travel hides the live buses (the twin keeps no history of their positions)
    shown = on;
    for (const b of Object.values(buses)) b.entity.show = on;
    if (viewer) viewer.scene.requestRender();
  }

  window.PlietschBuses = { attach, apply, reset, show, STALE_S };
})();
