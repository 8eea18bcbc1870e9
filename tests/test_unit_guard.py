"""Unit tests of the browser defences (lms/api/guard.py) on a small app: Host (DNS rebinding) and Origin checks
for HTTP and WebSocket, and the rules for loopback, bound, wildcard and allowed hosts."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from lms.api.guard import BrowserGuard


async def hello(_request):
    return PlainTextResponse("hello")


async def echo(socket):
    await socket.accept()
    await socket.send_text("hello")
    await socket.close()


def client(**guard) -> TestClient:
    guard.setdefault("bind", "127.0.0.1")
    app = Starlette(routes=[Route("/v1/models", hello), WebSocketRoute("/ws", echo)],
                    middleware=[Middleware(BrowserGuard, **guard)])
    return TestClient(app)


@pytest.mark.parametrize("host", ["127.0.0.1:1234", "localhost:1234", "LOCALHOST", "[::1]:1234", "127.0.0.2",
                                  "app.localhost:1234"])
def test_loopback_hosts_are_served(host):
    assert client().get("/v1/models", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:1234", "192.168.1.5:1234", "", "1234"])
def test_other_hosts_are_refused_on_a_loopback_bind(host):
    response = client().get("/v1/models", headers={"host": host})
    assert response.status_code == 403 and response.json()["error"]["code"] == "host_not_allowed"


def test_a_network_bind_serves_its_address_ip_literals_on_a_wildcard_and_allowed_names():
    assert client(bind="192.168.1.5").get("/v1/models", headers={"host": "192.168.1.5:1234"}).status_code == 200
    assert client(bind="0.0.0.0").get("/v1/models", headers={"host": "10.0.0.7:1234"}).status_code == 200
    assert client(bind="0.0.0.0").get("/v1/models", headers={"host": "evil.example"}).status_code == 403
    allowed = client(bind="0.0.0.0", allowed_hosts={"studio.lan"})
    assert allowed.get("/v1/models", headers={"host": "Studio.lan:1234"}).status_code == 200


def test_foreign_origins_are_refused_and_the_own_origin_is_served():
    guarded = client()
    refused = guarded.get("/v1/models", headers={"host": "localhost:1234", "origin": "https://evil.example"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "origin_not_allowed"
    assert guarded.get("/v1/models", headers={"host": "localhost:1234", "origin": "null"}).status_code == 403
    own = guarded.get("/v1/models", headers={"host": "localhost:1234", "origin": "http://localhost:1234"})
    assert own.status_code == 200
    other_port = guarded.get("/v1/models", headers={"host": "localhost:1234", "origin": "http://localhost:5173"})
    assert other_port.status_code == 403


def test_cors_settings_allow_origins():
    listed = client(cors_origins={"http://localhost:3000"})
    trailing_slash = {"host": "localhost", "origin": "http://localhost:3000/"}
    assert listed.get("/v1/models", headers=trailing_slash).status_code == 200
    assert listed.get("/v1/models", headers={"host": "localhost", "origin": "http://localhost:3001"}).status_code == 403
    everyone = client(cors_all=True)
    assert everyone.get("/v1/models", headers={"host": "localhost", "origin": "https://any.example"}).status_code == 200


def test_websocket_handshakes_are_guarded_too():
    guarded = client()
    with guarded.websocket_connect("/ws", headers={"host": "localhost"}) as socket:
        assert socket.receive_text() == "hello"
    for headers in ({"host": "attacker.example"}, {"host": "localhost", "origin": "https://evil.example"}):
        with pytest.raises(WebSocketDisconnect) as refused, guarded.websocket_connect("/ws", headers=headers):
            pass
        assert refused.value.code == 1008


def test_refusals_on_ollamas_routes_are_in_ollamas_shape():
    from lms.api.errors import is_ollama_path

    assert is_ollama_path("/") and is_ollama_path("/api/chat") and is_ollama_path("/api/blobs/sha256:ab")
    assert not is_ollama_path("/api/v1/models") and not is_ollama_path("/api/v0/models")
    assert not is_ollama_path("/v1/chat/completions")
