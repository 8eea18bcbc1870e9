// The dashboard's only way to the daemon: the same public HTTP API every client uses, with the token the user
// gave (kept in this browser's localStorage), never a private route.

const TOKEN_KEY = "lms.token";

export function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN_KEY, value.trim());
  else localStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const result = { ...extra };
  if (token()) result["Authorization"] = `Bearer ${token()}`;
  return result;
}

// An answer that is not 2xx: `status`, and the OpenAI-shaped `error` ({message, type, code, param}) when there is one.
export class ApiError extends Error {
  constructor(status, error) {
    super((error && error.message) || `HTTP ${status}`);
    this.status = status;
    this.error = error || {};
    this.code = this.error.code || null;
  }
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body && (typeof body.error === "object" ? body.error : { message: body.error || body.message });
  const failed = new ApiError(response.status, error);
  window.dispatchEvent(new CustomEvent("lms:api-error", { detail: failed }));
  return failed;
}

// GET when `body` is undefined, else POST (or `method`) with a JSON body; resolves to the parsed JSON answer.
export async function api(path, body = undefined, { method = undefined, signal = undefined } = {}) {
  const init = { method: method || (body === undefined ? "GET" : "POST"), headers: headers(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

// Reads a text/event-stream answer and calls onEvent(name, data) for each event (data parsed as JSON when it is).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (!data.length) continue;
      const text = data.join("\n");
      let parsed = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
      onEvent(name, parsed);
    }
  }
}

// POSTs `body` to a streaming endpoint (e.g. /v1/responses with stream: true) and calls onEvent per SSE event.
// Resolves when the stream ends; rejects with ApiError when the request is refused.
export async function stream(path, body, onEvent, { signal = undefined } = {}) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await failure(response);
  await readEvents(response, onEvent);
}

// The daemon's live feed (GET /lms/events): onEvent(name, data) for `state`, `metrics`, `metrics_history` and `log`
// events, reconnecting after a pause when the connection drops. Returns a function that stops it.
export function subscribe(onEvent, { onStatus = () => {} } = {}) {
  let stopped = false;
  let controller = null;
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch("/lms/events", { headers: headers(), signal: controller.signal });
        if (!response.ok) throw await failure(response);
        onStatus("live");
        await readEvents(response, onEvent);
        if (!stopped) onStatus("offline"); // the daemon closed the feed (it stopped, or the server restarts)
      } catch (error) {
        if (stopped) return;
        onStatus("offline", error);
      }
      if (!stopped) await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
