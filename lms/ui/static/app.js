// The dashboard's shell: the hash router, the one live-feed connection fanned out to the views, toasts, the
// confirm dialog and the API-token prompt. Each view is a module under views/ exporting mount(root, ctx).

import { api, stream, subscribe, ApiError, token, setToken } from "./api.js";

const VIEWS = ["models", "loaded", "downloads", "chat", "activity", "server"];
const DEFAULT_VIEW = "models";
const LIVE_EVENTS = ["state", "metrics", "metrics_history", "log", "connection"]; // connection: {state, message}

// --- small helpers the views share -------------------------------------------------------------------------------

// el("div", {class: "card", dataset: {testid: "x"}, onclick: fn}, child, "text", [more children])
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function formatBytes(bytes) {
  if (bytes === undefined || bytes === null || Number.isNaN(Number(bytes))) return "—";
  let value = Number(bytes);
  const units = ["B", "KB", "MB", "GB", "TB"];
  let unit = 0;
  while (Math.abs(value) >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const digits = unit === 0 ? 0 : value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

export function formatDuration(seconds) {
  if (seconds === undefined || seconds === null || !Number.isFinite(seconds)) return "—";
  const total = Math.max(0, Math.round(seconds));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  if (hours) return `${hours}h ${String(minutes).padStart(2, "0")}m`;
  if (minutes) return `${minutes}m ${String(secs).padStart(2, "0")}s`;
  return `${secs}s`;
}

export function formatNumber(value) {
  return value === undefined || value === null ? "—" : Number(value).toLocaleString("en-US");
}

// A message for an error from api(): the server's own words, with what to do about tokens.
export function describeError(error) {
  if (!(error instanceof ApiError)) return (error && error.message) || String(error);
  const message = error.message || `HTTP ${error.status}`;
  if (error.status === 401) return `${message} Paste an API token in the Server view.`;
  if (error.code === "insufficient_scope" && !/admin/.test(message)) return `${message} This needs an admin token.`;
  return message;
}

// Unload one loaded instance from a button: the button shows the work, a toast the outcome (the lists update
// themselves from the live feed).
export async function unloadInstance(identifier, button) {
  button.disabled = true;
  button.textContent = "Unloading…";
  try {
    await api("/lms/unload", { identifier });
    toast(`Unloaded ${identifier}.`, "success");
  } catch (error) {
    button.disabled = false;
    button.textContent = "Unload";
    toast(`Could not unload ${identifier}: ${describeError(error)}`, "error");
  }
}

// --- live feed ---------------------------------------------------------------------------------------------------

const handlers = new Map(LIVE_EVENTS.map((name) => [name, new Set()]));
const latestData = new Map();
let stopFeed = null;

function dispatch(name, data) {
  latestData.set(name, data);
  for (const handler of handlers.get(name) || []) {
    try {
      handler(data);
    } catch (error) {
      console.error(`the ${name} handler failed`, error); // eslint-disable-line no-console
    }
  }
}

function setLive(state, error) {
  const node = document.getElementById("live-status");
  node.textContent = state === "live" ? "live" : "offline";
  node.classList.toggle("live", state === "live");
  node.classList.toggle("offline", state !== "live");
  node.title = state === "live" ? "Connected to the daemon's live feed" :
    `Not connected to the live feed${error ? `: ${describeError(error)}` : ""} (retrying)`;
  if (state === "live") hideAuthBanner();
  if (state !== "live" && error instanceof ApiError) authProblem(error);
  dispatch("connection", { state, message: error ? describeError(error) : null });
}

// A view draws every `state` with `render` (at once when one has come); until the first arrives, `node` says why
// the feed is not there, if it is not.
export function followState(ctx, render, node) {
  ctx.on("state", render);
  const current = ctx.latest("state");
  if (current) render(current);
  else waitForState(ctx, node);
}

function waitForState(ctx, node) {
  const show = ({ state, message }) => {
    if (ctx.latest("state")) return;
    node.classList.toggle("error", state !== "live");
    node.textContent = state === "live" ? "Waiting for the daemon's live feed…"
      : `Not connected to the daemon${message ? `: ${message.replace(/\.$/, "")}` : ""}. Retrying…`;
  };
  const stop = ctx.on("connection", show);
  if (ctx.latest("connection")) show(ctx.latest("connection"));
  const done = ctx.on("state", () => {
    node.classList.remove("error");
    stop();
    done();
  });
}

function connect() {
  if (stopFeed) stopFeed();
  stopFeed = subscribe(dispatch, { onStatus: setLive });
}

// --- API token: the prompt on 401, and a change from any view restarts the feed ------------------------------------

let bannerDismissed = false;

function authProblem(error) {
  const text = document.getElementById("auth-banner-text");
  if (error.status === 401) {
    text.textContent = token()
      ? "The API token saved in this browser was refused (revoked or mistyped). Paste a valid one."
      : "This server asks for an API token. Paste one (an admin token lets you manage models), or create one " +
        "in a terminal: lms server token create NAME --scope admin";
  } else if (error.code === "insufficient_scope") {
    text.textContent = "Your API token is an inference token: managing models needs an admin token " +
      "(lms server token create NAME --scope admin).";
  } else {
    return;
  }
  if (!bannerDismissed) document.getElementById("auth-banner").hidden = false;
}

function hideAuthBanner() {
  document.getElementById("auth-banner").hidden = true;
}

export function changeToken(value) {
  setToken(value || "");
  bannerDismissed = false;
  hideAuthBanner();
  window.dispatchEvent(new CustomEvent("lms:token-changed", { detail: { hasToken: Boolean(token()) } }));
  connect();
}

function setUpAuthBanner() {
  const form = document.getElementById("auth-banner-form");
  const input = document.getElementById("auth-token-input");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.value.trim()) {
      input.focus();
      return;
    }
    changeToken(input.value.trim());
    input.value = "";
    toast("Token saved in this browser.");
  });
  document.getElementById("auth-banner-dismiss").addEventListener("click", () => {
    bannerDismissed = true;
    hideAuthBanner();
  });
  window.addEventListener("lms:api-error", (event) => {
    const error = event.detail;
    if (error && (error.status === 401 || error.code === "insufficient_scope")) authProblem(error);
  });
}

// --- toasts and confirm ------------------------------------------------------------------------------------------

export function toast(message, kind = "info") {
  const area = document.getElementById("toasts");
  const item = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status",
                           dataset: { testid: "toast", kind } },
  el("span", { text: message }),
  el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss", text: "×",
                 onclick: () => item.remove() }));
  area.append(item);
  while (area.children.length > 5) area.firstElementChild.remove();
  setTimeout(() => item.remove(), kind === "error" ? 10000 : 5000);
}

// Resolves true when the user confirms; a real <dialog>, keyboard-usable (Escape cancels).
export function confirmAction(message, { confirmLabel = "OK", danger = true } = {}) {
  const dialog = document.getElementById("confirm-dialog");
  if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(message));
  document.getElementById("confirm-message").textContent = message;
  const ok = document.getElementById("confirm-ok");
  ok.textContent = confirmLabel;
  ok.className = danger ? "danger" : "primary";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    ok.focus();
  });
}

// --- router ------------------------------------------------------------------------------------------------------

function currentView() {
  const name = location.hash.replace(/^#\/?/, "").split(/[/?]/)[0];
  return VIEWS.includes(name) ? name : DEFAULT_VIEW;
}

function show() {
  const active = currentView();
  for (const name of VIEWS) {
    const section = document.getElementById(`view-${name}`);
    if (section) section.hidden = name !== active;
  }
  for (const link of document.querySelectorAll(".tabs a[data-view]")) {
    if (link.dataset.view === active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${active[0].toUpperCase()}${active.slice(1)} · lms`;
  window.dispatchEvent(new CustomEvent("lms:view", { detail: { view: active } }));
}

export function navigate(hash) {
  const target = hash.startsWith("#") ? hash : `#${hash}`;
  if (location.hash === target) show();
  else location.hash = target;
}

// --- start -------------------------------------------------------------------------------------------------------

const ctx = {
  api,
  stream,
  ApiError,
  on(name, handler) {
    if (!handlers.has(name)) handlers.set(name, new Set());
    handlers.get(name).add(handler);
    return () => handlers.get(name).delete(handler);
  },
  latest(name) {
    return latestData.has(name) ? latestData.get(name) : null;
  },
  toast,
  navigate,
  // beyond the shared contract, for the views that want them
  confirm: confirmAction,
  token,
  setToken: changeToken,
  describeError,
};

async function mountView(name) {
  const root = document.getElementById(`view-${name}`);
  try {
    const module = await import(`./views/${name}.js`);
    if (typeof module.mount !== "function") throw new Error("it exports no mount(root, ctx)");
    await module.mount(root, ctx);
  } catch (error) {
    console.error(`the ${name} view failed to start`, error); // eslint-disable-line no-console
    root.replaceChildren(el("div", { class: "card error", role: "alert", dataset: { testid: "view-error" } },
      el("h2", { text: `The ${name} view is not available` }),
      el("p", { text: String((error && error.message) || error) })));
  }
}

function start() {
  setUpAuthBanner();
  window.addEventListener("hashchange", show);
  show();
  connect();
  // Each view is loaded on its own: one that is missing or broken leaves the others working.
  return Promise.all(VIEWS.map(mountView)).then(show);
}

start();
