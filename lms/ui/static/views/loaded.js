// Loaded: each loaded model, live from the `state` event: status, context, slots, queue, TTL left (counted down
// here between updates), its worker's memory, engine and place; Unload.

import { el, followState, formatBytes, formatDuration, formatNumber, describeError, unloadInstance } from "../app.js";

const STATUS_TEXT = {
  idle: "idle",
  processingPrompt: "reading prompt",
  generating: "generating",
  computingEmbedding: "embedding",
  loading: "loading",
};

export function mount(root, ctx) {
  const unloadAll = el("button", { type: "button", class: "danger", dataset: { testid: "unload-all" },
                                   text: "Unload all", hidden: true });
  const status = el("p", { class: "empty", text: "Waiting for the daemon's live feed…" });
  const list = el("div", { class: "grid", dataset: { testid: "loaded-list" } });
  root.replaceChildren(
    el("div", { class: "view-header" }, el("h1", { text: "Loaded models" }), unloadAll),
    status, list);

  const rows = new Map(); // identifier -> row

  unloadAll.addEventListener("click", async () => {
    const sure = await ctx.confirm(`Unload all ${rows.size} loaded models?`, { confirmLabel: "Unload all" });
    if (!sure) return;
    unloadAll.disabled = true;
    try {
      const answer = await ctx.api("/lms/unload", { all: true });
      ctx.toast(`Unloaded ${(answer && answer.unloaded || []).length} model(s).`, "success");
    } catch (error) {
      ctx.toast(`Could not unload: ${describeError(error)}`, "error");
    } finally {
      unloadAll.disabled = false;
    }
  });

  function render(state) {
    const loaded = ((state && state.loaded) || []).slice().sort((a, b) => a.identifier.localeCompare(b.identifier));
    const seen = new Set();
    let previous = null;
    for (const model of loaded) {
      seen.add(model.identifier);
      let row = rows.get(model.identifier);
      if (!row) {
        row = loadedRow(model.identifier, ctx);
        rows.set(model.identifier, row);
      }
      row.update(model);
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (expected !== row.node) list.insertBefore(row.node, expected);
      previous = row.node;
    }
    for (const [identifier, row] of rows) {
      if (!seen.has(identifier)) {
        row.node.remove();
        rows.delete(identifier);
      }
    }
    status.hidden = loaded.length > 0;
    status.textContent = "No model is loaded. Load one from the Models view.";
    unloadAll.hidden = loaded.length < 2;
  }

  // TTLs count down between updates (the daemon sends a new state only when something changes)
  setInterval(() => {
    for (const row of rows.values()) row.tick();
  }, 1000);

  followState(ctx, render, status);
}

function loadedRow(identifier, ctx) {
  const statusBadge = el("span", { class: "badge", dataset: { testid: "loaded-status" } });
  const title = el("h2", { class: "mono", text: identifier });
  const keyLine = el("p", { class: "muted small" });
  const facts = el("dl", { class: "facts" });
  const ttlValue = el("dd", { dataset: { testid: "loaded-ttl" } });
  const button = el("button", { type: "button", class: "danger", dataset: { testid: "unload-button", identifier },
                                text: "Unload" });
  const node = el("article", { class: "card loaded-row", dataset: { testid: "loaded-row", identifier } },
    el("div", { class: "row spread" }, title, statusBadge), keyLine, facts, el("div", { class: "row" }, button));

  let ttlLeftMs = null; // while idle, counting down from the last update
  let ttlRuns = false;
  let receivedAt = 0;

  button.addEventListener("click", () => unloadInstance(identifier, button));

  function ttlText() {
    if (ttlLeftMs === null) return "none";
    const left = ttlRuns ? Math.max(ttlLeftMs - (Date.now() - receivedAt), 0) : ttlLeftMs;
    return ttlRuns ? `${formatDuration(left / 1000)} left` : `${formatDuration(left / 1000)} (paused while busy)`;
  }

  function tick() {
    if (ttlRuns) ttlValue.textContent = ttlText();
  }

  function update(model) {
    const status = model.status || "idle";
    statusBadge.textContent = STATUS_TEXT[status] || status;
    statusBadge.className = `badge ${status === "idle" ? "ok" : "accent"}`;
    statusBadge.dataset.status = status;
    node.dataset.status = status;
    keyLine.textContent = `${model.modelKey}${model.displayName ? ` · ${model.displayName}` : ""}`;
    ttlLeftMs = model.ttlRemainingMs === undefined || model.ttlRemainingMs === null ? null : model.ttlRemainingMs;
    ttlRuns = ttlLeftMs !== null && status === "idle";
    receivedAt = Date.now();
    const engine = model.engine || {};
    const engineText = [engine.name, engine.version].filter(Boolean).join(" ") || "—";
    const slots = model.parallel
      ? `${model.slotsInUse ?? "?"} / ${model.parallel} in use`
      : model.slotsInUse !== undefined && model.slotsInUse !== null ? `${model.slotsInUse} in use` : "—";
    const where = model.location === "cluster" && Array.isArray(model.replicas)
      ? `cluster (${model.replicas.length} replica${model.replicas.length === 1 ? "" : "s"})`
      : model.location || "local";
    const items = [
      ["Context", `${formatNumber(model.contextLength)} tokens`, "loaded-context"],
      ["Slots", slots, "loaded-slots"],
      ["Queued", formatNumber(model.queued ?? 0), "loaded-queued"],
      ["TTL", null, "loaded-ttl"],
      ["Memory", model.memoryBytes ? formatBytes(model.memoryBytes) : "—", "loaded-memory"],
      ["Engine", engineText, "loaded-engine"],
      ["Location", where, "loaded-location"],
      ["Worker PID", model.pid ?? "—", "loaded-pid"],
    ];
    if (model.kvCacheType) items.splice(2, 0, ["KV cache", model.kvCacheType, "loaded-kv"]);
    if (model.draftModel) items.push(["Draft model", model.draftModel, "loaded-draft"]);
    ttlValue.textContent = ttlText();
    facts.replaceChildren(...items.flatMap(([name, value, testid]) => [
      el("dt", { text: name }),
      testid === "loaded-ttl" ? ttlValue : el("dd", { dataset: { testid }, text: String(value) }),
    ]));
  }

  return { node, update, tick };
}
