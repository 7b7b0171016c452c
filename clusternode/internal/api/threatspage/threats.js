// The threats page: fetches threats.json every 10 s and renders it. Every
// value from the data goes into the page as text (textContent), never as
// markup: addresses and AS names come from outside.
"use strict";

(function () {
  const REFRESH_MS = 10000;
  const TICK_MS = 1000;

  const main = document.getElementById("threats");
  const tbody = document.querySelector("#list tbody");
  const status = document.getElementById("status");

  // The server's clock minus ours, so "ago" is right even when the
  // browser's clock is off.
  let skewMs = 0;
  let lastFetch = 0;
  let lastCount = 0;
  let lastHeld = 0;

  function sampleSize() {
    const n = new URLSearchParams(window.location.search).get("n");
    return n !== null ? n : main.dataset.sample;
  }

  function plural(n, unit) {
    return n + " " + unit + (n === 1 ? "" : "s") + " ago";
  }

  // ago formats how long before now (ms) something happened.
  function ago(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 10) return "just now";
    if (s < 60) return plural(s, "second");
    const m = Math.floor(s / 60);
    if (m < 60) return plural(m, "minute");
    const h = Math.floor(m / 60);
    if (h < 48) return plural(h, "hour");
    return plural(Math.floor(h / 24), "day");
  }

  function now() {
    return Date.now() + skewMs;
  }

  function cell(row, cls) {
    const td = document.createElement("td");
    td.className = cls;
    row.appendChild(td);
    return td;
  }

  function span(parent, cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    parent.appendChild(s);
  }

  function render(data) {
    const rows = document.createDocumentFragment();
    for (const t of data.threats) {
      const tr = document.createElement("tr");
      cell(tr, "address").textContent = t.address;

      const type = cell(tr, "type");
      if (t.type) span(type, "tag", t.type);
      if (t.port) span(type, "port", " port " + t.port);

      const country = cell(tr, "country");
      country.textContent = t.country || t.isocode || "unknown";
      if (t.country && t.isocode) span(country, "iso", " (" + t.isocode + ")");

      const provider = cell(tr, "provider");
      provider.textContent = t.provider || "";
      if (t.asn) span(provider, "asn", (t.provider ? " " : "") + t.asn);

      const seen = cell(tr, "seen");
      const time = document.createElement("time");
      const when = new Date(t.last_seen_unix * 1000);
      time.dateTime = when.toISOString();
      time.title = when.toUTCString();
      time.dataset.unix = String(t.last_seen_unix);
      time.textContent = ago(now() - when.getTime());
      seen.appendChild(time);

      rows.appendChild(tr);
    }
    tbody.replaceChildren(rows);
  }

  function showStatus() {
    let text;
    if (lastHeld === 0) {
      text = "No proxies found by post-processing yet.";
    } else {
      text = "Showing " + lastCount + " of the " + lastHeld + " most recent proxies";
    }
    status.textContent = text + " · updated " + ago(Date.now() - lastFetch);
    status.className = "";
  }

  function tick() {
    for (const el of tbody.querySelectorAll("time[data-unix]")) {
      el.textContent = ago(now() - Number(el.dataset.unix) * 1000);
    }
    if (lastFetch) showStatus();
  }

  async function refresh() {
    try {
      const url = "threats.json?n=" + encodeURIComponent(sampleSize());
      const resp = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
      const data = await resp.json();
      if (!resp.ok || data.status !== "ok") {
        throw new Error(data.message || "HTTP " + resp.status);
      }
      skewMs = data.time_unix * 1000 - Date.now();
      lastFetch = Date.now();
      lastCount = data.count;
      lastHeld = data.held;
      render(data);
      showStatus();
    } catch (err) {
      status.textContent = "Could not load the list: " + err.message;
      status.className = "error";
    } finally {
      window.setTimeout(refresh, REFRESH_MS);
    }
  }

  window.setInterval(tick, TICK_MS);
  refresh();
})();
