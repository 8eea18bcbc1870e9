"""The daemon's side of the dashboard, against a real daemon and the real model: its files and their headers, the
browser redirect of `/`, `--no-ui`, the live feed `/lms/events`, token routes and the access rule of the control API
over HTTP, and (in a real browser) that a page of another origin can neither drive the server nor frame the page."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.conftest import CHAT_MODEL, _new_lms, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    instance = _new_lms(tmp_path_factory.mktemp("ui-server") / "home")
    instance.run("server", "start", "-p", str(instance.port))
    yield instance
    instance.stop()


def _events(base_url: str, until, headers: dict | None = None, timeout: float = 60) -> list[tuple[str, object]]:
    """Read /lms/events until `until(events)` holds; the events read, as (name, data)."""
    events: list[tuple[str, object]] = []
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{base_url}/lms/events", headers=headers, timeout=timeout) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
                if until(events):
                    return events
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"the feed never showed what was expected; it sent {[n for n, _ in events]}")


def test_the_page_is_served_with_strict_headers_and_browsers_are_sent_to_it(server):
    page = httpx.get(f"{server.base_url}/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    script = httpx.get(f"{server.base_url}/ui/api.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{server.base_url}/ui/../lms.db").status_code == 404
    assert httpx.get(f"{server.base_url}/ui/%2e%2e/%2e%2e/pyproject.toml").status_code == 404
    assert httpx.get(f"{server.base_url}/ui/%00").status_code == 404  # no file can have such a name
    assert httpx.get(f"{server.base_url}/ui/{'a' * 300}.js").status_code == 404  # nor one this long
    browser_like = httpx.get(f"{server.base_url}/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser_like.status_code == 307 and browser_like.headers["location"] == "/ui/"
    assert httpx.get(f"{server.base_url}/").text == "Ollama is running"  # a program still gets Ollama's answer
    status = server.json("server", "status")
    assert status["ui"] is True


def test_no_ui_serves_neither_the_page_nor_the_redirect(tmp_path):
    instance = _new_lms(tmp_path / "home")
    try:
        instance.run("server", "start", "-p", str(instance.port), "--no-ui")
        assert httpx.get(f"{instance.base_url}/ui/").status_code == 404
        answer = httpx.get(f"{instance.base_url}/", headers={"Accept": "text/html"})
        assert answer.status_code == 200 and answer.text == "Ollama is running"
        assert instance.json("server", "status")["ui"] is False
    finally:
        instance.stop()


def test_the_feed_sends_state_on_change_metrics_and_the_log(server):
    def loaded_model(events):
        return any(name == "state" and any(m["modelKey"] == CHAT_MODEL for m in data["loaded"])
                   for name, data in events)

    first = _events(server.base_url, lambda events: {"state", "metrics_history"} <= {n for n, _ in events})
    state = next(data for name, data in first if name == "state")
    assert any(model["modelKey"] == CHAT_MODEL for model in state["models"]) and state["loaded"] == []

    threading.Thread(target=server.run, args=("load", CHAT_MODEL, "-y"), daemon=True).start()
    events = _events(server.base_url, loaded_model)
    model = next(m for name, data in events if name == "state" for m in data["loaded"] if m["modelKey"] == CHAT_MODEL)
    assert model["memoryBytes"] > 10 * 2**20 and model["slotsInUse"] == 0 and model["status"] == "idle"

    def ask():
        time.sleep(1)
        httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120,
                   json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Say hello."}],
                         "max_tokens": 16})

    threading.Thread(target=ask, daemon=True).start()
    events = _events(server.base_url, lambda events: any(
        name == "metrics" and data["tokens"] > 0 for name, data in events))
    kinds = {data["data"]["type"] for name, data in events if name == "log"}
    assert {"llm.prediction.input", "llm.prediction.output", "server.log"} <= kinds
    point = next(data for name, data in events if name == "metrics" and data["tokens"] > 0)
    assert point["tokens_per_second"] > 0 and point["ttft_ms"] > 0 and point["memory_bytes"] > 0
    assert point["requests"] >= 1
    history = _events(server.base_url, lambda events: any(name == "metrics_history" for name, _ in events))
    assert any(p["tokens"] > 0 for name, data in history if name == "metrics_history" for p in data)
    server.run("unload", "--all")


def test_control_routes_keep_the_public_rule_and_tokens_need_an_admin(server):
    base = server.base_url
    assert httpx.get(f"{base}/lms/ps").status_code == 200  # no token exists: as open as /api/v1/models/load
    refused = httpx.get(f"{base}/lms/tokens")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_token_required"
    admin = server.json("server", "token", "create", "ui-test-admin", "--scope", "admin")["token"]
    try:
        as_admin = {"Authorization": f"Bearer {admin}"}
        assert httpx.get(f"{base}/lms/ps").status_code == 401  # a token exists now: every route needs one
        assert httpx.get(f"{base}/ui/").status_code == 200  # but not the page's files
        created = httpx.post(f"{base}/lms/tokens/create", headers=as_admin,
                             json={"name": "from-the-page", "scope": "inference"}).json()
        assert created["token"].startswith(created["identifier"] + ":") and created["scope"] == "inference"
        listed = httpx.get(f"{base}/lms/tokens", headers=as_admin).json()
        assert {"ui-test-admin", "from-the-page"} <= {t["name"] for t in listed}
        assert all("token" not in t and "passkey_sha256" not in t for t in listed)
        inference = {"Authorization": f"Bearer {created['token']}"}
        for path in ("/lms/events", "/lms/ps", "/lms/tokens"):
            answer = httpx.get(f"{base}{path}", headers=inference)
            assert answer.status_code == 403 and answer.json()["error"]["code"] in ("insufficient_scope", None), path
        assert httpx.get(f"{base}/v1/models", headers=inference).status_code == 200
        assert httpx.post(f"{base}/lms/tokens/revoke", headers=as_admin,
                          json={"name": "from-the-page"}).json()["name"] == "from-the-page"
        assert httpx.get(f"{base}/v1/models", headers=inference).status_code == 401
        duplicate = httpx.post(f"{base}/lms/tokens/create", headers=as_admin, json={"name": "ui-test-admin"})
        assert duplicate.status_code == 409
        assert httpx.post(f"{base}/lms/tokens/create", headers=as_admin, json={"name": "x", "scope": "root"}
                          ).status_code == 400
    finally:
        server.run("server", "token", "revoke", "ui-test-admin")
    assert httpx.get(f"{base}/lms/ps").status_code == 200


class _ForeignSite(BaseHTTPRequestHandler):
    """Another website the user has open: it tries to drive the server and to frame the dashboard."""

    target = ""

    def do_GET(self):  # noqa: N802 (the http.server interface)
        page = f"""<!doctype html><body><iframe id="framed" src="{self.target}/ui/"></iframe><script>
        window.attempts = Promise.all([
          fetch("{self.target}/lms/load", {{method: "POST", headers: {{"Content-Type": "application/json"}},
            body: JSON.stringify({{model: "{CHAT_MODEL}"}})}}).then(r => "status " + r.status, e => "blocked"),
          fetch("{self.target}/lms/events").then(r => "status " + r.status, e => "blocked"),
          fetch("{self.target}/api/v1/models/load", {{method: "POST", mode: "no-cors",
            body: JSON.stringify({{model: "{CHAT_MODEL}"}})}}).then(r => "opaque", e => "blocked"),
        ]);</script></body>"""
        body = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_page_of_another_origin_cannot_drive_the_server_or_frame_the_dashboard(server, browser):
    _ForeignSite.target = server.base_url
    site = ThreadingHTTPServer(("127.0.0.1", free_port()), _ForeignSite)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        refused: list[int] = []
        page.on("response", lambda response: refused.append(response.status)
                if response.url.startswith(server.base_url) and "/ui/" not in response.url else None)
        page.goto(f"http://127.0.0.1:{site.server_address[1]}/")
        results = page.evaluate("window.attempts")
        assert all(result in ("blocked", "opaque") for result in results), results
        assert refused and all(status == 403 for status in refused), refused
        frame = page.frame_locator("#framed")
        assert frame.locator("nav").count() == 0  # the browser refused to show the dashboard in a frame
    finally:
        context.close()
        site.shutdown()
    assert server.json("ps") == []  # nothing was loaded
