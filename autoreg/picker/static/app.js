// autoreg pick: draws the two images and the pairs, sends edits; all maths is done by the Python server.
"use strict";
(() => {
  const TOKEN = document.querySelector('meta[name="autoreg-token"]').content;
  const SIDES = ["fixed", "moving"];
  const canvases = { fixed: document.getElementById("fixed"), moving: document.getElementById("moving") };
  const images = { fixed: new Image(), moving: new Image(), warped: null };
  const views = { fixed: null, moving: null };  // screen = (x + 0.5) * s + tx  (CSS px; pixel centres at integers)
  let state = null, selected = null, overlay = "off", flicker = false, warpedRevision = -1, busy = Promise.resolve();
  let drag = null;

  // ------------------------------------------------------------------ server
  async function call(path, body) {
    const opts = body === undefined ? { headers: { "X-Autoreg-Token": TOKEN } }
      : { method: "POST", headers: { "X-Autoreg-Token": TOKEN, "Content-Type": "application/json" }, body: JSON.stringify(body) };
    const response = await fetch(path, opts);
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }
  function say(text) { document.getElementById("message").textContent = text || ""; }
  function act(body) {  // edits are sent one at a time, in order
    busy = busy.then(async () => {
      try { setState(await call("/api/action", body)); say(""); } catch (err) { say(err.message); }
    });
    return busy;
  }
  async function save(finish) {
    try {
      const r = await call("/api/save", { finish });
      say(finish ? `Saved ${r.saved} pairs${r.path ? " to " + r.path : ""}. Finished: you may close this tab.`
                 : `Saved ${r.saved} pairs${r.path ? " to " + r.path : ""}.`);
      window.autoreg.lastSave = r;
    } catch (err) { say(err.message); }
  }

  // ------------------------------------------------------------------ geometry (display only)
  function apply(m, x, y) { const w = m[2][0] * x + m[2][1] * y + m[2][2]; return [(m[0][0] * x + m[0][1] * y + m[0][2]) / w, (m[1][0] * x + m[1][1] * y + m[1][2]) / w]; }
  function invert(m) {
    const [a, b, c] = m[0], [d, e, f] = m[1], [g, h, i] = m[2];
    const A = e * i - f * h, B = -(d * i - f * g), C = d * h - e * g, det = a * A + b * B + c * C;
    return [[A / det, -(b * i - c * h) / det, (b * f - c * e) / det], [B / det, (a * i - c * g) / det, -(a * f - c * d) / det],
            [C / det, -(a * h - b * g) / det, (a * e - b * d) / det]];
  }
  function linearScale(m) { return Math.sqrt(Math.abs(m[0][0] * m[1][1] - m[0][1] * m[1][0])); }
  function toScreen(side, x, y) { const v = views[side]; return [(x + 0.5) * v.s + v.tx, (y + 0.5) * v.s + v.ty]; }
  function toImage(side, sx, sy) { const v = views[side]; return [(sx - v.tx) / v.s - 0.5, (sy - v.ty) / v.s - 0.5]; }
  function centreOf(side) { const c = canvases[side]; return toImage(side, c.clientWidth / 2, c.clientHeight / 2); }
  function centreOn(side, x, y, s) {
    const c = canvases[side], v = views[side];
    if (s !== undefined) v.s = s;
    v.tx = c.clientWidth / 2 - (x + 0.5) * v.s; v.ty = c.clientHeight / 2 - (y + 0.5) * v.s;
  }
  function follow(leader) {  // the other view shows the same place at the same physical zoom
    if (!state) return;
    const other = leader === "fixed" ? "moving" : "fixed";
    const m = leader === "moving" ? state.sync_matrix : invert(state.sync_matrix);
    const [x, y] = centreOf(leader);
    const [ox, oy] = apply(m, x, y);
    centreOn(other, ox, oy, views[leader].s / linearScale(m));  // one moving px spans scale fixed px
  }
  function fit() {
    for (const side of SIDES) {
      const c = canvases[side], [rows, cols] = state[side + "_shape"];
      const s = Math.min(c.clientWidth / cols, c.clientHeight / rows) * 0.95;
      views[side] = { s, tx: 0, ty: 0 };
      centreOn(side, (cols - 1) / 2, (rows - 1) / 2, s);
    }
    draw();
  }

  // ------------------------------------------------------------------ drawing
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    for (const side of SIDES) {
      const c = canvases[side];
      c.width = Math.round(c.clientWidth * dpr); c.height = Math.round(c.clientHeight * dpr);
      c.getContext("2d").setTransform(dpr, 0, 0, dpr, 0, 0);
    }
    draw();
  }
  function drawImage(ctx, side, img, [rows, cols]) {
    const v = views[side];
    ctx.imageSmoothingEnabled = side === "fixed" && v.s < 1;  // the coarse map as sharp pixels; pixels when zoomed
    ctx.drawImage(img, v.tx, v.ty, cols * v.s, rows * v.s);
  }
  function drawOverlay(ctx) {
    const shape = state.fixed_shape, v = views.fixed;
    if (!images.warped || !images.warped.complete) return;
    if (overlay === "blend") {
      ctx.globalAlpha = document.getElementById("alpha").value / 100;
      drawImage(ctx, "fixed", images.warped, shape);
      ctx.globalAlpha = 1;
    } else if (overlay === "checker") {
      const n = 8, w = shape[1] / n, h = shape[0] / n;
      ctx.save(); ctx.beginPath();
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if ((i + j) % 2 === 0) ctx.rect(v.tx + j * w * v.s, v.ty + i * h * v.s, w * v.s, h * v.s);
      ctx.clip(); drawImage(ctx, "fixed", images.warped, shape); ctx.restore();
    }
  }
  function colour(p) {
    if (!(p.fixed_xy && p.moving_xy)) return "#00e5ff";
    if (p.outlier) return "#ff1744";
    return p.status === "accepted" ? "#00e676" : "#ffea00";
  }
  function drawMarkers(ctx, side) {
    for (const p of state.pairs) {
      const xy = p[side + "_xy"];
      if (!xy) continue;
      let [sx, sy] = toScreen(side, xy[0], xy[1]);
      if (drag && drag.moved && drag.id === p.id && drag.side === side) [sx, sy] = [drag.x, drag.y];
      const isSel = p.id === selected, r = isSel ? 9 : 6;
      ctx.lineWidth = p.outlier ? 3 : 2; ctx.strokeStyle = colour(p);
      ctx.setLineDash(p.status === "suggested" ? [3, 3] : []);
      ctx.beginPath(); ctx.arc(sx, sy, r, 0, 2 * Math.PI); ctx.stroke(); ctx.setLineDash([]);
      if (isSel) { ctx.beginPath(); ctx.moveTo(sx - 14, sy); ctx.lineTo(sx + 14, sy); ctx.moveTo(sx, sy - 14); ctx.lineTo(sx, sy + 14); ctx.strokeStyle = "#fff"; ctx.lineWidth = 1; ctx.stroke(); }
      ctx.fillStyle = colour(p); ctx.font = "11px sans-serif"; ctx.fillText(String(p.id), sx + r + 2, sy - r);
    }
  }
  function draw() {
    if (!state || !views.fixed) return;
    for (const side of SIDES) {
      const c = canvases[side], ctx = c.getContext("2d");
      ctx.clearRect(0, 0, c.clientWidth, c.clientHeight);
      const shape = state[side + "_shape"];
      const showWarped = side === "fixed" && flicker && images.warped && images.warped.complete;
      if (showWarped) drawImage(ctx, side, images.warped, shape);
      else if (images[side].complete) drawImage(ctx, side, images[side], shape);
      if (side === "fixed" && !flicker) drawOverlay(ctx);
      drawMarkers(ctx, side);
    }
    document.getElementById("flicker-label").textContent = flicker ? "(showing the warped moving image: t)" : "";
  }

  // ------------------------------------------------------------------ state and panels
  function fmt(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }
  function setState(next) {
    const first = state === null;
    state = next; window.autoreg.state = state;
    if (!state.pairs.some(p => p.id === selected)) selected = null;
    const pending = state.pairs.find(p => !(p.fixed_xy && p.moving_xy));
    if (pending) selected = pending.id;
    if (first) { document.getElementById("fixed-name").textContent = state.fixed_name; document.getElementById("moving-name").textContent = state.moving_name; resize(); fit(); }
    if (state.has_overlay && warpedRevision !== state.revision) {
      const img = new Image(); img.onload = () => { images.warped = img; draw(); };
      img.src = `/api/image/warped.png?token=${TOKEN}&rev=${state.revision}`; warpedRevision = state.revision;
    } else if (!state.has_overlay) { images.warped = null; }
    renderPanels(); draw();
    document.body.dataset.revision = String(state.revision);
  }
  function renderPanels() {
    const j = state.judged, badge = document.getElementById("verdict");
    badge.className = "badge " + (j.verdict || "none"); badge.textContent = j.verdict || "no verdict";
    document.getElementById("summary").textContent = j.verdict
      ? `${state.n_accepted} accepted · model ${j.model} · uncertainty ${fmt(j.uncertainty_px, 2)} px · rmse ${fmt(j.rmse_px, 2)} px`
      : `${state.n_accepted} accepted`;
    document.getElementById("reasons").textContent = j.verdict ? (j.reasons.length ? j.reasons.join("; ") : "") : j.message;
    const a = state.automatic;
    document.getElementById("automatic").textContent = a ? `automatic attempt: ${a.verdict}, ${a.model}, ${a.n_inliers} inliers` : "";
    document.getElementById("undo").disabled = !state.can_undo; document.getElementById("redo").disabled = !state.can_redo;
    const body = document.querySelector("#pairs tbody"); body.textContent = "";
    for (const p of state.pairs) {
      const tr = document.createElement("tr");
      tr.dataset.id = p.id; tr.dataset.status = p.status; tr.dataset.outlier = String(p.outlier);
      tr.className = [p.status, p.outlier ? "outlier" : "", p.id === selected ? "selected" : ""].join(" ");
      const cells = [p.id, p.fixed_xy && p.moving_xy ? p.status : "half", fmt(p.loo_px, 1) + (p.outlier ? " outlier" : ""), fmt(p.correlation, 2), p.note];
      for (const text of cells) { const td = document.createElement("td"); td.textContent = String(text); tr.appendChild(td); }
      const td = document.createElement("td");
      if (p.status === "suggested") { const b = document.createElement("button"); b.textContent = "✓"; b.title = "accept (a)"; b.className = "accept"; b.onclick = e => { e.stopPropagation(); act({ op: "accept", id: p.id }); }; td.appendChild(b); }
      const del = document.createElement("button"); del.textContent = "✕"; del.title = "delete (d)"; del.className = "delete";
      del.onclick = e => { e.stopPropagation(); act({ op: "delete", id: p.id }); }; td.appendChild(del);
      tr.appendChild(td);
      tr.onclick = () => select(p.id, true);
      body.appendChild(tr);
      if (p.id === selected) tr.scrollIntoView({ block: "nearest" });
    }
  }
  function select(id, centre) {
    selected = id;
    const p = state.pairs.find(q => q.id === id);
    if (p && centre) {
      if (p.fixed_xy) { centreOn("fixed", p.fixed_xy[0], p.fixed_xy[1]); if (p.moving_xy) centreOn("moving", p.moving_xy[0], p.moving_xy[1]); else follow("fixed"); }
      else if (p.moving_xy) { centreOn("moving", p.moving_xy[0], p.moving_xy[1]); follow("moving"); }
    }
    renderPanels(); draw();
  }
  function step(delta) {
    if (!state.pairs.length) return;
    const i = state.pairs.findIndex(p => p.id === selected);
    const next = i < 0 ? (delta > 0 ? 0 : state.pairs.length - 1) : (i + delta + state.pairs.length) % state.pairs.length;
    select(state.pairs[next].id, true);
  }

  // ------------------------------------------------------------------ mouse
  function local(side, e) { const r = canvases[side].getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; }
  function hit(side, sx, sy) {
    let best = null, bestD = 9;
    for (const p of state.pairs) {
      const xy = p[side + "_xy"]; if (!xy) continue;
      const [px, py] = toScreen(side, xy[0], xy[1]), d = Math.hypot(px - sx, py - sy);
      if (d < bestD) { best = p; bestD = d; }
    }
    return best;
  }
  for (const side of SIDES) {
    const c = canvases[side];
    c.addEventListener("mousedown", e => {
      if (!state) return;
      const [sx, sy] = local(side, e), p = hit(side, sx, sy);
      drag = { side, startX: sx, startY: sy, x: sx, y: sy, moved: false, id: p ? p.id : null, tx: views[side].tx, ty: views[side].ty, shift: e.shiftKey };
      if (p) { selected = p.id; renderPanels(); draw(); }
    });
    c.addEventListener("wheel", e => {
      if (!state) return;
      e.preventDefault();
      const [sx, sy] = local(side, e), [x, y] = toImage(side, sx, sy), v = views[side];
      v.s *= Math.exp(-e.deltaY * 0.0015);
      v.tx = sx - (x + 0.5) * v.s; v.ty = sy - (y + 0.5) * v.s;
      follow(side); draw();
    }, { passive: false });
  }
  window.addEventListener("mousemove", e => {
    if (!drag) return;
    const [sx, sy] = local(drag.side, e);
    if (Math.hypot(sx - drag.startX, sy - drag.startY) > 3) drag.moved = true;
    drag.x = sx; drag.y = sy;
    if (drag.moved && drag.id === null) {
      views[drag.side].tx = drag.tx + sx - drag.startX; views[drag.side].ty = drag.ty + sy - drag.startY; follow(drag.side);
    }
    draw();
  });
  window.addEventListener("mouseup", e => {
    if (!drag) return;
    const d = drag; drag = null;
    const [x, y] = toImage(d.side, d.x, d.y), refine = !(e.shiftKey || d.shift);
    if (d.id !== null && d.moved) { act({ op: "move", id: d.id, side: d.side, xy: [x, y], refine }); return; }
    if (d.id !== null || d.moved) { draw(); return; }
    const pending = state.pairs.find(p => !(p.fixed_xy && p.moving_xy) && !p[d.side + "_xy"]);
    if (pending) act({ op: "move", id: pending.id, side: d.side, xy: [x, y], refine });
    else act({ op: "add", [d.side + "_xy"]: [x, y], refine });
  });

  // ------------------------------------------------------------------ keys and buttons
  function setOverlay(mode) { overlay = mode; document.getElementById("overlay").value = mode; draw(); }
  function help(show) { document.getElementById("help").hidden = !show; }
  document.addEventListener("keydown", e => {
    if (!state || e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    const k = e.key, ctrl = e.ctrlKey || e.metaKey;
    let done = true;
    if (ctrl && (k === "z" || k === "Z")) act({ op: e.shiftKey ? "redo" : "undo" });
    else if (ctrl && (k === "y" || k === "Y")) act({ op: "redo" });
    else if (ctrl && (k === "s" || k === "S")) save(false);
    else if (ctrl) done = false;
    else if (k === "A") act({ op: "accept_all" });
    else if (k === "a") { if (selected !== null) act({ op: "accept", id: selected }); }
    else if (k === "d" || k === "Delete" || k === "Backspace") { if (selected !== null) act({ op: "delete", id: selected }); }
    else if (k === "n" || k === "ArrowRight") step(1);
    else if (k === "p" || k === "ArrowLeft") step(-1);
    else if (k === "t") { flicker = !flicker; draw(); }
    else if (k === "o") setOverlay({ off: "blend", blend: "checker", checker: "off" }[overlay]);
    else if (k === "u") act({ op: "undo" });
    else if (k === "r") act({ op: "redo" });
    else if (k === "S") save(true);
    else if (k === "s") save(false);
    else if (k === "f") fit();
    else if (k === "?" || k === "h") help(document.getElementById("help").hidden);
    else if (k === "Escape") { help(false); selected = null; renderPanels(); draw(); }
    else done = false;
    if (done) e.preventDefault();
  });
  document.getElementById("accept-all").onclick = () => act({ op: "accept_all" });
  document.getElementById("undo").onclick = () => act({ op: "undo" });
  document.getElementById("redo").onclick = () => act({ op: "redo" });
  document.getElementById("save").onclick = () => save(false);
  document.getElementById("finish").onclick = () => save(true);
  document.getElementById("help-button").onclick = () => help(true);
  document.getElementById("help-close").onclick = () => help(false);
  document.getElementById("overlay").onchange = e => setOverlay(e.target.value);
  document.getElementById("alpha").oninput = () => draw();
  window.addEventListener("resize", () => { if (state) resize(); });

  // ------------------------------------------------------------------ start
  window.autoreg = { state: null, views, toScreen, act, save, select, get busy() { return busy; }, lastSave: null,
    clientXY(side, x, y) { const r = canvases[side].getBoundingClientRect(), [sx, sy] = toScreen(side, x, y); return [r.left + sx, r.top + sy]; } };
  let loaded = 0;
  for (const side of SIDES) {
    images[side].onload = () => { loaded += 1; draw(); if (loaded === 2) document.body.dataset.ready = "true"; };
    images[side].src = `/api/image/${side}.png?token=${TOKEN}`;
  }
  call("/api/state").then(setState).catch(err => say(err.message));
})();
