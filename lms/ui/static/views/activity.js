// Activity: the daemon's log stream (the `log` live events: prompts in, answers out, server and runtime logs),
// filtered and pausable, newest at the bottom; and plots of the last minutes of metrics drawn on <canvas>.
// Log text only ever reaches the page through textContent.

import { el, formatBytes } from "../app.js";

const MAX_ROWS = 500;
const WINDOW_MS = 5 * 60 * 1000; // what the plots show
const TEXT_PREVIEW = 600; // characters of a long entry shown before it is expanded

const TYPES = [
  { type: "llm.prediction.input", label: "Prompts in", short: "prompt" },
  { type: "llm.prediction.output", label: "Answers out", short: "answer" },
  { type: "server.log", label: "Server", short: "server" },
  { type: "runtime.log", label: "Runtime", short: "runtime" },
];

function clock(ms) {
  const date = new Date(ms);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}


function round(value, digits = 1) {
  return Number(value).toFixed(value >= 100 ? 0 : digits);
}

// What one log event says, as {level, text, detail}.
function describe(data) {
  switch (data.type) {
    case "llm.prediction.input":
      return { text: data.input || "", detail: data.modelIdentifier || "" };
    case "llm.prediction.output": {
      const stats = data.stats || {};
      const bits = [];
      if (data.modelIdentifier) bits.push(data.modelIdentifier);
      if (stats.tokensPerSecond) bits.push(`${round(stats.tokensPerSecond)} tok/s`);
      if (stats.timeToFirstTokenSec !== undefined && stats.timeToFirstTokenSec !== null) {
        bits.push(`TTFT ${Math.round(stats.timeToFirstTokenSec * 1000)} ms`);
      }
      if (stats.predictedTokensCount !== undefined && stats.predictedTokensCount !== null) {
        bits.push(`${stats.predictedTokensCount} tokens`);
      }
      if (stats.stopReason) bits.push(stats.stopReason);
      return { text: data.output || "", detail: bits.join(" · ") };
    }
    case "server.log":
      return { level: data.level, text: data.content || "" };
    case "runtime.log":
      return { level: data.level, text: data.message || "", detail: data.engineName || "" };
    case "log.dropped":
      return { level: "warning", text: `${data.count} log events were dropped (the page fell behind).` };
    default:
      return { text: JSON.stringify(data) };
  }
}

const PLOTS = [
  { name: "tokens-per-second", title: "Tokens per second", key: "tokens_per_second", kind: "dots",
    format: (v) => `${round(v)} tok/s`, lastKnown: true },
  { name: "ttft", title: "Time to first token", key: "ttft_ms", kind: "dots",
    format: (v) => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`), lastKnown: true },
  { name: "requests", title: "Requests", key: "requests", kind: "bars", format: (v) => `${v} / min`,
    perMinute: true },
  { name: "memory", title: "Worker memory", key: "memory_bytes", kind: "line", format: formatBytes },
];

export function mount(root, ctx) {
  const state = {
    entries: [], // {timestamp, data}, capped at MAX_ROWS
    paused: false,
    pending: 0, // events that arrived while paused
    points: [],
  };

  // ---- log controls ----
  const checkboxes = new Map();
  const filterBoxes = TYPES.map(({ type, label, short }) => {
    const box = el("input", { type: "checkbox", checked: true, id: `activity-type-${short}`,
      "data-testid": `log-filter-${short}`, value: type });
    checkboxes.set(type, box);
    box.addEventListener("change", rerender);
    return el("label", { class: "act-check", for: box.id }, box, ` ${label}`);
  });
  const textFilter = el("input", { type: "search", id: "activity-text-filter", placeholder: "Filter text",
    "data-testid": "log-filter-text" });
  textFilter.addEventListener("input", rerender);
  const pauseButton = el("button", { type: "button", "data-testid": "log-pause", "aria-pressed": "false",
    text: "Pause" });
  const clearButton = el("button", { type: "button", "data-testid": "log-clear", text: "Clear" });
  const counter = el("span", { class: "muted act-counter", "data-testid": "log-count", "aria-live": "polite" });
  const rows = el("div", { class: "act-log", "data-testid": "log-rows", role: "log", "aria-label": "Log stream" });
  const emptyNote = el("p", { class: "muted act-empty", text: "Waiting for log events: send a request to a model." });

  const logCard = el("section", { class: "card act-log-card", "aria-label": "Log stream" },
    el("div", { class: "row act-toolbar" },
      el("fieldset", { class: "act-types" }, el("legend", { class: "act-visually-hidden", text: "Show" }),
        ...filterBoxes),
      el("label", { for: textFilter.id, class: "act-visually-hidden", text: "Filter text" }), textFilter,
      pauseButton, clearButton, counter),
    rows);

  // ---- plots ----
  const plots = PLOTS.map((plot) => {
    const canvas = el("canvas", { class: "act-plot-canvas", "data-testid": `plot-${plot.name}`,
      role: "img", "aria-label": `${plot.title}, last 5 minutes` });
    const value = el("span", { class: "act-plot-value", "data-testid": `plot-value-${plot.name}`, text: "—" });
    const card = el("figure", { class: "card act-plot", "data-plot": plot.name },
      el("figcaption", { class: "act-plot-head" }, el("span", { class: "act-plot-title", text: plot.title }), value),
      canvas);
    return { ...plot, canvas, value, card };
  });
  const plotGrid = el("div", { class: "act-plots" }, ...plots.map((p) => p.card));

  root.replaceChildren(el("div", { class: "act-layout" }, plotGrid, logCard));

  // ---- log ----

  function visible(entry) {
    const type = entry.data.type;
    const box = checkboxes.get(type);
    if (box && !box.checked) return false;
    const needle = textFilter.value.trim().toLowerCase();
    if (!needle) return true;
    const { text, detail } = describe(entry.data);
    return `${type} ${text} ${detail || ""}`.toLowerCase().includes(needle);
  }

  function row(entry) {
    const data = entry.data;
    const { level, text, detail } = describe(data);
    const known = TYPES.find((t) => t.type === data.type);
    const long = text.length > TEXT_PREVIEW;
    // a templated prompt ends with what is new (the last user message): its tail is shown; other text its start
    const preview = () => (data.type === "llm.prediction.input" ? `…${text.slice(-TEXT_PREVIEW)}`
      : `${text.slice(0, TEXT_PREVIEW)}…`);
    const block = long || text.length > 140 || text.includes("\n"); // on its own line below the header
    const body = el("div", { class: block ? "act-row-text act-row-block" : "act-row-text", text: long ? preview() : text });
    const node = el("div", { class: `act-row act-row-${known ? known.short : "other"}${level ? ` act-level-${level}` : ""}`,
      "data-testid": "log-row", "data-type": data.type },
    el("span", { class: "muted act-row-time", text: clock(entry.timestamp || Date.now()) }),
    el("span", { class: "badge act-row-type", text: known ? known.short : data.type }),
    level && level !== "info" ? el("span", { class: "badge act-row-level", text: level }) : null,
    detail ? el("span", { class: "muted act-row-detail", text: detail }) : null,
    body);
    if (long) {
      const toggle = el("button", { type: "button", class: "act-row-more", text: "Show all",
        "aria-expanded": "false" });
      toggle.addEventListener("click", () => {
        const open = toggle.getAttribute("aria-expanded") !== "true";
        toggle.setAttribute("aria-expanded", String(open));
        toggle.textContent = open ? "Show less" : "Show all";
        body.textContent = open ? text : preview();
      });
      node.append(toggle);
    }
    return node;
  }

  // Follows the newest row unless the user scrolled up to read (also while the view is hidden).
  let follow = true;
  rows.addEventListener("scroll", () => {
    if (rows.clientHeight) follow = rows.scrollHeight - rows.scrollTop - rows.clientHeight < 60;
  });
  function toBottom() {
    if (follow) rows.scrollTop = rows.scrollHeight;
  }

  function updateCounter() {
    const shown = rows.querySelectorAll("[data-testid=log-row]").length;
    let words = `${shown} shown of ${state.entries.length}`;
    if (state.paused) words += ` · paused${state.pending ? `, ${state.pending} new` : ""}`;
    counter.textContent = words;
  }

  function rerender() {
    const nodes = state.entries.filter(visible).map(row);
    rows.replaceChildren(...(nodes.length ? nodes : [emptyNote]));
    toBottom();
    updateCounter();
  }

  function onLog(entry) {
    if (!entry || !entry.data) return;
    state.entries.push(entry);
    const overflow = state.entries.length - MAX_ROWS;
    if (overflow > 0) state.entries.splice(0, overflow);
    if (state.paused) {
      state.pending += 1;
      updateCounter();
      return;
    }
    if (!visible(entry)) {
      updateCounter();
      return;
    }
    emptyNote.remove();
    rows.append(row(entry));
    const shown = rows.querySelectorAll("[data-testid=log-row]");
    for (let i = 0; shown.length - i > MAX_ROWS; i += 1) shown[i].remove();
    toBottom();
    updateCounter();
  }

  pauseButton.addEventListener("click", () => {
    state.paused = !state.paused;
    pauseButton.textContent = state.paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", String(state.paused));
    if (!state.paused) {
      state.pending = 0;
      rerender();
    } else updateCounter();
  });
  clearButton.addEventListener("click", () => {
    state.entries = [];
    state.pending = 0;
    rerender();
  });

  rerender();
  ctx.on("log", onLog);

  // ---- metrics ----

  function setPoints(points) {
    const byTime = new Map(state.points.map((p) => [p.t, p]));
    for (const point of points || []) if (point && typeof point.t === "number") byTime.set(point.t, point);
    const newest = Math.max(0, ...byTime.keys());
    state.points = [...byTime.values()].filter((p) => p.t >= newest - WINDOW_MS).sort((a, b) => a.t - b.t);
    draw();
  }

  function current(plot) {
    const points = state.points;
    if (plot.perMinute) { // a count per interval reads better summed over the last minute
      if (!points.length) return null;
      const since = points[points.length - 1].t - 60_000;
      return points.filter((p) => p.t > since).reduce((sum, p) => sum + (p[plot.key] || 0), 0);
    }
    for (let i = points.length - 1; i >= 0; i -= 1) {
      const value = points[i][plot.key];
      if (value !== null && value !== undefined) return value;
      if (!plot.lastKnown) break;
    }
    return null;
  }

  function draw() {
    for (const plot of plots) {
      const value = current(plot);
      plot.value.textContent = value === null ? "—" : plot.format(value);
      plot.value.dataset.value = value === null ? "" : String(value);
      plot.canvas.dataset.value = value === null ? "" : String(value);
      drawPlot(plot);
    }
  }

  function drawPlot(plot) {
    const canvas = plot.canvas;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return; // hidden: drawn when shown (the ResizeObserver calls again)
    const ratio = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const g = canvas.getContext("2d");
    if (!g) return;
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    const color = style.color || "#3b82f6";
    const grid = style.borderTopColor || "rgba(128,128,128,0.3)";
    const pad = { left: 4, right: 4, top: 14, bottom: 4 };
    const w = width - pad.left - pad.right;
    const h = height - pad.top - pad.bottom;
    const now = state.points.length ? state.points[state.points.length - 1].t : Date.now();
    const start = now - WINDOW_MS;
    const values = state.points.map((p) => p[plot.key]).filter((v) => v !== null && v !== undefined);
    const top = Math.max(...values, 0) || 1;
    const x = (t) => pad.left + ((t - start) / WINDOW_MS) * w;
    const y = (v) => pad.top + h - (v / top) * h;

    g.strokeStyle = grid;
    g.lineWidth = 1;
    g.beginPath();
    g.moveTo(pad.left, pad.top + h + 0.5);
    g.lineTo(pad.left + w, pad.top + h + 0.5);
    g.moveTo(pad.left, pad.top + 0.5);
    g.lineTo(pad.left + w, pad.top + 0.5);
    g.stroke();
    g.fillStyle = color;
    g.globalAlpha = 0.7;
    g.font = "10px sans-serif";
    g.textBaseline = "top";
    g.fillText(plot.perMinute ? `max ${top} / 2 s` : `max ${plot.format(top)}`, pad.left + 2, 1);
    g.globalAlpha = 1;

    g.strokeStyle = color;
    g.fillStyle = color;
    g.lineWidth = 1.5;
    if (plot.kind === "bars") {
      const barWidth = Math.max(1, (2000 / WINDOW_MS) * w - 1);
      for (const point of state.points) {
        const value = point[plot.key];
        if (!value) continue;
        g.fillRect(x(point.t) - barWidth, y(value), barWidth, pad.top + h - y(value));
      }
    } else if (plot.kind === "line") {
      g.beginPath();
      let drawing = false;
      for (const point of state.points) {
        const value = point[plot.key];
        if (value === null || value === undefined) {
          drawing = false;
          continue;
        }
        if (drawing) g.lineTo(x(point.t), y(value));
        else g.moveTo(x(point.t), y(value));
        drawing = true;
      }
      g.stroke();
    } else {
      g.beginPath();
      let last = null;
      for (const point of state.points) {
        const value = point[plot.key];
        if (value === null || value === undefined) continue;
        if (last) g.lineTo(x(point.t), y(value));
        else g.moveTo(x(point.t), y(value));
        last = point;
      }
      g.globalAlpha = 0.4;
      g.stroke();
      g.globalAlpha = 1;
      for (const point of state.points) {
        const value = point[plot.key];
        if (value === null || value === undefined) continue;
        g.beginPath();
        g.arc(x(point.t), y(value), 2.5, 0, Math.PI * 2);
        g.fill();
      }
    }
  }

  if (typeof ResizeObserver === "function") {
    const observer = new ResizeObserver(() => draw());
    for (const plot of plots) observer.observe(plot.canvas);
  }
  const shown = () => requestAnimationFrame(() => {
    draw();
    toBottom();
  });
  window.addEventListener("hashchange", shown);
  window.addEventListener("lms:view", shown);

  const history = ctx.latest("metrics_history");
  if (Array.isArray(history)) setPoints(history);
  const latest = ctx.latest("metrics");
  if (latest) setPoints([latest]);
  ctx.on("metrics_history", (points) => setPoints(Array.isArray(points) ? points : []));
  ctx.on("metrics", (point) => setPoints([point]));
}
