// The convmesh operator console: polls /console/data (operator token) and draws
// inline SVG charts. The token comes once in the URL fragment (#token=...),
// which browsers never send to a server; it is kept in sessionStorage and sent
// as an Authorization header, never in a query string.
"use strict";

const POLL_MS = 2000;
const HISTORY = 60;
const SVG = "http://www.w3.org/2000/svg";
const polls = []; // [{at, data}] of the last polls, for rates and trends

function takeToken() {
  const match = /(?:^|[#&])token=([^&]+)/.exec(window.location.hash);
  if (match) {
    sessionStorage.setItem("convmesh-token", decodeURIComponent(match[1]));
    window.history.replaceState(null, "", window.location.pathname);
  }
  return sessionStorage.getItem("convmesh-token") || "";
}

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); return svg; }
function sum(obj) { return Object.values(obj || {}).reduce((a, b) => a + b, 0); }
function fmt(n) { return Number.isInteger(n) ? String(n) : n.toFixed(1); }
function stage(data, name) { return data.pipeline.services.find((s) => s.service === name); }

function rate(name) {
  if (polls.length < 2) return 0;
  const a = polls[polls.length - 2], b = polls[polls.length - 1];
  const sa = stage(a.data, name), sb = stage(b.data, name);
  if (!sa || !sb) return 0;
  return Math.max(0, (sum(sb.records_in) - sum(sa.records_in)) / ((b.at - a.at) / 1000));
}

function drawFlow(data) {
  const svg = clear(document.getElementById("flow"));
  const services = data.pipeline.services;
  const w = 1000 / services.length;
  services.forEach((s, i) => {
    const x = i * w + 10;
    const g = el("g", { class: "stage" + (s.lag > 0 ? " lagging" : ""), "data-service": s.service });
    g.appendChild(el("rect", { x, y: 20, width: w - 40, height: 110, rx: 8 }));
    g.appendChild(el("text", { x: x + 10, y: 42, "font-weight": "bold" }, s.service));
    g.appendChild(el("text", { x: x + 10, y: 64 }, `in ${fmt(sum(s.records_in))}`));
    g.appendChild(el("text", { x: x + 10, y: 82 }, `${fmt(rate(s.service))} rec/s`));
    g.appendChild(el("text", { x: x + 10, y: 100 }, `lag ${fmt(s.lag)}`));
    g.appendChild(el("text", { x: x + 10, y: 118 }, `workers ${s.workers}`));
    svg.appendChild(g);
    if (i < services.length - 1) {
      svg.appendChild(el("line", { class: "arrow", x1: x + w - 30, y1: 75, x2: x + w - 2, y2: 75 }));
    }
  });
}

function drawBars(id, values, cls) {
  const svg = clear(document.getElementById(id));
  const entries = Object.entries(values).sort((a, b) => b[1] - a[1]).slice(0, 9);
  const max = Math.max(1, ...entries.map((e) => e[1]));
  if (!entries.length) svg.appendChild(el("text", { x: 10, y: 30 }, "nothing yet"));
  entries.forEach(([label, value], i) => {
    const y = 10 + i * 23;
    svg.appendChild(el("text", { x: 0, y: y + 14 }, label));
    svg.appendChild(el("rect", { class: cls || "bar", x: 170, y, height: 17,
      width: Math.max(1, (value / max) * 250) }));
    svg.appendChild(el("text", { x: 175 + (value / max) * 250, y: y + 14 }, fmt(value)));
  });
}

function matchShares(data) {
  const s = stage(data, "identity_match");
  const m = (s && s.matches) || {};
  const total = sum(m);
  const shares = {};
  for (const [k, v] of Object.entries(m)) shares[k] = total ? v / total : 0;
  return shares;
}

function drawMatches() {
  const svg = clear(document.getElementById("matches"));
  const series = {};
  polls.forEach((h, i) => {
    for (const [k, v] of Object.entries(matchShares(h.data))) (series[k] = series[k] || [])[i] = v;
  });
  const keys = Object.keys(series).sort();
  if (!keys.length) { svg.appendChild(el("text", { x: 10, y: 30 }, "nothing yet")); return; }
  const colors = ["#4a6fd1", "#d1904a", "#5bb37a", "#a04ad1", "#d14a6f", "#4ab3d1", "#777"];
  svg.appendChild(el("line", { x1: 30, y1: 190, x2: 470, y2: 190, stroke: "#ccc" }));
  svg.appendChild(el("text", { x: 0, y: 20 }, "100%"));
  svg.appendChild(el("text", { x: 0, y: 194 }, "0%"));
  keys.forEach((k, j) => {
    const pts = series[k].map((v, i) => `${30 + (i / Math.max(1, HISTORY - 1)) * 440},${190 - (v || 0) * 170}`);
    svg.appendChild(el("polyline", { points: pts.join(" "), fill: "none", stroke: colors[j % colors.length],
      "stroke-width": 2, "data-key-type": k }));
    // Legend: four per row, with the latest share, so long key types never overlap.
    const latest = series[k][series[k].length - 1] || 0;
    svg.appendChild(el("text", { x: 30 + (j % 4) * 112, y: 214 + Math.floor(j / 4) * 16,
      fill: colors[j % colors.length] }, `${k} ${(latest * 100).toFixed(0)}%`));
  });
}

function drawLanes(data) {
  const select = document.getElementById("account");
  const accounts = Object.keys(data.lanes).sort();
  if (select.options.length !== accounts.length) {
    const current = select.value;
    select.innerHTML = "";
    for (const a of accounts) select.add(new Option(a, a));
    if (accounts.includes(current)) select.value = current;
  }
  const svg = clear(document.getElementById("lanes"));
  const days = data.lanes[select.value] || {};
  const dates = Object.keys(days).sort().slice(-10);
  if (!dates.length) { svg.appendChild(el("text", { x: 10, y: 30 }, "nothing yet")); return; }
  const lanes = ["observed", "protected", "modeled"];
  const max = Math.max(1, ...dates.flatMap((d) => lanes.map((l) => days[d][l])));
  const w = 440 / dates.length;
  dates.forEach((d, i) => {
    lanes.forEach((l, j) => {
      const h = (days[d][l] / max) * 170;
      svg.appendChild(el("rect", { class: l, x: 30 + i * w + j * (w / 3.5), y: 190 - h,
        width: w / 3.5 - 1, height: Math.max(h, 0.5), "data-lane": l, "data-date": d },
      ));
    });
    svg.appendChild(el("text", { x: 30 + i * w, y: 206 }, d.slice(5)));
  });
  svg.appendChild(el("text", { x: 0, y: 20 }, fmt(max)));
}

function drawTotals(data) {
  const ingest = stage(data, "ingest"), dedupe = stage(data, "dedupe"), attr = stage(data, "attribute");
  document.getElementById("raw-in").textContent = fmt((ingest && ingest.records_in["conversions.raw"]) || 0);
  document.getElementById("accepted").textContent = fmt((dedupe && dedupe.records_out["conversions.accepted"]) || 0);
  document.getElementById("duplicates").textContent = fmt((dedupe && dedupe.duplicates) || 0);
  const dead = data.pipeline.services.reduce((a, s) => a + sum(s.rejects), 0);
  document.getElementById("dead-letters").textContent = fmt(dead);
  document.getElementById("attributed").textContent = fmt((attr && attr.records_out["conversions.attributed"]) || 0);
}

function rejects(data) {
  const all = {};
  for (const s of data.pipeline.services) for (const [k, v] of Object.entries(s.rejects)) all[k] = (all[k] || 0) + v;
  return all;
}

async function poll(token) {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/console/data", { headers: { Authorization: `Bearer ${token}` } });
    if (response.status === 401) { status.textContent = "operator token required (open the URL `convmesh status` prints)"; status.className = "status error"; return; }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    polls.push({ at: Date.now(), data });
    if (polls.length > HISTORY) polls.shift();
    drawFlow(data); drawTotals(data); drawBars("rejects", rejects(data));
    drawMatches(); drawBars("touches", (stage(data, "attribute") || {}).touches || {}); drawLanes(data);
    status.textContent = "live"; status.className = "status ok";
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
  } catch (err) {
    status.textContent = `no data: ${err.message}`; status.className = "status error";
  }
}

const token = takeToken();
document.getElementById("account").addEventListener("change", () => polls.length && drawLanes(polls[polls.length - 1].data));
poll(token);
setInterval(() => poll(token), POLL_MS);
