// STYX visualiser: reads the scheduler's event stream (/events) and draws
// the scheduler, its hosts and workers on a canvas, with batches flowing out
// and verdicts flowing back. Frames are full or delta (see frame.go).
"use strict";
(function () {
  const GONE_MS = 10000;      // a worker that left stays marked "gone" this long
  const FLIGHT_MS = 700;      // a particle's travel time
  const MAX_PARTICLES = 800;

  const $ = (id) => document.getElementById(id);
  const canvas = $("view"), ctx = canvas.getContext("2d", { alpha: false });
  const stage = $("stage"), tip = $("tip"), table = $("workers");

  // ---- state, changed only by frames ----
  const st = {
    self: "", lead: false, term: 0, leader: "", lhttp: "",
    p: null, cov: 1, pol: "", r: [0, 0, 0], nodes: [],
    frameAt: 0,
  };
  const workers = new Map(); // slot -> worker
  let layoutDirty = true, tableDirty = true, figuresDirty = true;
  const rowsDirty = new Set();   // table rows to patch
  const dirtyCells = new Set();  // canvas cells to redraw
  let hubDirty = true, fullRedraw = true;
  function touch(k) { rowsDirty.add(k); dirtyCells.add(k); }
  const particles = [];
  const pending = []; // particles waiting for their start time

  // Exposed for tests and curious operators.
  // cost: milliseconds spent in each part, for tests and for tuning.
  const cost = { apply: 0, layout: 0, table: 0, draw: 0, particles: 0, figures: 0 };
  window.styx = { frames: 0, workers, state: st, cost };
  function timed(part, fn) {
    const t0 = performance.now();
    fn();
    cost[part] += performance.now() - t0;
  }

  // ---- the stream ----
  function connect() {
    const es = new EventSource("/events");
    es.onopen = () => setConn("live", "live");
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        setConn("down", "disconnected: reload the page");
      } else {
        setConn("down", "reconnecting…");
      }
    };
    es.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      timed("apply", () => apply(f));
      window.styx.frames++;
    };
  }
  function setConn(cls, text) {
    const el = $("conn");
    el.className = "conn " + cls;
    el.textContent = text;
  }

  function apply(f) {
    const now = performance.now();
    if (f.full) {
      st.self = f.self; st.lead = f.lead; st.term = f.term; st.leader = f.leader; st.lhttp = f.lhttp;
      st.p = f.p || null; st.cov = f.cov ?? 1; st.pol = f.pol || ""; st.r = f.r || [0, 0, 0]; st.nodes = f.nodes || [];
      workers.clear();
      particles.length = 0; pending.length = 0;
      for (const w of f.ws || []) workers.set(w.k, w);
      layoutDirty = tableDirty = figuresDirty = true;
      renderRole();
    } else {
      if (f.p) st.p = f.p;
      if (f.cov !== undefined) st.cov = f.cov;
      if (f.pol !== undefined) st.pol = f.pol;
      if (f.r) st.r = f.r;
      if (f.nodes) st.nodes = f.nodes;
      for (const w of f.ws || []) {
        const old = workers.get(w.k);
        if (!old) {
          // A worker back under a new slot replaces its "gone" entry.
          for (const [k, g] of workers) if (g.s === "gone" && g.id === w.id) workers.delete(k);
        }
        if (!old || old.h !== w.h || old.n !== w.n || old.s === "gone") layoutDirty = tableDirty = true;
        if (old) { w.x = old.x; w.y = old.y; w.cw = old.cw; w.ch = old.ch; w.row = old.row; }
        workers.set(w.k, w);
        touch(w.k);
      }
      for (const row of f.w || []) {
        const w = workers.get(row[0]);
        if (!w) continue;
        const dIf = row[2] - w.if, dDone = row[3];
        w.cr = row[1]; w.if = row[2]; w.b += dDone; w.r = row[4];
        spawn(w, Math.max(0, dDone + dIf), dDone, now);
        touch(w.k);
      }
      for (const k of f.rm || []) {
        const w = workers.get(k);
        if (!w) continue;
        w.s = "gone"; w.goneAt = now; w.cr = 0; w.if = 0; w.r = 0;
        touch(k);
      }
      figuresDirty = hubDirty = true;
    }
    st.frameAt = now;
  }

  // ---- particles: real dispatches and results, spread over the frame interval ----
  function spawn(w, out, back, now) {
    // Particles per worker and frame, each way: fewer in a large fleet.
    const per = workers.size > 100 ? 1 : 3;
    out = Math.min(out, per); back = Math.min(back, per);
    for (let i = 0; i < out + back; i++) {
      if (particles.length + pending.length >= MAX_PARTICLES) return;
      pending.push({ k: w.k, back: i >= out, t0: now + Math.random() * 250 });
    }
  }

  // ---- header, banner, figures ----
  function renderRole() {
    const role = $("role"), banner = $("banner");
    if (st.lead) {
      role.textContent = `${st.self} leads · term ${st.term}`;
      banner.hidden = true;
    } else {
      role.textContent = `${st.self} follows`;
      banner.hidden = false;
      banner.textContent = "";
      if (st.leader) {
        banner.append(`This scheduler (${st.self}) is a standby. The leader is ${st.leader}`);
        if (st.lhttp) {
          banner.append(": ");
          const a = document.createElement("a");
          a.href = "http://" + st.lhttp + "/";
          a.textContent = "open the leader's visualiser";
          a.id = "leader-link";
          banner.append(a);
        }
        banner.append(". This page switches to the live picture if this scheduler takes over.");
      } else {
        banner.append(`This scheduler (${st.self}) is a standby and no leader is elected yet.`);
      }
    }
    document.body.dataset.leader = st.lead ? st.self : st.leader;
    document.body.dataset.role = st.lead ? "leader" : "follower";
  }

  function fmt(n) {
    if (n === undefined || n === null) return "–";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return String(Math.round(n));
  }
  function fmtAge(ms) {
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 7200000) return (ms / 60000).toFixed(1) + " min";
    return (ms / 3600000).toFixed(1) + " h";
  }
  const figText = {};
  function setFig(id, text) {
    if (figText[id] === text) return;
    figText[id] = text;
    $(id).textContent = text;
  }
  function renderFigures(now) {
    const p = st.p;
    if (!st.lead || !p) {
      for (const id of ["f-pending", "f-oldest", "f-inflight", "f-coverage", "f-shed", "f-expired", "f-sps", "f-vps", "f-pph", "f-workers", "f-nodes", "f-policy"]) setFig(id, "–");
      renderNodes();
      return;
    }
    const age = p[0] > 0 ? p[2] + (now - st.frameAt) : 0;
    setFig("f-pending", fmt(p[0]));
    setFig("f-oldest", p[0] > 0 ? fmtAge(age) : "none");
    setFig("f-inflight", fmt(p[1]));
    setFig("f-coverage", (st.cov * 100).toFixed(1) + "%");
    setFig("f-shed", fmt(p[6]));
    setFig("f-expired", fmt(p[7]));
    setFig("f-sps", fmt(st.r[0]));
    setFig("f-vps", fmt(st.r[1]));
    setFig("f-pph", fmt(st.r[2]));
    let ready = 0, total = 0;
    for (const w of workers.values()) { if (w.s !== "gone") total++; if (w.s === "ready") ready++; }
    setFig("f-workers", `${ready} / ${total}`);
    setFig("f-nodes", String(st.nodes.length));
    setFig("f-policy", st.pol || "–");
    renderNodes();
  }

  // ---- cluster nodes: how far behind the verdict log each one is ----
  // A node row is [id, lag messages, lag seconds, flags]; flags: 1 stalled,
  // 2 not connected to the log, 4 not reported yet.
  let nodesKey = "";
  function renderNodes() {
    const key = JSON.stringify(st.lead ? st.nodes : []);
    if (key === nodesKey) return;
    nodesKey = key;
    const body = document.querySelector("#nodes tbody");
    body.replaceChildren();
    for (const n of st.lead ? st.nodes : []) {
      const tr = document.createElement("tr");
      const flags = n[3];
      const state = flags & 4 ? "no report yet" : flags & 1 ? "STALLED" : flags & 2 ? "not connected" : n[1] > 0 ? "catching up" : "at the head";
      tr.dataset.state = flags & 1 ? "stalled" : flags & 2 ? "down" : "ready";
      for (const text of [n[0], flags & 4 ? "–" : fmt(n[1]), flags & 4 ? "–" : n[2].toFixed(1) + " s", state]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  // ---- layout: hosts as boxes, their workers (NUMA nodes) as cells ----
  // Two canvases: #view holds the hosts, cells and the scheduler and is
  // redrawn only where a frame changed something (at most 4 times a
  // second); #fx holds the moving particles and is redrawn every animation
  // frame while any move.
  const fx = $("fx"), fctx = fx.getContext("2d");
  let W = 0, H = 0, dpr = 1;
  const hub = { x: 0, y: 0, r: 0 };
  let hostBoxes = [];
  let fontPx = 11;
  const staticLayer = document.createElement("canvas");

  function sortedWorkers() {
    return [...workers.values()].sort((a, b) =>
      a.h < b.h ? -1 : a.h > b.h ? 1 : a.n - b.n || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  function layout() {
    const rect = stage.getBoundingClientRect();
    dpr = window.devicePixelRatio || 1;
    W = Math.max(200, Math.floor(rect.width)); H = Math.max(200, Math.floor(rect.height));
    for (const c of [canvas, fx, staticLayer]) { c.width = W * dpr; c.height = H * dpr; }
    const left = Math.min(220, W * 0.22);
    hub.x = left / 2; hub.y = H / 2; hub.r = Math.min(left * 0.4, H * 0.3, 80);
    const hosts = [];
    for (const w of sortedWorkers()) {
      const last = hosts[hosts.length - 1];
      if (last && last.name === w.h) last.ws.push(w); else hosts.push({ name: w.h, ws: [w] });
    }
    // The largest cell that fits every host box into the area, centred.
    const ax = left + 10, ay = 8, aw = W - ax - 8, ah = H - 16;
    let cell = 6;
    for (let c = 90; c >= 6; c--) {
      if (fit(hosts, c, ax, ay, aw, ah, 0) >= 0) { cell = c; break; }
    }
    const used = fit(hosts, cell, ax, ay, aw, ah, 0);
    fit(hosts, cell, ax, ay + Math.max(0, (ah - used) / 2), aw, ah, 1);
    hostBoxes = hosts;
    fontPx = Math.max(9, Math.min(12, Math.floor(cell / 3.5)));
    drawStatic();
    layoutDirty = false;
    fullRedraw = true;
  }

  // fit lays hosts out in rows and returns the height used, or -1 when
  // they do not fit; with place set it stores the positions.
  function fit(hosts, c, ax, ay, aw, ah, place) {
    const cw = Math.round(c * 1.5), ch = c, gap = Math.max(2, Math.round(c / 8)), pad = Math.max(3, Math.round(c / 6));
    const label = c >= 14 ? 14 : 0;
    let x = ax, y = ay, rowH = 0;
    for (const h of hosts) {
      const perRow = Math.max(1, Math.floor((aw - 2 * pad + gap) / (cw + gap)));
      const cols = Math.min(h.ws.length, perRow), rows = Math.ceil(h.ws.length / perRow);
      const bw = 2 * pad + cols * cw + (cols - 1) * gap, bh = label + 2 * pad + rows * ch + (rows - 1) * gap;
      if (x + bw > ax + aw) { x = ax; y += rowH + gap * 2; rowH = 0; }
      if (!place && y + bh > ay + ah) return -1;
      if (place) {
        h.x = x; h.y = y; h.w = bw; h.h = bh; h.label = label;
        h.ws.forEach((w, i) => {
          w.x = x + pad + (i % perRow) * (cw + gap);
          w.y = y + label + pad + Math.floor(i / perRow) * (ch + gap);
          w.cw = cw; w.ch = ch;
        });
      }
      x += bw + gap * 2; rowH = Math.max(rowH, bh);
    }
    return y + rowH - ay;
  }

  function drawStatic() {
    const g = staticLayer.getContext("2d", { alpha: false });
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = "#0b0e13"; g.fillRect(0, 0, W, H);
    g.font = `${fontPx}px system-ui, sans-serif`;
    g.textBaseline = "top";
    for (const h of hostBoxes) {
      g.fillStyle = "#131a23"; g.fillRect(h.x, h.y, h.w, h.h);
      g.strokeStyle = "#2a313c"; g.lineWidth = 1; g.strokeRect(h.x + .5, h.y + .5, h.w - 1, h.h - 1);
      if (h.label) {
        g.fillStyle = "#9aa5b1";
        g.fillText(clip(g, h.name + (h.ws.length > 1 ? ` · ${h.ws.length} NUMA workers` : ""), h.w - 6), h.x + 4, h.y + 2);
      }
    }
  }

  // restore copies the static layer back over a region of #view.
  function restore(x, y, w, h) {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    const sx = Math.max(0, Math.floor(x * dpr)), sy = Math.max(0, Math.floor(y * dpr));
    const sw = Math.min(canvas.width - sx, Math.ceil(w * dpr) + 1), sh = Math.min(canvas.height - sy, Math.ceil(h * dpr) + 1);
    if (sw > 0 && sh > 0) ctx.drawImage(staticLayer, sx, sy, sw, sh, sx, sy, sw, sh);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  function clip(g, s, width) {
    if (width <= 0) return "";
    if (g.measureText(s).width <= width) return s;
    while (s.length > 1 && g.measureText(s + "…").width > width) s = s.slice(0, -1);
    return s + "…";
  }

  const modelColors = new Map();
  const palette = ["#a371f7", "#58a6ff", "#f778ba", "#79c0ff", "#ffa657", "#7ee787", "#d2a8ff", "#ff7b72"];
  function modelColor(m) {
    let c = modelColors.get(m);
    if (!c) {
      c = palette[modelColors.size % palette.length];
      modelColors.set(m, c);
      renderModels();
    }
    return c;
  }
  function renderModels() {
    const el = $("models");
    el.textContent = "";
    for (const [m, c] of modelColors) {
      const s = document.createElement("span");
      s.className = "sw"; s.style.background = c;
      el.append(s, m || "(no model)");
    }
  }

  // ---- drawing #view where it changed ----
  function drawView() {
    if (fullRedraw) {
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(staticLayer, 0, 0);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      for (const w of workers.values()) drawCell(w);
      drawHub();
      if (workers.size === 0) {
        const left = Math.min(220, W * 0.22);
        ctx.fillStyle = "#7b8794"; ctx.font = "14px system-ui, sans-serif";
        ctx.textAlign = "center"; ctx.textBaseline = "middle";
        const msg = !st.lead ? (st.leader ? `Standby: the workers are on the leader, ${st.leader}.` : "Standby: no leader elected yet.")
          : "No workers registered under /styx/workers/ yet.";
        ctx.fillText(msg, left + (W - left) / 2, H / 2);
        ctx.textAlign = "left"; ctx.textBaseline = "top";
      }
    } else {
      for (const k of dirtyCells) {
        const w = workers.get(k);
        if (w) { restore(w.x, w.y, w.cw, w.ch); drawCell(w); }
      }
      if (hubDirty) { restore(hub.x - hub.r - 4, hub.y - hub.r - 4, 2 * hub.r + 8, 2 * hub.r + 8); drawHub(); }
    }
    dirtyCells.clear();
    fullRedraw = hubDirty = false;
  }

  function drawHub() {
    ctx.beginPath(); ctx.arc(hub.x, hub.y, hub.r, 0, Math.PI * 2);
    ctx.fillStyle = st.lead ? "#13233a" : "#22262d"; ctx.fill();
    ctx.lineWidth = 2; ctx.strokeStyle = st.lead ? "#58a6ff" : "#555"; ctx.stroke();
    const p = st.p;
    if (st.lead && p) {
      // The pool's depth against the work in flight, as an arc.
      const total = p[0] + p[1];
      const share = total > 0 ? p[0] / total : 0;
      ctx.beginPath(); ctx.arc(hub.x, hub.y, hub.r - 6, -Math.PI / 2, -Math.PI / 2 + share * Math.PI * 2);
      ctx.lineWidth = 6; ctx.strokeStyle = "#d29922"; ctx.stroke();
    }
    ctx.fillStyle = "#d8dee9"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.font = "bold 15px system-ui, sans-serif";
    ctx.fillText("STYX", hub.x, hub.y - 22);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(clip(ctx, st.self, 2 * hub.r - 16), hub.x, hub.y - 6);
    if (st.lead && p) {
      ctx.fillText(`pool ${fmt(p[0])}`, hub.x, hub.y + 10);
      ctx.fillText(`${fmt(st.r[1])} verdicts/s`, hub.x, hub.y + 24);
    } else {
      ctx.fillText(clip(ctx, st.leader ? `follows ${st.leader}` : "no leader", 2 * hub.r - 16), hub.x, hub.y + 14);
    }
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
  }

  function drawCell(w) {
    if (w.x === undefined) return;
    const x = w.x, y = w.y, cw = w.cw, ch = w.ch;
    const gone = w.s === "gone";
    ctx.fillStyle = gone ? "#3a1414" : w.s === "ready" ? "#1b2633" : w.s === "draining" ? "#33290f" : "#23262b";
    ctx.fillRect(x, y, cw, ch);
    ctx.fillStyle = modelColor(w.m); ctx.fillRect(x, y, cw, 2);
    const cap = Math.max(1, w.cap);
    const barH = Math.max(2, Math.round(ch / 8));
    let top = y + 4;
    // Text when the cell is large enough: id, throughput.
    if (cw >= 66 && ch >= 34) {
      ctx.font = `${fontPx}px system-ui, sans-serif`;
      ctx.textBaseline = "top";
      ctx.fillStyle = gone ? "#f85149" : "#d8dee9";
      ctx.fillText(clip(ctx, w.id, cw - 6), x + 3, top);
      top += fontPx + 1;
      if (ch >= 50) {
        ctx.fillStyle = "#9aa5b1";
        ctx.fillText(clip(ctx, gone ? "gone" : `${fmt(w.r)}/s · ${w.if} in flight`, cw - 6), x + 3, top);
        top += fontPx + 1;
      }
      top += 1;
    }
    // Cores, lit in proportion to the batches in flight.
    const cores = Math.min(Math.max(w.cores || 1, 1), 64);
    const lit = Math.round(cores * Math.min(1, w.if / cap));
    const areaW = cw - 4, areaH = y + ch - barH - 3 - top;
    const per = Math.max(1, Math.ceil(Math.sqrt(cores * areaW / Math.max(1, areaH))));
    const sq = Math.floor(Math.min(areaW / per, areaH / Math.ceil(cores / per))) - 1;
    if (sq >= 2) {
      for (let i = 0; i < cores; i++) {
        ctx.fillStyle = i < lit ? "#d29922" : "#2d3744";
        ctx.fillRect(x + 2 + (i % per) * (sq + 1), top + Math.floor(i / per) * (sq + 1), sq, sq);
      }
    } else if (areaH >= 1) {
      ctx.fillStyle = "#2d3744"; ctx.fillRect(x + 2, top, areaW, areaH);
      ctx.fillStyle = "#d29922"; ctx.fillRect(x + 2, top, Math.round(areaW * lit / cores), areaH);
    }
    // Credits (green) and in flight (amber) out of the capacity.
    const bw = cw - 4, by = y + ch - barH - 1;
    ctx.fillStyle = "#0b0e13"; ctx.fillRect(x + 2, by, bw, barH);
    const crW = Math.round(bw * Math.min(1, w.cr / cap)), flW = Math.round(bw * Math.min(1, w.if / cap));
    ctx.fillStyle = "#2ea043"; ctx.fillRect(x + 2, by, crW, barH);
    ctx.fillStyle = "#d29922"; ctx.fillRect(x + 2 + crW, by, Math.min(flW, bw - crW), barH);
    if (gone) {
      ctx.strokeStyle = "#f85149"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x + cw, y + ch); ctx.moveTo(x + cw, y); ctx.lineTo(x, y + ch); ctx.stroke();
    }
  }

  // ---- particles on #fx ----
  let fxClear = true;
  function drawParticles(now) {
    for (let i = pending.length - 1; i >= 0; i--) {
      if (pending[i].t0 <= now) { particles.push(pending[i]); pending[i] = pending[pending.length - 1]; pending.pop(); }
    }
    if (particles.length === 0) {
      if (!fxClear) { fctx.setTransform(1, 0, 0, 1, 0, 0); fctx.clearRect(0, 0, fx.width, fx.height); fxClear = true; }
      return;
    }
    fctx.setTransform(1, 0, 0, 1, 0, 0);
    fctx.clearRect(0, 0, fx.width, fx.height);
    fctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    fxClear = false;
    const sx = hub.x + hub.r * 0.9, sy = hub.y;
    let live = 0;
    for (let pass = 0; pass < 2; pass++) {
      fctx.fillStyle = pass ? "#3fb950" : "#58a6ff";
      for (const q of particles) {
        if (q.back !== (pass === 1) || q.dead) continue;
        const w = workers.get(q.k);
        const t = (now - q.t0) / FLIGHT_MS;
        if (!w || w.x === undefined || t >= 1) { q.dead = true; continue; }
        const e = t * t * (3 - 2 * t);
        const wx = w.x + w.cw / 2, wy = w.y + w.ch / 2;
        const a = q.back ? 1 - e : e;
        // A gentle curve between the scheduler and the cell.
        const cx = (sx + wx) / 2, cy = (sy + wy) / 2 + (q.back ? 30 : -30);
        const u = 1 - a;
        fctx.fillRect(u * u * sx + 2 * u * a * cx + a * a * wx - 2, u * u * sy + 2 * u * a * cy + a * a * wy - 2, 4, 4);
        live++;
      }
    }
    if (live !== particles.length) {
      let j = 0;
      for (const q of particles) if (!q.dead) particles[j++] = q;
      particles.length = j;
    }
  }

  // ---- the table: rebuilt when membership changes; otherwise the rows in
  // view are patched and the others when they scroll into view ----
  const visible = new Set();
  const rowObserver = window.IntersectionObserver ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      const k = e.target.styxSlot; // (Element.slot is taken)
      if (e.isIntersecting) {
        visible.add(k);
        const w = workers.get(k);
        if (w && w.stale) fillRow(w);
      } else {
        visible.delete(k);
      }
    }
  }, { root: table.parentElement, rootMargin: "100px" }) : null;

  function patchRows() {
    for (const k of rowsDirty) {
      const w = workers.get(k);
      if (!w || !w.row) continue;
      if (w.row.tr.dataset.state !== w.s) w.row.tr.dataset.state = w.s;
      if (!rowObserver || visible.has(k)) fillRow(w); else w.stale = true;
    }
    rowsDirty.clear();
  }

  function buildTable(now) {
    if (rowObserver) { rowObserver.disconnect(); visible.clear(); }
    for (const tb of table.querySelectorAll("tbody")) tb.remove();
    let tb = null, host = null;
    const frag = document.createDocumentFragment();
    for (const w of sortedWorkers()) {
      if (w.h !== host) {
        host = w.h;
        tb = document.createElement("tbody");
        tb.dataset.host = host;
        const hr = document.createElement("tr");
        hr.className = "host";
        const th = document.createElement("th");
        th.colSpan = 9; th.textContent = host || "(no host)";
        hr.append(th); tb.append(hr); frag.append(tb);
      }
      const tr = document.createElement("tr");
      tr.dataset.worker = w.id;
      tr.styxSlot = w.k;
      if (rowObserver) rowObserver.observe(tr);
      const cells = [];
      for (let i = 0; i < 9; i++) { const td = document.createElement("td"); tr.append(td); cells.push(td); }
      w.row = { tr, cells, text: [] };
      fillRow(w);
      tb.append(tr);
    }
    table.append(frag);
    rowsDirty.clear();
    tableDirty = false;
  }

  function fillRow(w) {
    const r = w.row;
    if (!r) return;
    w.stale = false;
    if (r.tr.dataset.state !== w.s) r.tr.dataset.state = w.s;
    const vals = [w.id, w.n < 0 ? "–" : String(w.n), `${w.c || "–"} (${w.cores})`, w.s,
      `${w.cr} / ${w.cap}`, String(w.if), fmt(w.b), fmt(w.r), w.m || "–"];
    for (let i = 0; i < vals.length; i++) {
      if (r.text[i] !== vals[i]) { r.text[i] = vals[i]; r.cells[i].textContent = vals[i]; }
    }
  }

  // ---- tooltip ----
  let hover = null;
  canvas.addEventListener("mousemove", (e) => {
    const rect = canvas.getBoundingClientRect();
    const mx = e.clientX - rect.left, my = e.clientY - rect.top;
    hover = null;
    for (const w of workers.values()) {
      if (w.x !== undefined && mx >= w.x && mx < w.x + w.cw && my >= w.y && my < w.y + w.ch) { hover = w; break; }
    }
    if (!hover) { tip.hidden = true; return; }
    tip.hidden = false;
    tip.textContent = tipText(hover);
    tip.style.left = Math.min(mx + 14, W - 260) + "px";
    tip.style.top = Math.min(my + 14, H - 150) + "px";
  });
  canvas.addEventListener("mouseleave", () => { hover = null; tip.hidden = true; });
  function tipText(w) {
    return `${w.id} (${w.s})\nhost ${w.h}, NUMA ${w.n < 0 ? "none" : w.n}\nCPUs ${w.c || "–"} (${w.cores})\n` +
      `credits ${w.cr} / ${w.cap}, in flight ${w.if}\nbatches ${w.b}, ${fmt(w.r)} addresses/s\nmodel ${w.m || "–"}`;
  }

  // ---- the animation loop ----
  let lastFig = 0;
  function tick(now) {
    // Workers gone long enough leave the picture.
    for (const [k, w] of workers) {
      if (w.s === "gone" && now - w.goneAt > GONE_MS) { workers.delete(k); layoutDirty = tableDirty = true; }
    }
    if (layoutDirty) timed("layout", layout);
    if (fullRedraw || dirtyCells.size || hubDirty) timed("draw", drawView);
    timed("particles", () => drawParticles(now));
    if (tableDirty) timed("table", () => buildTable(now));
    else if (rowsDirty.size) timed("table", patchRows);
    if (figuresDirty || now - lastFig > 250) { timed("figures", () => renderFigures(now)); figuresDirty = false; lastFig = now; }
    if (hover) hover = workers.get(hover.k) || null;
    if (!hover) { if (!tip.hidden) tip.hidden = true; }
    else if (hover.tipFrame !== window.styx.frames) { hover.tipFrame = window.styx.frames; tip.textContent = tipText(hover); }
    requestAnimationFrame(tick);
  }
  window.addEventListener("resize", () => { layoutDirty = true; });
  if (window.ResizeObserver) new ResizeObserver(() => { layoutDirty = true; }).observe(stage);
  connect();
  requestAnimationFrame(tick);
})();
