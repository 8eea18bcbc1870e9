"""API tokens end to end: created with the CLI, asked for by every surface of a real daemon (HTTP, SSE and the
Responses WebSocket), scopes enforced, revocation effective at once."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import httpx
import openai
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import CHAT_MODEL, Lms, free_port

CLOCK_SERVER = Path(__file__).with_name("mcp_server.py")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A daemon with an inference and an admin token; mcp.json allowed for admins."""
    lms = Lms(home=tmp_path_factory.mktemp("tokens") / "home", port=free_port(),
              settings={"LMS_ALLOW_MCP_JSON": "1"})
    lms.home.mkdir(parents=True)
    (lms.home / "mcp.json").write_text(json.dumps({"mcpServers": {
        "clock": {"command": sys.executable, "args": [str(CLOCK_SERVER), "0", "stdio", "--safe"]}}}))
    inference = json.loads(lms.run("server", "token", "create", "app", "--json").stdout)
    admin = lms.run("server", "token", "create", "ops", "--scope", "admin").stdout.strip()
    lms.run("server", "start", "-p", str(lms.port))
    yield lms, inference["token"], admin
    lms.stop()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_a_created_token_is_printed_once_and_stored_hashed(guarded):
    lms, inference, admin = guarded
    assert inference.startswith("sk-lm-") and len(inference) == len("sk-lm-") + 8 + 1 + 20
    stored = (lms.home / ".internal" / "api-tokens.json")
    assert stored.stat().st_mode & 0o777 == 0o600
    text = stored.read_text()
    assert inference.split(":")[1] not in text and admin.split(":")[1] not in text
    listed = lms.json("server", "token", "ls")
    assert [(t["name"], t["scope"]) for t in listed] == [("app", "inference"), ("ops", "admin")]
    assert all("token" not in t and "passkey_sha256" not in t for t in listed)


def test_every_http_route_needs_a_token(guarded):
    lms, inference, _ = guarded
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/responses"),
                         ("GET", "/api/v1/models"), ("GET", "/api/v0/models"), ("POST", "/v1/messages"),
                         ("GET", "/metrics"), ("POST", "/api/v1/models/load"), ("GET", "/v1/responses/resp_x")]:
        refused = httpx.request(method, lms.base_url + path, json={})
        assert refused.status_code == 401, path
        error = refused.json()["error"]
        assert error["code"] == "invalid_api_key" and "lms server token create" in error["message"]
        altered = inference[:-1] + ("Y" if inference.endswith("X") else "X")  # never the token itself
        wrong = httpx.request(method, lms.base_url + path, json={}, headers=bearer(altered))
        assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]["message"]
    assert httpx.get(lms.base_url + "/lmstudio-greeting").json() == {"lmstudio": True}
    assert httpx.get(lms.base_url + "/health").json() == {"status": "ok"}
    assert httpx.get(lms.base_url + "/v1/models", headers={"x-api-key": inference}).status_code == 200


def test_an_inference_token_generates_and_streams_but_may_not_load(guarded):
    lms, inference, admin = guarded
    client = openai.OpenAI(base_url=lms.base_url + "/v1", api_key=inference, max_retries=0, timeout=120)
    reply = client.chat.completions.create(model=CHAT_MODEL, max_tokens=4,
                                           messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content
    events = list(client.responses.create(model=CHAT_MODEL, input="Hi", max_output_tokens=4, stream=True))
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    refused = httpx.post(lms.base_url + "/api/v1/models/load", json={"model": CHAT_MODEL}, headers=bearer(inference))
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "insufficient_scope" and "'admin' scope" in error["message"] and "'app'" in error["message"]
    download = httpx.post(lms.base_url + "/api/v1/models/download", json={"model": "a/b"}, headers=bearer(inference))
    assert download.status_code == 403 and download.json()["error"]["code"] == "insufficient_scope"
    loaded = httpx.post(lms.base_url + "/api/v1/models/load", json={"model": CHAT_MODEL, "context_length": 512},
                        headers=bearer(admin), timeout=120)
    assert loaded.status_code == 200, loaded.text
    unloaded = httpx.post(lms.base_url + "/api/v1/models/unload", json={"instance_id": loaded.json()["instance_id"]},
                          headers=bearer(admin), timeout=60)
    assert unloaded.status_code == 200, unloaded.text


def test_mcp_json_servers_need_an_admin_token(guarded):
    lms, inference, admin = guarded
    body = {"model": CHAT_MODEL, "input": "hi", "max_output_tokens": 4,
            "tools": [{"type": "mcp", "server_label": "clock"}]}
    refused = httpx.post(lms.base_url + "/v1/responses", json=body, headers=bearer(inference), timeout=120)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "mcp_json_disabled"
    allowed = httpx.post(lms.base_url + "/v1/responses", json=body, headers=bearer(admin), timeout=120)
    assert allowed.status_code == 200, allowed.text
    listed = [item for item in allowed.json()["output"] if item["type"] == "mcp_list_tools"]
    assert listed and any(tool["name"] == "get_time" for tool in listed[0]["tools"])


def _socket_url(lms: Lms) -> str:
    return lms.base_url.replace("http://", "ws://") + "/v1/responses"


def _ask(socket) -> dict:
    socket.send(json.dumps({"type": "response.create", "model": "no-such-model"}))
    return json.loads(socket.recv(timeout=30))


def test_websocket_takes_a_token_in_a_header_a_subprotocol_or_the_first_message(guarded):
    lms, inference, _ = guarded
    with connect(_socket_url(lms), additional_headers=bearer(inference), open_timeout=10) as by_header:
        assert _ask(by_header)["error"]["code"] == "model_not_found"  # reached the model layer
    protocol = "bearer." + base64.urlsafe_b64encode(inference.encode()).decode().rstrip("=")
    with connect(_socket_url(lms), subprotocols=[protocol], open_timeout=10) as by_subprotocol:
        assert by_subprotocol.subprotocol == protocol  # browsers need it echoed
        assert _ask(by_subprotocol)["error"]["code"] == "model_not_found"
    with connect(_socket_url(lms), open_timeout=10) as by_message:
        by_message.send(json.dumps({"type": "auth", "token": inference}))
        assert _ask(by_message)["error"]["code"] == "model_not_found"


def test_websocket_without_a_token_is_refused_before_any_model_work(guarded):
    lms, _, _ = guarded
    with connect(_socket_url(lms), open_timeout=10) as anonymous:
        anonymous.send(json.dumps({"type": "response.create", "model": CHAT_MODEL, "input": "hi"}))
        refusal = json.loads(anonymous.recv(timeout=30))  # the first answer: no response.created before it
        assert refusal["status"] == 401 and refusal["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            anonymous.recv(timeout=30)
        assert closed.value.rcvd.code == 1008
    bad = "bearer." + base64.urlsafe_b64encode(b"sk-lm-AAAAAAAA:BBBBBBBBBBBBBBBBBBBB").decode().rstrip("=")
    with pytest.raises(InvalidStatus):  # refused at the handshake
        connect(_socket_url(lms), subprotocols=[bad], open_timeout=10).close()


def test_tokens_take_effect_and_are_revoked_while_the_server_runs(lms):
    lms.run("server", "start", "-p", str(lms.port))
    assert httpx.get(lms.base_url + "/v1/models").status_code == 200  # no token yet: open on loopback
    assert lms.json("server", "status")["tokenRequired"] is False
    token = lms.run("server", "token", "create", "late").stdout.strip()
    assert httpx.get(lms.base_url + "/v1/models").status_code == 401
    assert httpx.get(lms.base_url + "/v1/models", headers=bearer(token)).status_code == 200
    assert lms.json("server", "token", "ls")[0]["last_used"] is not None
    assert lms.json("server", "status")["tokenRequired"] is True
    revoked = lms.json("server", "token", "revoke", "late")
    assert revoked["revoked"] is True and revoked["tokens_left"] == 0
    assert httpx.get(lms.base_url + "/v1/models", headers=bearer(token)).status_code == 200  # open again: none left
    lms.run("server", "token", "create", "other")
    assert httpx.get(lms.base_url + "/v1/models", headers=bearer(token)).status_code == 401
    missing = lms.run("server", "token", "revoke", "late", check=False)
    assert missing.returncode == 1 and "No token named 'late'" in missing.stderr
