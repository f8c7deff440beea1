// sqlstream console: polls /api/pipeline once a second and draws the pipeline.
// No framework, no build step. Data is only ever set as text (never as HTML).
"use strict";

const HISTORY = 60; // samples kept per node for the sparklines
const state = { previous: null, history: {} };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function fmt(n) {
  if (n === null || n === undefined) return "–";
  if (typeof n === "number" && !Number.isInteger(n)) return n.toLocaleString("en-US", { maximumFractionDigits: 1 });
  return Number(n).toLocaleString("en-US");
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  return s < 1 ? (s * 1000).toFixed(1) + " ms" : s.toFixed(2) + " s";
}

function counted(node) { return node.kind === "source" ? node.rows_out : node.rows_in; }

function rates(view) {
  const out = {};
  const prev = state.previous;
  for (const node of view.nodes) {
    let rate = 0;
    if (prev && prev.counts[node.id] !== undefined && view.time > prev.time) {
      rate = Math.max(0, (counted(node) - prev.counts[node.id]) / (view.time - prev.time));
    }
    out[node.id] = rate;
    const history = state.history[node.id] || (state.history[node.id] = []);
    history.push(rate);
    if (history.length > HISTORY) history.shift();
  }
  state.previous = { time: view.time, counts: Object.fromEntries(view.nodes.map((n) => [n.id, counted(n)])) };
  return out;
}

function sparkline(values, width = 90, height = 22) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const max = Math.max(1, ...values);
  const step = width / Math.max(1, HISTORY - 1);
  const offset = HISTORY - values.length;
  const points = values.map((v, i) => `${((i + offset) * step).toFixed(1)},${(height - 1 - (v / max) * (height - 2)).toFixed(1)}`);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#2563eb");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}

function drawGraph(view, rate) {
  const graph = document.getElementById("graph");
  graph.replaceChildren();
  const layers = [];
  for (const node of view.nodes) (layers[node.layer] || (layers[node.layer] = [])).push(node);
  const boxes = {};
  for (const nodes of layers) {
    if (!nodes) continue;
    const column = el("div", { class: "layer" });
    for (const node of nodes) {
      const box = el("div", { class: "node " + node.kind, "data-id": node.id },
        el("div", { class: "kind" }, node.kind),
        el("div", { class: "name" }, node.label),
        el("div", { class: "rate" }, fmt(Math.round(rate[node.id])) + " rows/s"),
        sparkline(state.history[node.id] || []));
      if (node.state_rows !== null && node.state_rows !== undefined) {
        box.append(el("div", { class: "kind" }, "state " + fmt(node.state_rows) + " rows / " + bytes(node.state_bytes)));
      }
      boxes[node.id] = box;
      column.append(box);
    }
    graph.append(column);
  }
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "edges");
  svg.setAttribute("width", graph.scrollWidth);
  svg.setAttribute("height", graph.scrollHeight);
  const origin = graph.getBoundingClientRect();
  for (const [from, to] of view.edges) {
    if (!boxes[from] || !boxes[to]) continue;
    const a = boxes[from].getBoundingClientRect();
    const b = boxes[to].getBoundingClientRect();
    const path = document.createElementNS(ns, "path");
    const x1 = a.right - origin.left + graph.scrollLeft, y1 = a.top + a.height / 2 - origin.top;
    const x2 = b.left - origin.left + graph.scrollLeft, y2 = b.top + b.height / 2 - origin.top;
    const mid = (x1 + x2) / 2;
    path.setAttribute("d", `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", "#94a3b8");
    svg.append(path);
  }
  graph.prepend(svg);
}

function fill(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map((cells) => el("tr", {}, ...cells.map((cell) =>
    cell instanceof Node ? el("td", {}, cell) : el("td", { class: typeof cell === "number" ? "num" : "" },
      typeof cell === "number" ? fmt(cell) : cell)))));
}

function render(view) {
  const rate = rates(view);
  document.getElementById("pipeline").textContent = view.pipeline;
  const status = document.getElementById("status");
  status.textContent = view.ready ? "ready" : "starting";
  status.className = "badge" + (view.ready ? " ready" : "");
  document.getElementById("updated").textContent = "updated " + new Date(view.time * 1000).toLocaleTimeString();
  drawGraph(view, rate);
  fill("sources", view.sources.map((s) => [s.name, s.rows, Math.round(rate["source:" + s.name] || 0),
    sparkline(state.history["source:" + s.name] || []), s.watermark || "–",
    s.lag_s === null ? "–" : seconds(s.lag_s) + (s.idle ? " (idle)" : ""), s.dead_letters]));
  fill("operators", view.nodes.filter((n) => n.kind !== "source").map((n) => [n.kind === "sink" ? "sink " + n.label : n.label,
    n.rows_in, n.rows_out, Math.round(rate[n.id] || 0), seconds(n.busy_s),
    n.state_rows === null ? "–" : n.state_rows, n.state_bytes === null ? "–" : bytes(n.state_bytes)]));
  fill("functions", view.functions.map((f) => [f.name, f.calls, f.rows, seconds(f.seconds), f.failed_rows]));
  fill("dead-reasons", Object.entries(view.dead_letters.by_reason).map(([reason, n]) => [reason, n]));
  fill("dead-latest", view.dead_letters.latest.map((d) => [d.at, d.source, d.reason, d.detail || "",
    el("span", { class: "raw", title: d.raw || "" }, d.raw || "")]));
  const ck = view.checkpoints;
  document.getElementById("checkpoints").textContent = ck === null ? "off" :
    `${ck.taken} taken, last epoch ${ck.last_epoch} (${fmt(ck.last_state_rows)} state rows, ${bytes(ck.last_state_bytes)}, ` +
    `${ck.last_duration_ms} ms)` + (ck.resumed_from === null ? "" : `, resumed from epoch ${ck.resumed_from}`);
}

async function poll() {
  try {
    const response = await fetch("/api/pipeline", { cache: "no-store" });
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    render(await response.json());
  } catch (error) {
    const status = document.getElementById("status");
    status.textContent = "run ended or unreachable";
    status.className = "badge down";
  }
}

poll();
setInterval(poll, 1000);
