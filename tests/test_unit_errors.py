"""CatchUnexpected: a bug in a route is a 500 in the OpenAI shape on a connection that stays usable; a client that
leaves before sending its whole request is no bug, and one that sends its body too slowly gets a 408."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from lms.api import http
from lms.api.errors import EXCEPTION_HANDLERS, CatchUnexpected
from tests.conftest import free_port


async def broken(_request):
    raise RuntimeError("a bug")


async def fine(_request):
    return JSONResponse({"ok": True})


async def broken_midway(_request):
    async def body():
        yield b"partial"
        raise RuntimeError("a bug after the answer started")

    return StreamingResponse(body())


async def reads_body(request):
    return JSONResponse({"size": len(await request.body())})


async def reads_json(request):
    return JSONResponse(await http.read_json(request))


@pytest.fixture(scope="module")
def server():
    app = Starlette(routes=[Route("/broken", broken), Route("/fine", fine), Route("/midway", broken_midway),
                            Route("/body", reads_body, methods=["POST"]), Route("/json", reads_json, methods=["POST"])],
                    middleware=[Middleware(CatchUnexpected)], exception_handlers=EXCEPTION_HANDLERS)
    app.state.settings = SimpleNamespace(max_body_bytes=1 << 20)
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="critical")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(running.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{config.port}"
    running.should_exit = True
    thread.join(timeout=10)


def test_a_bug_is_a_500_in_the_openai_shape_and_the_connection_is_kept(server):
    with httpx.Client(base_url=server) as client:
        for _ in range(3):
            broken_answer = client.get("/broken")
            assert broken_answer.status_code == 500
            assert broken_answer.json()["error"] == {"message": "Internal error: a bug", "type": "server_error",
                                                     "param": None, "code": "internal_error"}
            assert broken_answer.headers.get("connection") != "close"
            assert client.get("/fine").json() == {"ok": True}  # same pooled connection, not reset


def test_a_bug_after_the_answer_started_cuts_it(server):
    with httpx.Client(base_url=server) as client:
        with pytest.raises(httpx.HTTPError):
            client.get("/midway").read()
        assert client.get("/fine").json() == {"ok": True}


def test_a_client_gone_before_its_whole_body_is_no_internal_error(server, caplog):
    caplog.set_level(logging.INFO, logger="lms.server")
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100\r\n\r\n{\"a\":")
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while not any("went away" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records if r.name == "lms.server"]
    assert any("went away" in m for m in messages), messages
    assert not any("Internal error" in m for m in messages), messages
    with httpx.Client(base_url=server) as client:
        assert client.post("/body", content=b"{}").json() == {"size": 2}


def test_a_body_sent_too_slowly_is_a_408_and_the_connection_closes(server, monkeypatch):
    monkeypatch.setattr(http, "BODY_SECONDS", 0.5)
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100\r\n\r\n{\"a\":")
        answer = b""
        while chunk := raw.recv(65536):  # until the server closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code":"request_timeout"' in answer
    with httpx.Client(base_url=server) as client:
        assert client.post("/json", json={"a": 1}).json() == {"a": 1}
