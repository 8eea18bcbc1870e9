// Server: where the API answers (endpoints, port, bind, CORS, allowed hosts), the API token this browser sends,
// and, with an admin token, the daemon's settings and the API tokens (list, create, revoke).

import { el, formatNumber, describeError } from "../app.js";

const SETTINGS_SHOWN = ["allowed_hosts", "cors_origins", "guardrails", "memory_limit_bytes", "default_context_length",
  "default_parallel", "jit_loading", "jit_ttl_seconds", "max_queued_requests", "allow_remote_mcp"];

function copyButton(getText, label = "Copy") {
  const button = el("button", { type: "button", class: "small", text: label });
  button.addEventListener("click", async () => {
    const text = getText();
    let copied = false;
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch {
      copied = false;
    }
    button.textContent = copied ? "Copied" : "Select and copy";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
  return button;
}

function when(seconds) {
  if (!seconds) return "never";
  const value = typeof seconds === "number" && seconds < 1e12 ? seconds * 1000 : seconds;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(seconds) : date.toLocaleString();
}

function tokenIdentifier(secret) {
  const match = /^(sk-lm-[A-Za-z0-9]+):/.exec(secret || "");
  return match ? match[1] : null;
}

export function mount(root, ctx) {
  // --- this browser's token ---
  const tokenInput = el("input", { id: "token-input", type: "password", autocomplete: "off", spellcheck: "false",
                                   placeholder: "sk-lm-…", dataset: { testid: "token-input" } });
  const tokenState = el("p", { class: "muted", role: "status", dataset: { testid: "token-state" } });
  const saveToken = el("button", { type: "submit", class: "primary", dataset: { testid: "token-save" }, text: "Save" });
  const clearToken = el("button", { type: "button", dataset: { testid: "token-clear" }, text: "Clear" });
  const tokenForm = el("form", { class: "row", "aria-label": "API token" },
    el("label", { for: "token-input", text: "API token" }), tokenInput, saveToken, clearToken);
  const tokenCard = el("div", { class: "card stack" },
    el("h2", { text: "Your API token" }),
    el("p", { class: "small", text: "Kept in this browser only (localStorage) and sent as “Authorization: Bearer”. " +
      "Once the server has any token, the dashboard needs an admin token." }),
    tokenForm, tokenState);

  // --- where the server answers ---
  const statusBox = el("div", { dataset: { testid: "server-status" } },
    el("p", { class: "muted", text: "Reading the server's status…" }));
  const endpoints = el("div", { class: "table-wrap", dataset: { testid: "server-endpoints" } });
  const statusCard = el("div", { class: "card stack" }, el("h2", { text: "Server" }), statusBox,
    el("h3", { text: "Endpoints" }), endpoints);

  // --- settings ---
  const settingsBox = el("div", { dataset: { testid: "server-settings" } });
  const settingsCard = el("div", { class: "card stack" }, el("h2", { text: "Settings" }), settingsBox);

  // --- tokens ---
  const tokensNote = el("div", { role: "status", dataset: { testid: "tokens-note" } });
  const tokensList = el("div", { class: "table-wrap", dataset: { testid: "token-list" } });
  const nameInput = el("input", { id: "token-name", type: "text", required: true, maxlength: 64, autocomplete: "off",
                                  placeholder: "e.g. laptop", dataset: { testid: "token-name" } });
  const scopeSelect = el("select", { id: "token-scope", dataset: { testid: "token-scope" } },
    el("option", { value: "inference", text: "inference" }),
    el("option", { value: "admin", text: "admin" }));
  const createButton = el("button", { type: "submit", class: "primary", dataset: { testid: "token-create" },
                                      text: "Create token" });
  const createForm = el("form", { class: "stack", "aria-label": "Create an API token", hidden: true },
    el("h3", { text: "Create a token" }),
    el("div", { class: "fields" },
      el("div", { class: "field" }, el("label", { for: "token-name", text: "Name" }), nameInput),
      el("div", { class: "field" }, el("label", { for: "token-scope", text: "Scope" }), scopeSelect)),
    el("p", { class: "muted small", text: "inference: generate and list models. admin: also load, unload, " +
      "download, delete, manage tokens and settings." }),
    el("div", { class: "row" }, createButton));
  const secretBox = el("div", { class: "secret-box stack", hidden: true, dataset: { testid: "token-secret-box" } });
  const tokensCard = el("div", { class: "card stack" }, el("h2", { text: "API tokens" }), tokensNote, secretBox,
    tokensList, createForm);

  root.replaceChildren(el("div", { class: "view-header" }, el("h1", { text: "Server" })),
    tokenCard, statusCard, tokensCard, settingsCard);

  // --- token box ---
  function showTokenState() {
    const saved = ctx.token();
    const id = tokenIdentifier(saved);
    tokenState.textContent = saved
      ? `A token is saved in this browser${id ? ` (${id}…)` : ""}.`
      : "No token saved in this browser.";
    clearToken.disabled = !saved;
  }

  tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = tokenInput.value.trim();
    if (!value) {
      tokenInput.focus();
      return;
    }
    ctx.setToken(value);
    tokenInput.value = "";
    ctx.toast("Token saved in this browser.", "success");
  });
  clearToken.addEventListener("click", () => {
    ctx.setToken("");
    ctx.toast("Token removed from this browser.");
  });

  // --- status and endpoints ---
  async function loadStatus() {
    try {
      const status = await ctx.api("/lms/server/status");
      renderStatus(status || {});
    } catch (error) {
      statusBox.replaceChildren(el("p", { class: "error", role: "alert",
                                          text: `Could not read the server's status: ${describeError(error)}` }));
      renderEndpoints({});
    }
  }

  function renderStatus(status) {
    const corsOrigins = status.corsOrigins || status.cors_origins || [];
    const allowedHosts = status.allowedHosts || status.allowed_hosts || [];
    const cors = status.cors ? "any origin (--cors)" : corsOrigins.length ? corsOrigins.join(", ")
      : "off: only this page's own origin";
    const tokenRequired = status.tokenRequired ?? status.token_required;
    const rows = [
      ["Running", status.running === false ? "no" : "yes"],
      ["Port", status.port ?? location.port],
      ["Bind address", status.bind || "—"],
      ["CORS", cors],
      ["Allowed hosts", allowedHosts.length ? allowedHosts.join(", ")
        : "loopback names and the bound address only"],
      ["API token required", tokenRequired === undefined ? "—" : tokenRequired ? "yes" : "no"],
      ["Remote MCP", (status.allowRemoteMcp ?? status.allow_remote_mcp) ? "allowed" : "off"],
    ];
    const sdkPort = status.sdkPort ?? status.sdk_port;
    if (sdkPort) rows.push(["LM Studio SDK port", sdkPort]);
    const ollamaPort = status.ollamaPort ?? status.ollama_port;
    if (ollamaPort) rows.push(["Ollama port", ollamaPort]);
    statusBox.replaceChildren(el("dl", { class: "facts" }, ...rows.flatMap(([name, value]) => [
      el("dt", { text: name }), el("dd", { dataset: { testid: `server-${name.toLowerCase().replace(/\W+/g, "-")}` },
                                            text: String(value) })])));
    renderEndpoints(status);
  }

  function renderEndpoints(status) {
    const base = location.origin;
    const ollamaPort = status.ollamaPort ?? status.ollama_port;
    const ollama = ollamaPort ? `${location.protocol}//${location.hostname}:${ollamaPort}` : base;
    const rows = [
      ["Base URL", base, "every route"],
      ["OpenAI-compatible", `${base}/v1`, "chat/completions, completions, embeddings, responses, models"],
      ["LM Studio REST", `${base}/api/v1`, "LM Studio's native API (also /api/v0)"],
      ["Anthropic Messages", `${base}/v1/messages`, "SDK base URL: " + base],
      ["Ollama", ollama, "/api/chat, /api/generate, /api/tags…"],
      ["Prometheus metrics", `${base}/metrics`, ""],
      ["OpenAPI", `${base}/openapi.json`, ""],
    ];
    endpoints.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, el("th", { text: "API" }), el("th", { text: "URL" }), el("th", { text: "" }))),
      el("tbody", {}, ...rows.map(([name, url, note]) => el("tr", { dataset: { testid: "endpoint" } },
        el("td", {}, name, note ? el("div", { class: "muted small", text: note }) : null),
        el("td", {}, el("code", { text: url })),
        el("td", {}, copyButton(() => url)))))));
  }

  // --- settings (admin) ---
  async function loadSettings() {
    try {
      const rows = await ctx.api("/lms/config");
      const byKey = new Map((rows || []).map((row) => [row.key, row]));
      const shown = SETTINGS_SHOWN.filter((key) => byKey.has(key)).map((key) => byKey.get(key));
      const rest = (rows || []).filter((row) => !SETTINGS_SHOWN.includes(row.key));
      settingsBox.replaceChildren(
        settingsTable(shown),
        rest.length ? el("details", {}, el("summary", { text: `All settings (${rows.length})` }), settingsTable(rest))
          : null,
        el("p", { class: "muted small" }, "Change them in a terminal: ", el("code", { text: "lms config set KEY VALUE" }),
          " (docs/configuration.md)."));
    } catch (error) {
      const refused = error instanceof ctx.ApiError && (error.status === 401 || error.status === 403);
      settingsBox.replaceChildren(refused
        ? el("p", { class: "muted", text: "The daemon's settings are shown to an admin token (see API tokens)." })
        : accessNote(error, "the daemon's settings"));
    }
  }

  function settingsTable(rows) {
    return el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ...["Setting", "Value", "Source", "Applies"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows.map((row) => el("tr", { dataset: { testid: "setting-row", key: row.key } },
        el("td", { class: "mono", text: row.key }),
        el("td", { class: "mono", text: showValue(row.key, row.value) +
          (row.pending !== undefined ? ` (saved: ${showValue(row.key, row.pending)})` : "") }),
        el("td", { class: "muted", text: row.source || "" }),
        el("td", { class: "muted", text: row.applies || "" }))))));
  }

  function showValue(key, value) {
    if (value === "" || value === null || value === undefined) return "—";
    if (key.endsWith("_bytes") && typeof value === "number") return value ? formatNumber(value) : "0 (no limit)";
    return String(value);
  }

  // What to say when a token route or the settings refuse: how to get the token they need.
  function accessNote(error, what) {
    const command = el("pre", { class: "command", text: "lms server token create NAME --scope admin" });
    if (error instanceof ctx.ApiError && error.code === "admin_token_required") {
      return el("div", { class: "stack", dataset: { testid: "admin-help" } },
        el("p", { text: `Seeing ${what} from the dashboard needs an admin API token, and this server has none yet. ` +
          "Create the first one in a terminal on this machine:" }),
        command,
        el("p", { class: "small", text: "Then paste it in “Your API token” above. Note: once a token exists, every " +
          "client of this server needs one." }));
    }
    if (error instanceof ctx.ApiError && error.code === "insufficient_scope") {
      return el("div", { class: "stack", dataset: { testid: "admin-help" } },
        el("p", { class: "error", text: `Your token may not see ${what}: that needs an admin token. Create one in a ` +
          "terminal and paste it above:" }), command);
    }
    if (error instanceof ctx.ApiError && error.status === 401) {
      return el("div", { class: "stack", dataset: { testid: "admin-help" } },
        el("p", { class: "error", text: `${ctx.token() ? "The token saved in this browser was refused" :
          "This server needs an API token"}. Paste an admin token above, or create one in a terminal:` }), command);
    }
    return el("p", { class: "error", role: "alert", text: `Could not read ${what}: ${describeError(error)}` });
  }

  // --- tokens (admin) ---
  let tokenSequence = 0;

  async function loadTokens() {
    const mine = ++tokenSequence;
    try {
      const tokens = await ctx.api("/lms/tokens");
      if (mine !== tokenSequence) return;
      renderTokens(tokens || []);
      createForm.hidden = false;
      tokensNote.replaceChildren();
    } catch (error) {
      if (mine !== tokenSequence) return;
      tokensList.replaceChildren();
      createForm.hidden = true;
      tokensNote.replaceChildren(accessNote(error, "the API tokens"));
    }
  }

  function renderTokens(tokens) {
    if (!tokens.length) {
      tokensList.replaceChildren(el("p", { class: "empty", text: "No API tokens." }));
      return;
    }
    const current = tokenIdentifier(ctx.token());
    tokensList.replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, ...["Name", "Identifier", "Scope", "Created", "Last used", ""]
        .map((h) => el("th", { text: h })))),
      el("tbody", {}, ...tokens.map((item) => {
        const revoke = el("button", { type: "button", class: "danger small",
                                      dataset: { testid: "token-revoke", name: item.name }, text: "Revoke" });
        revoke.addEventListener("click", () => revokeToken(item, item.identifier === current, revoke));
        return el("tr", { dataset: { testid: "token-row", name: item.name, identifier: item.identifier } },
          el("td", {}, item.name, item.identifier === current
            ? el("span", { class: "badge accent", text: "this browser" }) : null),
          el("td", { class: "mono", text: item.identifier }),
          el("td", {}, el("span", { class: `badge ${item.scope === "admin" ? "warn" : ""}`, text: item.scope })),
          el("td", { text: when(item.created) }),
          el("td", { text: when(item.lastUsed ?? item.last_used) }),
          el("td", {}, revoke));
      }))));
  }

  async function revokeToken(item, isMine, button) {
    const warning = isMine ? " It is the token this browser uses: the dashboard will need another one." : "";
    const sure = await ctx.confirm(`Revoke the ${item.scope} token “${item.name}”? Clients using it are refused ` +
      `from their next request.${warning}`, { confirmLabel: "Revoke" });
    if (!sure) return;
    button.disabled = true;
    try {
      await ctx.api("/lms/tokens/revoke", { name: item.name });
      ctx.toast(`Revoked the token “${item.name}”.`, "success");
      if (isMine) ctx.setToken("");
      else loadTokens();
    } catch (error) {
      button.disabled = false;
      ctx.toast(`Could not revoke “${item.name}”: ${describeError(error)}`, "error");
    }
  }

  createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!name) {
      nameInput.focus();
      return;
    }
    createButton.disabled = true;
    try {
      const created = await ctx.api("/lms/tokens/create", { name, scope: scopeSelect.value });
      nameInput.value = "";
      showSecret(created);
      loadTokens();
    } catch (error) {
      ctx.toast(`Could not create the token: ${describeError(error)}`, "error");
    } finally {
      createButton.disabled = false;
    }
  });

  function showSecret(created) {
    const field = el("input", { id: "token-secret", type: "text", readonly: true, value: created.token,
                                dataset: { testid: "token-secret" }, "aria-describedby": "token-secret-warning" });
    const done = el("button", { type: "button", dataset: { testid: "token-secret-done" }, text: "Done" });
    done.addEventListener("click", () => {
      secretBox.hidden = true;
      secretBox.replaceChildren();
    });
    const use = el("button", { type: "button", text: "Use it in this browser" });
    use.addEventListener("click", () => {
      ctx.setToken(created.token);
      ctx.toast("This browser now uses the new token.", "success");
    });
    field.addEventListener("focus", () => field.select());
    secretBox.replaceChildren(
      el("p", { id: "token-secret-warning", role: "alert" },
        el("strong", { text: `The ${created.scope} token “${created.name}”: copy it now. ` }),
        "It is stored hashed and will not be shown again."),
      el("label", { for: "token-secret", class: "small", text: "Token" }),
      field,
      el("div", { class: "row" }, copyButton(() => created.token), created.scope === "admin" ? use : null, done));
    secretBox.hidden = false;
    field.focus();
  }

  // Read when the view is shown (and when the token changes while it is), never on a timer.
  let shownAt = 0;
  function refresh() {
    showTokenState();
    if (root.hidden) return;
    shownAt = Date.now();
    loadStatus();
    loadTokens();
    loadSettings();
  }

  window.addEventListener("lms:token-changed", refresh);
  window.addEventListener("lms:view", (event) => {
    const visible = event.detail && event.detail.view === "server";
    if (visible && Date.now() - shownAt > 500) refresh();
    if (!visible) {
      secretBox.hidden = true; // the secret is shown once: leaving the view forgets it
      secretBox.replaceChildren();
    }
  });
  refresh();
}
