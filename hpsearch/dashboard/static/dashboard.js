// The hpsearch dashboard: polls the server's read-only JSON API and draws SVG charts.
// No library and no network access beyond this server, so it works offline.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 1000;
let current = null;  // the selected search's name

function el(tag, attrs, parent) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, content, anchor) {
  const t = el("text", { x, y, "text-anchor": anchor || "start" }, parent);
  t.textContent = content;
  return t;
}

function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : String(+v.toFixed(4));
  return String(v);
}

function duration(s) {
  s = Math.round(s);
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
}

// A scale from a domain to a pixel range; categorical values are spread evenly.
function scale(values, lo, hi) {
  const numeric = values.every((v) => typeof v === "number");
  if (numeric) {
    let min = Math.min(...values), max = Math.max(...values);
    if (!isFinite(min)) { min = 0; max = 1; }
    if (min === max) { min -= 0.5; max += 0.5; }
    const positive = min > 0 && max / min >= 1000;  // a log scale for ranges over decades
    const f = positive ? Math.log10 : (v) => v;
    const a = f(min), b = f(max);
    const s = (v) => lo + ((f(v) - a) / (b - a)) * (hi - lo);
    s.ticks = positive ? [min, Math.sqrt(min * max), max] : [min, (min + max) / 2, max];
    return s;
  }
  const cats = [...new Set(values.map(String))];
  const s = (v) => lo + ((cats.indexOf(String(v)) + 0.5) / cats.length) * (hi - lo);
  s.ticks = cats.slice(0, 12);
  return s;
}

function color(t) {  // 0 (worst) .. 1 (best): purple -> teal -> yellow
  const stops = [[68, 1, 84], [33, 145, 140], [253, 231, 37]];
  t = Math.max(0, Math.min(1, isFinite(t) ? t : 0));
  const i = t < 0.5 ? 0 : 1, u = t < 0.5 ? t * 2 : (t - 0.5) * 2;
  const c = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * u));
  return `rgb(${c.join(",")})`;
}

function frame(container, width, height, count) {
  container.replaceChildren();
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, "data-count": count }, container);
  return svg;
}

function axes(svg, x0, y0, x1, y1, xs, ys, xlabel, ylabel) {
  const g = el("g", { class: "axis" }, svg);
  el("line", { x1: x0, y1: y1, x2: x1, y2: y1 }, g);
  el("line", { x1: x0, y1: y0, x2: x0, y2: y1 }, g);
  for (const t of xs.ticks || []) text(g, xs(t), y1 + 14, fmt(t), "middle");
  for (const t of ys.ticks || []) text(g, x0 - 4, ys(t) + 4, fmt(t), "end");
  if (xlabel) text(g, (x0 + x1) / 2, y1 + 28, xlabel, "middle");
  if (ylabel) text(g, x0, y0 - 6, ylabel, "start");
}

function drawBest(data) {
  const done = data.candidates.filter((c) => c.done !== null).sort((a, b) => a.done - b.done);
  const scored = done.filter((c) => c.score !== null);
  const svg = frame(document.getElementById("chart-best"), 760, 260, scored.length);
  if (!scored.length) { text(svg, 20, 30, "no completed candidate yet"); return; }
  const t0 = data.runs.length ? data.runs[0].started : scored[0].done;
  const xs = scale(scored.map((c) => c.done - t0).concat([0]), 60, 740);
  const ys = scale(scored.map((c) => c.score), 230, 20);
  axes(svg, 60, 20, 740, 230, xs, ys, "seconds since the search started", data.score_key);
  let best = -Infinity, path = "";
  for (const c of scored) {
    el("circle", { cx: xs(c.done - t0), cy: ys(c.score), r: 3, fill: "#9fb3c8", class: "point" }, svg);
    if (c.score > best) {
      path += (path ? `H${xs(c.done - t0)}V${ys(c.score)}` : `M${xs(c.done - t0)},${ys(c.score)}`);
      best = c.score;
    }
  }
  path += `H${xs(scored[scored.length - 1].done - t0)}`;
  el("path", { d: path, fill: "none", stroke: "#2f80ed", "stroke-width": 2, class: "best-line" }, svg);
}

function drawParams(data) {
  const container = document.getElementById("chart-params");
  container.replaceChildren();
  const scored = data.candidates.filter((c) => c.score !== null);
  for (const name of data.param_names) {
    const rows = scored.filter((c) => name in c.params);
    const div = document.createElement("div");
    container.appendChild(div);
    const svg = frame(div, 360, 220, rows.length);
    svg.setAttribute("data-param", name);
    if (!rows.length) { text(svg, 20, 30, name + ": no score yet"); continue; }
    const xs = scale(rows.map((c) => c.params[name]), 55, 345);
    const ys = scale(rows.map((c) => c.score), 185, 20);
    axes(svg, 55, 20, 345, 185, xs, ys, name, data.score_key);
    const lo = Math.min(...rows.map((c) => c.score)), hi = Math.max(...rows.map((c) => c.score));
    for (const c of rows) {
      el("circle", { cx: xs(c.params[name]), cy: ys(c.score), r: 3.5, class: "point",
        fill: color(hi > lo ? (c.score - lo) / (hi - lo) : 1), "fill-opacity": 0.8 }, svg);
    }
  }
}

function drawParallel(data) {
  const scored = data.candidates.filter((c) => c.score !== null);
  const names = data.param_names.concat(["score"]);
  const width = Math.max(400, 150 * names.length), height = 260;
  const svg = frame(document.getElementById("chart-parallel"), width, height, scored.length);
  if (!scored.length) { text(svg, 20, 30, "no completed candidate yet"); return; }
  const value = (c, n) => (n === "score" ? c.score : c.params[n]);
  const x = (i) => 50 + (i * (width - 100)) / Math.max(1, names.length - 1);
  const scales = names.map((n) => scale(scored.filter((c) => value(c, n) !== undefined).map((c) => value(c, n)), height - 30, 20));
  const lo = Math.min(...scored.map((c) => c.score)), hi = Math.max(...scored.map((c) => c.score));
  const ordered = scored.slice().sort((a, b) => a.score - b.score);  // best drawn last, on top
  for (const c of ordered) {
    const pts = names.map((n, i) => (value(c, n) === undefined ? null : `${x(i)},${scales[i](value(c, n))}`)).filter(Boolean);
    el("polyline", { points: pts.join(" "), fill: "none", class: "line", "stroke-width": 1.5, "stroke-opacity": 0.7,
      stroke: color(hi > lo ? (c.score - lo) / (hi - lo) : 1) }, svg);
  }
  names.forEach((n, i) => {
    const g = el("g", { class: "axis" }, svg);
    el("line", { x1: x(i), y1: 20, x2: x(i), y2: height - 30 }, g);
    text(g, x(i), height - 10, n === "score" ? data.score_key : n, "middle");
    for (const t of scales[i].ticks || []) text(g, x(i) + 4, scales[i](t) + 4, fmt(t));
  });
}

// Each worker gets as many lanes as it ran fits at once (its slots).
function lanes(tasks) {
  const byWorker = new Map();
  for (const t of tasks.slice().sort((a, b) => a.start - b.start)) {
    const w = t.worker || "?";
    if (!byWorker.has(w)) byWorker.set(w, []);
    const ends = byWorker.get(w);
    let lane = ends.findIndex((end) => end <= t.start + 1e-6);
    if (lane < 0) { lane = ends.length; ends.push(0); }
    ends[lane] = t.end;
    t.lane = lane;
  }
  let row = 0;
  const first = new Map();
  for (const [w, ends] of byWorker) { first.set(w, row); row += ends.length; }
  return { first, rows: row, workers: [...byWorker.keys()] };
}

function drawTimeline(data) {
  const tasks = data.tasks.map((t) => Object.assign({}, t));
  const layout = lanes(tasks);
  const row = 16, top = 10, height = top + 40 + row * Math.max(1, layout.rows);
  const svg = frame(document.getElementById("chart-timeline"), 760, height, tasks.length);
  if (!tasks.length) { text(svg, 20, 30, "no fit finished yet"); return; }
  const t0 = Math.min(...tasks.map((t) => t.start)), t1 = Math.max(...tasks.map((t) => t.end));
  const xs = scale([0, t1 - t0], 120, 740);
  const bottom = top + row * layout.rows + 6;
  const g = el("g", { class: "axis" }, svg);
  el("line", { x1: 120, y1: bottom, x2: 740, y2: bottom }, g);
  for (const t of xs.ticks) text(g, xs(t), bottom + 14, fmt(t) + "s", "middle");
  text(g, 430, bottom + 28, "seconds since the first fit started", "middle");
  for (const w of layout.workers) {
    const y = top + layout.first.get(w) * row;
    text(svg, 114, y + row - 4, w.length > 16 ? w.slice(0, 15) + "…" : w, "end");
    el("line", { x1: 120, y1: y, x2: 740, y2: y, stroke: "#e4e7eb" }, svg);
  }
  for (const t of tasks) {
    const y = top + (layout.first.get(t.worker || "?") + t.lane) * row;
    const x = Math.round(xs(t.start - t0)), w = Math.max(2, Math.round(xs(t.end - t0)) - x);
    const r = el("rect", { x, y: y + 2, width: w, height: row - 4, class: "task", "shape-rendering": "crispEdges",
      fill: t.error ? "#e12d39" : "#3ebd93", stroke: "#fff", "stroke-width": 0.5 }, svg);
    const tip = el("title", {}, r);
    tip.textContent = `candidate ${t.candidate}, fold ${t.fold}: ${fmt(t.end - t.start)}s` + (t.error ? " (failed)" : "");
  }
}

function drawFailures(data) {
  const box = document.getElementById("failures");
  document.getElementById("failures-count").textContent = data.failures.length;
  box.replaceChildren();
  for (const f of data.failures.slice(-50)) {
    const div = document.createElement("details");
    div.className = "failure";
    const summary = document.createElement("summary");
    const last = f.error.trim().split("\n").pop();
    summary.textContent = `candidate ${f.candidate}, fold ${f.fold}, worker ${f.worker}: ${last}`;
    const pre = document.createElement("pre");
    pre.textContent = f.error;
    div.append(summary, pre);
    box.appendChild(div);
  }
}

function setText(id, value) { document.getElementById(id).textContent = value; }

function render(data) {
  setText("status", data.status);
  setText("candidates-done", data.candidates_done);
  setText("candidates-total", data.total === null ? "?" : data.total);
  setText("tasks-done", data.tasks_done);
  setText("tasks-total", data.tasks_total === null ? "?" : data.tasks_total);
  setText("score-key", data.score_key);
  setText("best-score", fmt(data.best_score));
  setText("n-failures", data.n_failures);
  setText("n-workers", new Set(data.workers.map((w) => w.name)).size);
  setText("elapsed", duration(data.elapsed));
  setText("best-params", data.best_params ? JSON.stringify(data.best_params) : "-");
  const frac = data.tasks_total ? data.tasks_done / data.tasks_total : 0;
  document.getElementById("progress-bar").style.width = (100 * frac).toFixed(1) + "%";
  drawBest(data);
  drawParams(data);
  drawParallel(data);
  drawTimeline(data);
  drawFailures(data);
  setText("updated", "updated " + new Date().toLocaleTimeString());
  document.body.setAttribute("data-rendered", data.tasks_done);
}

function message(text) {
  const m = document.getElementById("message");
  m.hidden = !text;
  m.textContent = text || "";
}

async function poll() {
  try {
    const list = await (await fetch("api/searches")).json();
    if (list.error) { message(list.error); return; }
    setText("file", list.file);
    const select = document.getElementById("search");
    const names = list.searches.map((s) => s.name);
    if (select.options.length !== names.length) {
      select.replaceChildren(...names.map((n) => new Option(n, n)));
    }
    const wanted = new URLSearchParams(location.search).get("name");
    if (current === null || !names.includes(current)) current = names.includes(wanted) ? wanted : names[0];
    if (current === undefined) { current = null; message("no search in this file yet"); return; }
    select.value = current;
    const data = await (await fetch("api/search?name=" + encodeURIComponent(current))).json();
    if (data.error) { message(data.error); return; }
    message("");
    render(data);
  } catch (err) {
    message("cannot reach the dashboard server: " + err);
  }
}

document.getElementById("search").addEventListener("change", (e) => { current = e.target.value; poll(); });
poll();
setInterval(poll, POLL_MS);
