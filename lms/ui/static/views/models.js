// Models: the downloaded models (live, from the `state` event), grouped by model with their variants. Each card
// has a Load form whose memory estimate (POST /lms/estimate) is shown before loading, Unload for its loaded
// instances, and Delete.

import { el, followState, formatBytes, formatNumber, describeError, unloadInstance } from "../app.js";

const ESTIMATE_DELAY_MS = 350;

export function mount(root, ctx) {
  const summary = el("p", { class: "muted", dataset: { testid: "models-summary" } });
  const status = el("p", { class: "empty", text: "Waiting for the daemon's live feed…" });
  const list = el("div", { class: "grid", dataset: { testid: "model-list" } });
  root.replaceChildren(
    el("div", { class: "view-header" },
      el("h1", { text: "Models" }),
      el("button", { type: "button", onclick: () => ctx.navigate("#downloads"), text: "Get a model…" })),
    summary, status, list);

  const cards = new Map(); // modelKey -> card
  let loadedSignature = "";

  function render(state) {
    const models = (state && state.models) || [];
    const loaded = (state && state.loaded) || [];
    const groups = new Map();
    for (const entry of models) {
      if (!entry || !entry.modelKey) continue;
      if (!groups.has(entry.modelKey)) groups.set(entry.modelKey, []);
      groups.get(entry.modelKey).push(entry);
    }
    for (const [key, card] of cards) {
      if (!groups.has(key)) {
        card.node.remove();
        cards.delete(key);
      }
    }
    const signature = loaded.map((m) => `${m.identifier}:${m.contextLength}:${m.parallel}`).sort().join("|");
    const loadedChanged = signature !== loadedSignature;
    loadedSignature = signature;
    let previous = null;
    for (const [key, entries] of groups) {
      let card = cards.get(key);
      if (!card) {
        card = modelCard(key, ctx);
        cards.set(key, card);
      }
      card.update(entries, loaded.filter((m) => m.modelKey === key), loadedChanged);
      // keep the DOM in the list's order without moving cards that are already in place (focus stays put)
      const expected = previous ? previous.nextSibling : list.firstChild;
      if (expected !== card.node) list.insertBefore(card.node, expected);
      previous = card.node;
    }
    const total = models.reduce((sum, entry) => sum + (entry.sizeBytes || 0), 0);
    summary.textContent = groups.size
      ? `${groups.size} model${groups.size === 1 ? "" : "s"} on disk (${formatBytes(total)}), ` +
        `${loaded.length} loaded.`
      : "";
    status.hidden = groups.size > 0;
    status.textContent = "No models downloaded yet. Find one in Downloads.";
  }

  followState(ctx, render, status);
}

function capabilityBadges(entry) {
  const badges = [el("span", { class: "badge accent", text: entry.type || "model" })];
  if (entry.format) badges.push(el("span", { class: "badge", text: entry.format.toUpperCase() }));
  if (entry.paramsString) badges.push(el("span", { class: "badge", text: `${entry.paramsString} params` }));
  if (entry.quantization && entry.quantization.name) {
    badges.push(el("span", { class: "badge", text: entry.quantization.name }));
  }
  if (entry.vision) badges.push(el("span", { class: "badge ok", dataset: { capability: "vision" }, text: "vision" }));
  if (entry.trainedForToolUse) {
    badges.push(el("span", { class: "badge ok", dataset: { capability: "tools" }, text: "tool use" }));
  }
  const capabilities = Array.isArray(entry.capabilities) ? entry.capabilities : [];
  if (entry.reasoning || capabilities.includes("reasoning")) {
    badges.push(el("span", { class: "badge ok", dataset: { capability: "reasoning" }, text: "reasoning" }));
  }
  return badges;
}

function numberField(label, name, attributes, hint) {
  const id = `f-${Math.random().toString(36).slice(2, 10)}`;
  const input = el("input", { id, name, type: "number", inputmode: "numeric", min: 1, step: 1, ...attributes });
  const field = el("div", { class: "field" }, el("label", { for: id, text: label }), input,
    hint ? el("span", { class: "hint", text: hint }) : null);
  return { field, input };
}

// A positive integer from an input, undefined when empty, NaN when invalid.
function positive(input) {
  const text = input.value.trim();
  if (!text) return undefined;
  const value = Number(text);
  return Number.isInteger(value) && value >= 1 ? value : NaN;
}

function modelCard(modelKey, ctx) {
  const title = el("h2", {});
  const keyLine = el("p", { class: "muted mono small", text: modelKey });
  const badges = el("div", { class: "badges" });
  const facts = el("dl", { class: "facts" });
  const variants = el("div", {});
  const instances = el("ul", { class: "instances", dataset: { testid: "model-instances" } });

  const variantId = `v-${Math.random().toString(36).slice(2, 10)}`;
  const variantSelect = el("select", { id: variantId, name: "variant", dataset: { testid: "variant-select" } });
  const variantField = el("div", { class: "field" }, el("label", { for: variantId, text: "Variant" }), variantSelect);
  const context = numberField("Context length", "context_length", { dataset: { testid: "context-input" } },
    "tokens");
  const parallel = numberField("Parallel", "parallel", { dataset: { testid: "parallel-input" }, max: 64 },
    "slots");
  const ttl = numberField("TTL", "ttl", { dataset: { testid: "ttl-input" }, placeholder: "none" },
    "idle seconds");
  const estimate = el("div", { class: "estimate", role: "status", "aria-live": "polite",
                               dataset: { testid: "estimate", state: "pending" }, text: "Estimating memory…" });
  const loadButton = el("button", { type: "submit", class: "primary", dataset: { testid: "load-button" },
                                    text: "Load" });
  const deleteButton = el("button", { type: "button", class: "danger", dataset: { testid: "delete-button" },
                                      text: "Delete" });
  const loadError = el("p", { class: "error", role: "alert", dataset: { testid: "load-error" }, hidden: true });
  const form = el("form", { class: "load-form", dataset: { testid: "load-form" }, "aria-label": `Load ${modelKey}` },
    el("h3", { text: "Load" }),
    el("div", { class: "fields" }, variantField, context.field, parallel.field, ttl.field),
    estimate, loadError,
    el("div", { class: "row" }, loadButton, deleteButton));
  const upstreamNote = el("p", { class: "muted", hidden: true });

  const node = el("article", { class: "card model-card", dataset: { testid: "model-card", modelKey } },
    title, keyLine, badges, facts, variants, instances, upstreamNote, form);

  let entries = [];
  let loadedHere = [];
  let busy = false; // a load or delete under way
  let verdict = "pending"; // the estimate: ok | refused | invalid | unknown | pending
  let sequence = 0;
  let timer = null;
  let instanceSignature = null;

  function selected() {
    if (entries.length > 1 && variantSelect.value) {
      return entries.find((entry) => entry.variantKey === variantSelect.value) || entries[0];
    }
    return entries[0];
  }

  function loadTarget() {
    const entry = selected();
    return entries.length > 1 ? entry.variantKey || modelKey : modelKey;
  }

  function body() {
    const result = { model: loadTarget() };
    const values = { context_length: positive(context.input), parallel: positive(parallel.input) };
    for (const [name, value] of Object.entries(values)) if (value !== undefined) result[name] = value;
    return result;
  }

  function setButton() {
    const labels = { refused: "Won't fit in memory", invalid: "Can't load: check the settings" };
    loadButton.textContent = busy === "load" ? "Loading…" : labels[verdict] || "Load";
    loadButton.disabled = Boolean(busy) || verdict === "refused" || verdict === "invalid";
    deleteButton.textContent = busy === "delete" ? "Deleting…" : "Delete";
    deleteButton.disabled = Boolean(busy) || loadedHere.length > 0;
    deleteButton.title = loadedHere.length ? "Unload it first" : "";
  }

  function showEstimate(state, content) {
    verdict = state === "ok" ? "ok" : state;
    estimate.dataset.state = state;
    estimate.className = `estimate ${state === "ok" ? "ok" : state === "refused" || state === "invalid" ? "error" : ""}`;
    estimate.replaceChildren(...content);
    setButton();
  }

  async function runEstimate() {
    const request = body();
    const entry = selected();
    if (!entry || entry.format === "upstream") return;
    if (Number.isNaN(request.context_length) || Number.isNaN(request.parallel)) {
      showEstimate("invalid", [el("strong", { text: "Context length and parallel must be whole numbers of 1 or more." })]);
      return;
    }
    const mine = ++sequence;
    estimate.dataset.state = "pending";
    estimate.setAttribute("aria-busy", "true");
    try {
      const answer = await ctx.api("/lms/estimate", request);
      if (mine !== sequence) return;
      renderEstimate(answer);
    } catch (error) {
      if (mine !== sequence) return;
      const refusal = error instanceof ctx.ApiError && error.status === 400;
      showEstimate(refusal ? "invalid" : "unknown",
        [el(refusal ? "strong" : "span", { text: `${refusal ? "" : "No estimate: "}${describeError(error)}` })]);
    } finally {
      if (mine === sequence) estimate.removeAttribute("aria-busy");
    }
  }

  const contextInput = context.input;
  const parallelInput = parallel.input;

  function renderEstimate(answer) {
    const memory = answer.memory || {};
    const parts = answer.parts || {};
    const need = memory.totalBytes;
    const room = answer.availableBytes;
    const slots = answer.parallel > 1 ? ` × ${answer.parallel} slots` : "";
    const breakdown = el("div", { class: "parts" },
      `weights ${formatBytes(parts.weights)} · KV cache ${formatBytes(parts.kvCache)} · compute ` +
      `${formatBytes(parts.computeBuffers)} · process ${formatBytes(parts.process)}` +
      (parts.prefixCache ? ` · prefix cache ${formatBytes(parts.prefixCache)}` : ""));
    const context = `${formatNumber(answer.contextLength)}-token context${slots}`;
    // what a load leaves out gets the model's load defaults, else the daemon's settings: say which
    if (!contextInput.value.trim()) contextInput.placeholder = `default: ${answer.contextLength}`;
    if (!parallelInput.value.trim() && answer.parallel) parallelInput.placeholder = `default: ${answer.parallel}`;
    if (answer.passesGuardrails === false) {
      showEstimate("refused", [
        el("strong", { text: `Won't load: needs about ${formatBytes(need)} but only ` +
          `${formatBytes(Math.max(room || 0, 0))} is available (guardrails: ${answer.guardrails}).` }),
        el("div", { text: `${context}. Use a shorter context or fewer parallel slots, unload a model, or ` +
          "turn guardrails off (lms config set guardrails off)." }),
        breakdown]);
      return;
    }
    showEstimate("ok", [
      el("strong", { text: `Estimated memory: ${formatBytes(need)}` }),
      el("span", { text: ` for a ${context}` +
        (room !== undefined ? ` · ${formatBytes(room)} available (guardrails: ${answer.guardrails})` : "") }),
      breakdown]);
  }

  function scheduleEstimate() {
    clearTimeout(timer);
    sequence += 1; // an answer already on its way is now stale
    estimate.dataset.state = "pending";
    timer = setTimeout(runEstimate, ESTIMATE_DELAY_MS);
  }

  for (const input of [context.input, parallel.input, variantSelect]) {
    input.addEventListener("input", scheduleEstimate);
    input.addEventListener("change", scheduleEstimate);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy || verdict === "refused" || verdict === "invalid") return;
    const request = body();
    const seconds = positive(ttl.input);
    if (Number.isNaN(seconds)) {
      loadError.hidden = false;
      loadError.textContent = "TTL must be a whole number of seconds.";
      return;
    }
    if (seconds !== undefined) request.ttl = seconds;
    busy = "load";
    loadError.hidden = true;
    setButton();
    try {
      const answer = await ctx.api("/lms/load", request);
      const took = answer && answer.loadTimeSeconds !== undefined ? ` in ${answer.loadTimeSeconds.toFixed(1)} s` : "";
      ctx.toast(`Loaded ${answer.identifier}${took}.`, "success");
    } catch (error) {
      loadError.hidden = false;
      loadError.textContent = `Load failed: ${describeError(error)}`;
      ctx.toast(`Could not load ${modelKey}: ${describeError(error)}`, "error");
    } finally {
      busy = false;
      setButton();
      scheduleEstimate();
    }
  });

  deleteButton.addEventListener("click", async () => {
    const size = entries.reduce((sum, entry) => sum + (entry.sizeBytes || 0), 0);
    const sure = await ctx.confirm(`Delete ${modelKey} (${formatBytes(size)}) from disk? Its files are removed.`,
      { confirmLabel: "Delete" });
    if (!sure) return;
    busy = "delete";
    setButton();
    try {
      await ctx.api("/lms/models/remove", { model: modelKey });
      ctx.toast(`Deleted ${modelKey}.`, "success");
    } catch (error) {
      ctx.toast(`Could not delete ${modelKey}: ${describeError(error)}`, "error");
    } finally {
      busy = false;
      setButton();
    }
  });

  function renderInstances() {
    const signature = loadedHere.map((m) => `${m.identifier}:${m.status}:${m.contextLength}`).join("|");
    if (signature === instanceSignature) return;
    instanceSignature = signature;
    instances.replaceChildren(...loadedHere.map((model) => {
      const button = el("button", { type: "button", class: "small", dataset: { testid: "unload-button",
                                                                               identifier: model.identifier },
                                    text: "Unload" });
      button.addEventListener("click", () => unloadInstance(model.identifier, button));
      return el("li", { dataset: { testid: "model-instance", identifier: model.identifier } },
        el("span", { class: "badge ok", text: "loaded" }),
        el("span", { class: "mono", text: model.identifier }),
        el("span", { class: "muted small", text: `${formatNumber(model.contextLength)} ctx · ${model.status}` }),
        button);
    }));
    instances.hidden = loadedHere.length === 0;
  }

  function update(newEntries, loaded, loadedChanged) {
    const firstTime = entries.length === 0;
    const variantKeys = newEntries.map((entry) => entry.variantKey || entry.modelKey).join("|");
    const variantsChanged = variantKeys !== entries.map((entry) => entry.variantKey || entry.modelKey).join("|");
    entries = newEntries;
    loadedHere = loaded;
    const entry = selected();
    title.textContent = entry.displayName || modelKey;
    badges.replaceChildren(...capabilityBadges(entry));
    const size = entries.length > 1 ? `${formatBytes(entry.sizeBytes)} (this variant)` : formatBytes(entry.sizeBytes);
    const rows = [["Size", size], ["Parameters", entry.paramsString || "—"],
      ["Architecture", entry.architecture || "—"], ["Max context", `${formatNumber(entry.maxContextLength)} tokens`],
      ["Publisher", entry.publisher || "—"]];
    facts.replaceChildren(...rows.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: value })]));
    if (variantsChanged) {
      const before = variantSelect.value;
      variantSelect.replaceChildren(...entries.map((item) => el("option", {
        value: item.variantKey || item.modelKey,
        text: `${(item.variantKey || item.modelKey).split("@")[1] || item.variantKey} — ${formatBytes(item.sizeBytes)}`,
      })));
      if (before && entries.some((item) => item.variantKey === before)) variantSelect.value = before;
      variantField.hidden = entries.length < 2;
      variants.replaceChildren(entries.length > 1 ? el("p", { class: "muted small",
        text: `${entries.length} variants: ${entries.map((item) => `${(item.variantKey || "").split("@")[1] ||
          item.variantKey} (${formatBytes(item.sizeBytes)})`).join(", ")}` }) : "");
    }
    const upstream = entry.format === "upstream";
    form.hidden = upstream;
    upstreamNote.hidden = !upstream;
    upstreamNote.textContent = upstream ? "Served by an upstream server (lms upstream); it loads there." : "";
    parallel.field.hidden = entry.type !== "llm";
    context.input.max = entry.maxContextLength || "";
    if (!context.input.placeholder) context.input.placeholder = "default";
    renderInstances();
    setButton();
    if (!upstream && (firstTime || variantsChanged || loadedChanged)) scheduleEstimate();
  }

  return { node, update };
}
