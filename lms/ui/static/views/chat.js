// Chat: a playground on the Responses API (POST /v1/responses, streamed and stored). Each turn continues the last
// response through `previous_response_id`; the list of conversations (the id of each one's last response) lives in
// this browser's localStorage, and a conversation reopened later is rebuilt from the server by walking that chain.
// Model and user text only ever reach the page through textContent (never innerHTML).

import { el } from "../app.js";

const CONVERSATIONS_KEY = "lms.chat.conversations";
const PRESETS_KEY = "lms.chat.presets";
const MAX_CONVERSATIONS = 100;
const MAX_CHAIN = 500; // turns walked back when a conversation is reopened
const MAX_IMAGE_BYTES = 20 * 1024 * 1024;

// --- small DOM helpers ------------------------------------------------------------------------------------------

let uniqueCounter = 0;
function uid(prefix) {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

function field(labelText, control, hint) {
  if (!control.id) control.id = uid("chat-field");
  return el("div", { class: "chat-field" }, el("label", { for: control.id, text: labelText }), control,
    hint ? el("span", { class: "muted chat-hint", text: hint }) : null);
}

function readJson(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key) || "null");
    return value === null ? fallback : value;
  } catch {
    return fallback;
  }
}

function writeJson(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or disabled: the chat still works for this page's life
  }
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function formatTime(ms) {
  const date = new Date(ms);
  const today = new Date();
  if (date.toDateString() === today.toDateString()) return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return date.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function prettyArguments(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text || "";
  }
}

function errorWords(error) {
  if (!error) return "Unknown error.";
  if (typeof error === "string") return error;
  const message = error.message || (error.error && error.error.message) || String(error);
  const code = error.code || (error.error && error.error.code);
  const status = error.status ? `HTTP ${error.status}` : "";
  const suffix = [status, code].filter(Boolean).join(", ");
  return suffix ? `${message} (${suffix})` : message;
}

function titleOf(text, images) {
  const line = (text || "").trim().split("\n")[0];
  if (line) return line.length > 60 ? `${line.slice(0, 57)}…` : line;
  return images ? "Image" : "Untitled";
}

// --- the view ---------------------------------------------------------------------------------------------------

export function mount(root, ctx) {
  const { api, stream } = ctx;

  const state = {
    conversation: null, // {id, responseId, title, model, time}
    busy: null, // {controller, message} while a response streams
    attachments: [], // data URLs waiting to be sent
    models: { loaded: [], downloaded: [] },
    opening: 0, // generation counter: a newer open/new chat wins over an older rebuild
  };

  // ---- controls ----
  const modelSelect = el("select", { "data-testid": "chat-model", name: "model" });
  const modelHint = el("span", { class: "muted chat-hint", "aria-live": "polite" });
  const presetSelect = el("select", { "data-testid": "chat-preset", name: "preset" });
  const presetName = el("input", { type: "text", placeholder: "Preset name", "data-testid": "chat-preset-name",
    maxlength: "60" });
  const presetSave = el("button", { type: "button", "data-testid": "chat-preset-save", text: "Save preset" });
  const presetDelete = el("button", { type: "button", class: "danger", "data-testid": "chat-preset-delete",
    text: "Delete preset" });
  const systemPrompt = el("textarea", { rows: "3", "data-testid": "chat-system", name: "instructions",
    placeholder: "You are a helpful assistant." });
  const temperature = el("input", { type: "number", min: "0", max: "2", step: "0.05", placeholder: "default",
    "data-testid": "chat-temperature", name: "temperature" });
  const topP = el("input", { type: "number", min: "0", max: "1", step: "0.05", placeholder: "default",
    "data-testid": "chat-top-p", name: "top_p" });
  const maxTokens = el("input", { type: "number", min: "1", step: "1", placeholder: "default",
    "data-testid": "chat-max-tokens", name: "max_output_tokens" });
  const tools = el("textarea", { rows: "3", "data-testid": "chat-tools", name: "tools", class: "chat-mono",
    placeholder: '[{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]' });

  const toolChoice = el("select", { "data-testid": "chat-tool-choice", name: "tool_choice" },
    el("option", { value: "auto", text: "auto (the model decides)" }),
    el("option", { value: "required", text: "required (must call one)" }),
    el("option", { value: "none", text: "none (no calls)" }));

  const settings = el("details", { class: "chat-settings" },
    el("summary", { text: "System prompt, sampling and presets" }),
    el("div", { class: "chat-settings-grid" },
      el("div", { class: "chat-presets" },
        field("Preset", presetSelect),
        field("Preset name", presetName),
        el("div", { class: "chat-preset-buttons" }, presetSave, presetDelete)),
      field("System prompt", systemPrompt),
      field("Function tools (JSON array, optional)", tools,
        "The model may call them; calls are shown as cards and nothing runs them."),
      el("div", { class: "chat-sampling" },
        field("Temperature", temperature),
        field("Top P", topP),
        field("Max output tokens", maxTokens)),
      field("Tool choice", toolChoice)));

  const header = el("div", { class: "chat-header card" },
    el("div", { class: "chat-model-row" }, field("Model", modelSelect), modelHint),
    settings);

  const transcript = el("div", { class: "chat-transcript", "data-testid": "chat-transcript", role: "log",
    "aria-live": "polite", "aria-label": "Conversation" });
  const emptyNote = el("p", { class: "muted chat-empty", text: "Pick a model and say something. Enter sends, Shift+Enter starts a new line." });
  transcript.append(emptyNote);

  const input = el("textarea", { rows: "3", "data-testid": "chat-input", name: "message",
    placeholder: "Message (Enter sends, Shift+Enter for a new line; paste or drop an image)" });
  const fileInput = el("input", { type: "file", accept: "image/*", multiple: true, hidden: true,
    "data-testid": "chat-file", "aria-label": "Attach images" });
  const attachButton = el("button", { type: "button", "data-testid": "chat-attach", text: "Attach image",
    "aria-label": "Attach an image" });
  const sendButton = el("button", { type: "submit", class: "primary", "data-testid": "chat-send", text: "Send" });
  const stopButton = el("button", { type: "button", class: "danger", "data-testid": "chat-stop", text: "Stop",
    disabled: true });
  const previews = el("div", { class: "chat-previews", "data-testid": "chat-previews" });
  const inputLabel = el("label", { for: uid("chat-input"), class: "chat-visually-hidden", text: "Message" });
  input.id = inputLabel.getAttribute("for");
  const composer = el("form", { class: "chat-composer card", "data-testid": "chat-composer" },
    previews, inputLabel, input,
    el("div", { class: "row chat-composer-buttons" }, attachButton, fileInput,
      el("span", { class: "chat-spacer" }), stopButton, sendButton));

  const newButton = el("button", { type: "button", class: "primary", "data-testid": "chat-new", text: "New chat" });
  const conversationList = el("ul", { class: "chat-conversations", "data-testid": "chat-conversations",
    "aria-label": "Conversations" });
  const sidebar = el("aside", { class: "chat-sidebar card" },
    newButton, el("h3", { class: "chat-sidebar-title", text: "Conversations" }), conversationList);

  const main = el("div", { class: "chat-main" }, header, transcript, composer);
  root.replaceChildren(el("div", { class: "chat-layout" }, sidebar, main));

  // ---- models ----

  function modelsFromState(data) {
    const loaded = (data && data.loaded) || [];
    const all = (data && data.models) || [];
    const loadedKeys = new Set(loaded.map((m) => m.modelKey));
    return {
      loaded: loaded.filter((m) => (m.type || "llm") === "llm").map((m) => ({
        value: m.identifier, label: m.identifier, vision: !!m.vision, status: m.status })),
      downloaded: all.filter((m) => m.type === "llm" && !loadedKeys.has(m.modelKey)).map((m) => ({
        value: m.modelKey, label: m.displayName && m.displayName !== m.modelKey ? `${m.modelKey} (${m.displayName})` : m.modelKey,
        vision: !!m.vision })),
    };
  }

  function modelsFromOpenAi(list) {
    const llms = ((list && list.data) || []).filter((m) => (m.type || "llm") === "llm");
    const vision = (m) => Array.isArray(m.capabilities) && m.capabilities.includes("vision");
    return {
      loaded: llms.filter((m) => m.loaded).map((m) => ({ value: m.id, label: m.id, vision: vision(m) })),
      downloaded: llms.filter((m) => !m.loaded).map((m) => ({ value: m.id, label: m.id, vision: vision(m) })),
    };
  }

  let modelsShown = null; // what the select holds: rebuilt only when that changes (state comes every few seconds)

  function renderModels(models, wanted) {
    state.models = models;
    const keep = wanted || modelSelect.value;
    const signature = JSON.stringify([models.loaded.map((m) => [m.value, m.label]),
      models.downloaded.map((m) => [m.value, m.label]),
      [...models.loaded, ...models.downloaded].some((m) => m.value === keep) ? "" : keep]);
    if (signature === modelsShown) {
      describeModel();
      return;
    }
    modelsShown = signature;
    const groups = [["Loaded", models.loaded], ["Downloaded (loaded on first use)", models.downloaded]];
    const nodes = [];
    const values = new Set();
    for (const [label, entries] of groups) {
      if (!entries.length) continue;
      const group = el("optgroup", { label });
      for (const entry of entries) {
        values.add(entry.value);
        group.append(el("option", { value: entry.value, text: entry.label }));
      }
      nodes.push(group);
    }
    if (keep && !values.has(keep)) { // a conversation's model that is no longer listed stays choosable
      nodes.push(el("optgroup", { label: "Other" }, el("option", { value: keep, text: keep })));
      values.add(keep);
    }
    if (!values.size) nodes.push(el("option", { value: "", text: "No chat model downloaded", disabled: true }));
    modelSelect.replaceChildren(...nodes);
    if (keep && values.has(keep)) modelSelect.value = keep;
    else if (models.loaded.length) modelSelect.value = models.loaded[0].value;
    else if (models.downloaded.length) modelSelect.value = models.downloaded[0].value;
    describeModel();
  }

  function selectedModel() {
    const value = modelSelect.value;
    return [...state.models.loaded, ...state.models.downloaded].find((m) => m.value === value) || null;
  }

  function describeModel() {
    const model = selectedModel();
    if (!model) modelHint.textContent = "";
    else if (state.models.loaded.includes(model)) modelHint.textContent = `loaded${model.status ? ` (${model.status})` : ""}`;
    else modelHint.textContent = "not loaded: the first message loads it";
  }

  modelSelect.addEventListener("change", describeModel);
  if (ctx.latest("state")) renderModels(modelsFromState(ctx.latest("state")));
  else {
    renderModels({ loaded: [], downloaded: [] });
    api("/v1/models").then((list) => {
      if (!ctx.latest("state")) renderModels(modelsFromOpenAi(list));
    }).catch(() => {});
  }
  ctx.on("state", (data) => renderModels(modelsFromState(data)));

  // ---- presets ----

  function presets() {
    const value = readJson(PRESETS_KEY, {});
    return value && typeof value === "object" && !Array.isArray(value) ? value : {};
  }

  function renderPresets(selected = presetSelect.value) {
    const names = Object.keys(presets()).sort((a, b) => a.localeCompare(b));
    presetSelect.replaceChildren(el("option", { value: "", text: "(none)" }),
      ...names.map((name) => el("option", { value: name, text: name })));
    presetSelect.value = names.includes(selected) ? selected : "";
    presetDelete.disabled = !presetSelect.value;
  }

  function currentSettings() {
    return { instructions: systemPrompt.value, temperature: temperature.value, top_p: topP.value,
      max_output_tokens: maxTokens.value, tools: tools.value, tool_choice: toolChoice.value };
  }

  function applySettings(values) {
    systemPrompt.value = values.instructions || "";
    temperature.value = values.temperature ?? "";
    topP.value = values.top_p ?? "";
    maxTokens.value = values.max_output_tokens ?? "";
    tools.value = values.tools || "";
    toolChoice.value = ["auto", "required", "none"].includes(values.tool_choice) ? values.tool_choice : "auto";
  }

  presetSelect.addEventListener("change", () => {
    const preset = presets()[presetSelect.value];
    presetDelete.disabled = !presetSelect.value;
    if (preset) {
      applySettings(preset);
      presetName.value = presetSelect.value;
    }
  });
  presetSave.addEventListener("click", () => {
    const name = presetName.value.trim() || presetSelect.value;
    if (!name) {
      ctx.toast("Name the preset first.", "error");
      presetName.focus();
      return;
    }
    writeJson(PRESETS_KEY, { ...presets(), [name]: currentSettings() });
    renderPresets(name);
    presetName.value = name;
    ctx.toast(`Preset "${name}" saved.`);
  });
  presetDelete.addEventListener("click", () => {
    const name = presetSelect.value;
    if (!name) return;
    const all = presets();
    delete all[name];
    writeJson(PRESETS_KEY, all);
    renderPresets("");
    presetName.value = "";
    ctx.toast(`Preset "${name}" deleted.`);
  });
  renderPresets("");

  // ---- conversations (sidebar) ----

  function conversations() {
    const value = readJson(CONVERSATIONS_KEY, []);
    return Array.isArray(value) ? value.filter((c) => c && c.id && c.responseId) : [];
  }

  function saveConversation(conversation) {
    const rest = conversations().filter((c) => c.id !== conversation.id);
    writeJson(CONVERSATIONS_KEY, [conversation, ...rest].slice(0, MAX_CONVERSATIONS));
    renderConversations();
  }

  function removeConversation(id) {
    writeJson(CONVERSATIONS_KEY, conversations().filter((c) => c.id !== id));
    if (state.conversation && state.conversation.id === id) newChat();
    renderConversations();
  }

  function renderConversations() {
    const list = conversations();
    const items = list.map((c) => {
      const active = state.conversation && state.conversation.id === c.id;
      const open = el("button", { type: "button", class: "chat-conversation-open",
        "aria-current": active ? "true" : null, title: c.title || "Untitled", onclick: () => openConversation(c) },
      el("span", { class: "chat-conversation-title", text: c.title || "Untitled" }),
      el("span", { class: "muted chat-conversation-meta", text: `${c.model || ""} · ${formatTime(c.time || Date.now())}` }));
      const remove = el("button", { type: "button", class: "chat-conversation-remove",
        "aria-label": `Remove "${c.title || "Untitled"}" from the list`, title: "Remove from the list", text: "×",
        onclick: () => removeConversation(c.id) });
      return el("li", { class: active ? "chat-conversation active" : "chat-conversation",
        "data-testid": "conversation", "data-response-id": c.responseId, "data-conversation-id": c.id }, open, remove);
    });
    if (!items.length) items.push(el("li", { class: "muted chat-conversation-none", text: "No conversations yet." }));
    conversationList.replaceChildren(...items);
  }
  renderConversations();
  window.addEventListener("storage", (event) => {
    if (event.key === CONVERSATIONS_KEY) renderConversations();
    if (event.key === PRESETS_KEY) renderPresets();
  });

  // ---- transcript rendering ----

  function scrollToEnd(force = false) {
    const near = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 120;
    if (force || near) transcript.scrollTop = transcript.scrollHeight;
  }

  function addMessage(role, { model, time } = {}) {
    emptyNote.remove();
    const who = role === "user" ? "You" : role === "assistant" ? (model || "Assistant") : role;
    const body = el("div", { class: "chat-msg-body" });
    const status = el("span", { class: "badge chat-msg-status" });
    const head = el("header", { class: "chat-msg-head" },
      el("span", { class: "chat-msg-who", text: who }),
      time ? el("span", { class: "muted chat-msg-time", text: formatTime(time) }) : null,
      role === "assistant" ? status : null);
    const foot = el("footer", { class: "muted chat-msg-foot" });
    const article = el("article", { class: `chat-msg chat-msg-${role}`, "data-testid": "message", "data-role": role },
      head, body, foot);
    transcript.append(article);
    scrollToEnd(true);
    return { article, body, foot, status, parts: new Map(), deltas: 0, errorShown: false };
  }

  function setStatus(message, status, words) {
    message.article.dataset.status = status;
    message.status.textContent = words || status;
    message.status.hidden = status === "complete";
  }

  function userMessage(parts, time) {
    const message = addMessage("user", { time });
    for (const part of parts) {
      if (part.type === "input_image") {
        const url = part.image_url || "";
        if (url.startsWith("data:image/")) {
          message.body.append(el("img", { class: "chat-thumb", src: url, alt: "Attached image",
            "data-testid": "message-image" }));
        } else {
          message.body.append(el("span", { class: "muted", text: "[image]" }));
        }
      } else if (typeof part.text === "string") {
        message.body.append(el("div", { class: "chat-text", "data-testid": "message-text", text: part.text }));
      }
    }
    setStatus(message, "complete");
    return message;
  }

  function textPart(message, id) {
    let part = message.parts.get(id);
    if (!part || part.kind !== "message") {
      const node = el("div", { class: "chat-text", "data-testid": "message-text" });
      message.body.append(node);
      part = { kind: "message", node, text: "" };
      message.parts.set(id, part);
    }
    return part;
  }

  function reasoningPart(message, id) {
    let part = message.parts.get(id);
    if (!part || part.kind !== "reasoning") {
      const node = el("div", { class: "chat-reasoning-text" });
      const summary = el("summary", { text: "Reasoning" });
      const details = el("details", { class: "chat-reasoning", "data-testid": "reasoning" }, summary, node);
      message.body.append(details);
      part = { kind: "reasoning", node, summary, text: "" };
      message.parts.set(id, part);
    }
    return part;
  }

  function toolPart(message, item) {
    let part = message.parts.get(item.id);
    if (!part || part.kind !== "tool") {
      const name = el("code", { class: "chat-tool-name" });
      const args = el("pre", { class: "chat-tool-args chat-mono" });
      const output = el("pre", { class: "chat-tool-output chat-mono", hidden: true });
      const label = el("span", { class: "muted chat-tool-kind" });
      const card = el("div", { class: "chat-tool card", "data-testid": "tool-card" },
        el("div", { class: "chat-tool-head" }, label, name), args, output);
      message.body.append(card);
      part = { kind: "tool", card, name, args, output, label, text: "" };
      message.parts.set(item.id, part);
    }
    const kind = item.type === "mcp_call" ? `MCP tool call${item.server_label ? ` (${item.server_label})` : ""}`
      : item.type === "mcp_approval_request" ? "MCP call awaiting approval" : "Tool call";
    part.label.textContent = kind;
    part.name.textContent = item.name || "";
    part.card.dataset.toolName = item.name || "";
    if (item.call_id) part.card.dataset.callId = item.call_id;
    if (typeof item.arguments === "string" && item.arguments) {
      part.text = item.arguments;
      part.args.textContent = prettyArguments(item.arguments);
    }
    const result = item.error ? `Error: ${item.error.message || JSON.stringify(item.error)}` : item.output;
    if (result) {
      part.output.hidden = false;
      part.output.textContent = typeof result === "string" ? result : JSON.stringify(result, null, 2);
    }
    return part;
  }

  function showError(message, error) {
    if (message.errorShown) return;
    message.errorShown = true;
    message.body.append(el("div", { class: "error chat-error", role: "alert", "data-testid": "chat-error",
      text: errorWords(error) }));
    scrollToEnd();
  }

  function outputItem(message, item) {
    if (!item || !item.type) return;
    if (item.type === "message") {
      const text = (item.content || []).map((c) => c.text ?? c.refusal ?? "").join("");
      const part = textPart(message, item.id);
      if (text || !part.text) {
        part.text = text;
        part.node.textContent = text;
      }
    } else if (item.type === "reasoning") {
      const text = [...(item.content || []), ...(item.summary || [])].map((c) => c.text || "").join("");
      const part = reasoningPart(message, item.id);
      if (text) {
        part.text = text;
        part.node.textContent = text;
      }
    } else if (["function_call", "mcp_call", "mcp_approval_request"].includes(item.type)) {
      toolPart(message, item);
    } else if (item.type === "mcp_list_tools") {
      const names = (item.tools || []).map((t) => t.name).join(", ");
      message.body.append(el("div", { class: "muted chat-note",
        text: `Tools of ${item.server_label || "an MCP server"}: ${names || "none"}` }));
    }
  }

  function usageWords(response) {
    const usage = response && response.usage;
    if (!usage) return "";
    const bits = [`${usage.input_tokens} in`, `${usage.output_tokens} out`];
    const reasoning = usage.output_tokens_details && usage.output_tokens_details.reasoning_tokens;
    if (reasoning) bits.push(`${reasoning} reasoning`);
    return `tokens: ${bits.join(" · ")}`;
  }

  function finish(message, response, status) {
    if (response) {
      message.article.dataset.responseId = response.id || "";
      for (const item of response.output || []) outputItem(message, item);
    }
    const incomplete = response && response.incomplete_details && response.incomplete_details.reason;
    if (status === "incomplete") setStatus(message, "incomplete", `incomplete: ${incomplete || "stopped"}`);
    else setStatus(message, status);
    message.foot.textContent = usageWords(response);
  }

  // One streamed event into the assistant message.
  function onEvent(message, name, data, result) {
    if (!data || typeof data !== "object") return; // "[DONE]"
    const kind = data.type || name;
    switch (kind) {
      case "response.created":
      case "response.in_progress":
        if (data.response && data.response.model) message.article.dataset.model = data.response.model;
        break;
      case "response.output_item.added":
      case "response.output_item.done":
        outputItem(message, data.item);
        break;
      case "response.output_text.delta": {
        const part = textPart(message, data.item_id);
        part.text += data.delta || "";
        part.node.textContent = part.text;
        message.deltas += 1;
        message.article.dataset.deltas = String(message.deltas);
        break;
      }
      case "response.reasoning.delta":
      case "response.reasoning_text.delta": {
        const part = reasoningPart(message, data.item_id);
        part.text += data.delta || "";
        part.node.textContent = part.text;
        break;
      }
      case "response.function_call_arguments.delta":
      case "response.mcp_call_arguments.delta": {
        const part = message.parts.get(data.item_id);
        if (part && part.kind === "tool") {
          part.text += data.delta || "";
          part.args.textContent = part.text;
        }
        break;
      }
      case "response.completed":
        result.response = data.response;
        result.status = "complete";
        break;
      case "response.incomplete":
        result.response = data.response;
        result.status = "incomplete";
        break;
      case "response.failed":
        result.response = data.response;
        result.status = "failed";
        showError(message, (data.response && data.response.error) || "The response failed.");
        break;
      case "error":
        result.status = "failed";
        showError(message, data.error || data);
        break;
      default:
        if (data.error && typeof data.error === "object") { // an error in another surface's shape
          result.status = "failed";
          showError(message, data.error);
        }
    }
    scrollToEnd();
  }

  // ---- attachments ----

  function renderAttachments() {
    previews.replaceChildren(...state.attachments.map((url, index) => el("figure", { class: "chat-preview",
      "data-testid": "chat-attachment" },
    el("img", { src: url, alt: `Image ${index + 1} to send`, class: "chat-thumb" }),
    el("button", { type: "button", class: "chat-preview-remove", "aria-label": `Remove image ${index + 1}`,
      text: "×", onclick: () => {
        state.attachments.splice(index, 1);
        renderAttachments();
      } }))));
    previews.hidden = !state.attachments.length;
    const model = selectedModel();
    if (state.attachments.length && model && !model.vision) {
      previews.append(el("span", { class: "muted chat-hint", text: "This model has no vision projector; the server may refuse images." }));
    }
  }

  function addFiles(files) {
    for (const file of files) {
      if (!file || !file.type || !file.type.startsWith("image/")) continue;
      if (file.size > MAX_IMAGE_BYTES) {
        ctx.toast(`${file.name || "The image"} is larger than 20 MiB.`, "error");
        continue;
      }
      const reader = new FileReader();
      reader.addEventListener("load", () => {
        state.attachments.push(String(reader.result));
        renderAttachments();
      });
      reader.addEventListener("error", () => ctx.toast("The image could not be read.", "error"));
      reader.readAsDataURL(file);
    }
  }

  function onPaste(event) {
    const items = (event.clipboardData && event.clipboardData.items) || [];
    const files = [];
    for (const item of items) {
      if (item.kind === "file" && item.type.startsWith("image/")) files.push(item.getAsFile());
    }
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  }
  input.addEventListener("paste", onPaste);
  root.dataset.pasteHandler = "true"; // tests check the handler is wired
  attachButton.addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    addFiles([...fileInput.files]);
    fileInput.value = "";
  });
  for (const target of [composer, transcript]) {
    target.addEventListener("dragover", (event) => {
      if (event.dataTransfer && [...event.dataTransfer.types].includes("Files")) {
        event.preventDefault();
        composer.classList.add("chat-drop");
      }
    });
    target.addEventListener("dragleave", () => composer.classList.remove("chat-drop"));
    target.addEventListener("drop", (event) => {
      composer.classList.remove("chat-drop");
      if (event.dataTransfer && event.dataTransfer.files.length) {
        event.preventDefault();
        addFiles([...event.dataTransfer.files]);
      }
    });
  }
  renderAttachments();

  // ---- sending ----

  function number(inputElement) {
    const text = inputElement.value.trim();
    if (!text) return undefined;
    const value = Number(text);
    return Number.isFinite(value) ? value : undefined;
  }

  function setBusy(busy) {
    state.busy = busy;
    sendButton.disabled = !!busy;
    stopButton.disabled = !busy;
    root.dataset.busy = busy ? "true" : "false";
  }

  async function send() {
    if (state.busy) return;
    const text = input.value;
    const images = [...state.attachments];
    if (!text.trim() && !images.length) return;
    const model = modelSelect.value;
    if (!model) {
      ctx.toast("Pick a model first.", "error");
      modelSelect.focus();
      return;
    }
    let toolList;
    if (tools.value.trim()) {
      try {
        toolList = JSON.parse(tools.value);
        if (!Array.isArray(toolList)) throw new Error("not an array");
      } catch {
        ctx.toast("Function tools must be a JSON array.", "error");
        settings.open = true;
        tools.focus();
        return;
      }
    }
    const content = [];
    if (text.trim()) content.push({ type: "input_text", text });
    for (const url of images) content.push({ type: "input_image", image_url: url });
    const body = { model, input: [{ type: "message", role: "user", content }], stream: true, store: true };
    if (systemPrompt.value.trim()) body.instructions = systemPrompt.value;
    const t = number(temperature);
    const p = number(topP);
    const m = number(maxTokens);
    if (t !== undefined) body.temperature = t;
    if (p !== undefined) body.top_p = p;
    if (m !== undefined) body.max_output_tokens = Math.round(m);
    if (toolList && toolList.length) {
      body.tools = toolList;
      if (toolChoice.value !== "auto") body.tool_choice = toolChoice.value;
    }
    const conversation = state.conversation;
    if (conversation) body.previous_response_id = conversation.responseId;

    input.value = "";
    state.attachments = [];
    renderAttachments();
    userMessage(content, Date.now());
    const message = addMessage("assistant", { model, time: Date.now() });
    setStatus(message, "streaming", "streaming…");
    const controller = new AbortController();
    const opening = state.opening;
    setBusy({ controller, message });
    const result = { response: null, status: null };
    try {
      await stream("/v1/responses", body, (name, data) => onEvent(message, name, data, result),
        { signal: controller.signal });
      if (!result.status) {
        result.status = "failed";
        showError(message, "The stream ended before the response was complete.");
      }
      finish(message, result.response, result.status);
    } catch (error) {
      if (controller.signal.aborted || (error && error.name === "AbortError")) {
        finish(message, null, "stopped");
        message.foot.textContent = "Stopped: this answer is not kept in the conversation.";
      } else {
        showError(message, error);
        finish(message, null, "failed");
      }
    } finally {
      setBusy(null);
    }
    const response = result.response;
    const kept = response && (result.status === "complete" || result.status === "incomplete") && response.id;
    if (kept && state.opening === opening) {
      const updated = conversation
        ? { ...conversation, responseId: response.id, model: response.model || model, time: Date.now() }
        : { id: newKey(), responseId: response.id, title: titleOf(text, images.length), model: response.model || model,
          time: Date.now() };
      state.conversation = updated;
      saveConversation(updated);
    }
    if (document.activeElement === document.body) input.focus();
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  stopButton.addEventListener("click", () => {
    if (state.busy) state.busy.controller.abort();
  });

  // ---- new chat / reopen ----

  function clearTranscript() {
    transcript.replaceChildren(emptyNote);
  }

  function newChat() {
    if (state.busy) state.busy.controller.abort();
    state.opening += 1;
    state.conversation = null;
    clearTranscript();
    renderConversations();
    input.focus();
  }
  newButton.addEventListener("click", newChat);

  async function userInputOf(responseId) {
    const items = [];
    let after = null;
    for (let page = 0; page < 20; page += 1) {
      const query = `order=asc&limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`;
      const list = await api(`/v1/responses/${encodeURIComponent(responseId)}/input_items?${query}`);
      items.push(...(list.data || []));
      if (!list.has_more || !list.last_id) break;
      after = list.last_id;
    }
    return items;
  }

  async function openConversation(conversation) {
    if (state.busy) state.busy.controller.abort();
    state.opening += 1;
    const opening = state.opening;
    state.conversation = conversation;
    renderConversations();
    clearTranscript();
    emptyNote.remove();
    const loading = el("p", { class: "muted chat-loading", text: "Loading the conversation…" });
    transcript.append(loading);
    const turns = [];
    let id = conversation.responseId;
    let missing = null;
    try {
      while (id && turns.length < MAX_CHAIN) {
        let response;
        try {
          response = await api(`/v1/responses/${encodeURIComponent(id)}`);
        } catch (error) {
          if (error && error.status === 404) {
            missing = id;
            break;
          }
          throw error;
        }
        const inputItems = await userInputOf(id);
        turns.unshift({ response, inputItems });
        id = response.previous_response_id;
        if (state.opening !== opening) return;
      }
    } catch (error) {
      if (state.opening !== opening) return;
      loading.remove();
      transcript.append(el("div", { class: "error chat-error", role: "alert", "data-testid": "chat-error",
        text: `The conversation could not be loaded: ${errorWords(error)}` }));
      return;
    }
    if (state.opening !== opening) return;
    loading.remove();
    if (missing) {
      transcript.append(el("p", { class: "muted chat-note",
        text: turns.length ? "Earlier turns are no longer stored on the server." : "This conversation is no longer stored on the server." }));
    }
    for (const { response, inputItems } of turns) {
      const time = response.created_at ? response.created_at * 1000 : undefined;
      for (const item of inputItems) {
        if (item.type === "message" && item.role === "user") userMessage(item.content || [], time);
        else if (item.type === "function_call_output") {
          const message = addMessage("tool", { time });
          message.body.append(el("pre", { class: "chat-mono chat-tool-output",
            text: typeof item.output === "string" ? item.output : JSON.stringify(item.output, null, 2) }));
          setStatus(message, "complete");
        }
      }
      const message = addMessage("assistant", { model: response.model, time });
      finish(message, response, response.status === "completed" ? "complete" : response.status || "complete");
      if (response.error) showError(message, response.error);
    }
    const last = turns.length ? turns[turns.length - 1].response : null;
    if (last) {
      if (last.model) renderModels(state.models, last.model);
      systemPrompt.value = last.instructions || "";
    }
    scrollToEnd(true);
    input.focus();
  }
}
