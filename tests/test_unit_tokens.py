"""The token store and the token middleware, on plain files and a bare Starlette app."""

from __future__ import annotations

import base64
import json
import os

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from lms.api.auth import RequireToken, caller_of
from lms.errors import Kind, LmsError
from lms.tokens import TOKEN_PATTERN, Authenticator, TokenStore


@pytest.fixture
def store(tmp_path):
    return TokenStore(tmp_path / ".internal" / "api-tokens.json")


def test_a_token_has_lm_studios_format_and_only_its_hash_is_kept(store):
    token, secret = store.create("ci", "admin")
    match = TOKEN_PATTERN.match(secret)
    assert match and match["identifier"] == token.identifier
    text = store.path.read_text()
    assert match["passkey"] not in text and token.passkey_sha256 in text
    assert os.stat(store.path).st_mode & 0o777 == 0o600
    assert store.verify(secret).scope == "admin"
    assert store.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.verify("sk-lm-short:x") is None and store.verify("") is None


def test_names_scopes_and_duplicates_are_checked(store):
    store.create("app")
    with pytest.raises(LmsError) as duplicate:
        store.create("app")
    assert duplicate.value.kind is Kind.CONFLICT
    for name in ["", "../x", "a" * 65, "bad/name", " lead"]:
        with pytest.raises(LmsError) as bad:
            store.create(name)
        assert bad.value.param == "name"
    with pytest.raises(LmsError) as scope:
        store.create("other", "root")
    assert scope.value.param == "scope"


def test_revoke_by_name_or_identifier(store):
    first, _ = store.create("one")
    store.create("two")
    assert store.revoke("one").name == "one"
    assert store.revoke(f"sk-lm-{store.tokens()[0].identifier}").name == "two"
    assert not store.any()
    with pytest.raises(LmsError) as missing:
        store.revoke("one")
    assert missing.value.kind is Kind.NOT_FOUND


def test_last_used_is_recorded_at_most_once_a_minute(store):
    _, secret = store.create("app")
    store.verify(secret)
    first = store.tokens()[0].last_used
    assert first is not None
    mtime = store.path.stat().st_mtime_ns
    store.verify(secret)
    assert store.path.stat().st_mtime_ns == mtime and store.tokens()[0].last_used == first


def test_another_process_writing_the_file_is_seen(store):
    assert not store.any()
    _, secret = TokenStore(store.path).create("from-the-cli")
    assert store.any() and store.verify(secret).name == "from-the-cli"


def test_a_damaged_token_file_refuses_instead_of_opening(store):
    store.create("app")
    store.path.write_text("{not json")
    with pytest.raises(LmsError) as unreadable:
        store.any()
    assert unreadable.value.code == "token_file_unreadable"


def test_the_setting_token_is_an_admin_token(store):
    auth = Authenticator(store, "plain-setting-token")
    assert auth.required()
    assert auth.caller("plain-setting-token").admin
    assert auth.caller("other") is None and auth.caller("") is None
    assert not Authenticator(store).required()


def _app(store: TokenStore) -> Starlette:
    async def whoami(request):
        caller = caller_of(request.scope)
        return JSONResponse({"caller": caller and caller.name})

    async def echo(socket):
        await socket.accept()
        try:
            text = await socket.receive_text()
        except WebSocketDisconnect:  # refused by the middleware, as the real routes handle it
            return
        caller = caller_of(socket.scope)
        await socket.send_text(json.dumps({"echo": text, "caller": caller and caller.name}))
        await socket.close()

    app = Starlette(routes=[Route("/whoami", whoami), Route("/health", whoami),
                            Route("/api/v1/models/load", whoami, methods=["POST"]), WebSocketRoute("/ws", echo)])
    app.add_middleware(RequireToken, authenticator=Authenticator(store))
    return app


def test_the_middleware_takes_bearer_and_x_api_key_and_checks_scopes(store):
    client = TestClient(_app(store))
    assert client.get("/whoami").json() == {"caller": None}  # no token exists: open
    _, user = store.create("user")
    _, admin = store.create("admin", "admin")
    refused = client.get("/whoami")
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "invalid_request_error"
    assert client.get("/health").status_code == 200
    assert client.get("/whoami", headers={"Authorization": f"bearer {user}"}).json() == {"caller": "user"}
    assert client.get("/whoami", headers={"x-api-key": user}).json() == {"caller": "user"}
    forbidden = client.post("/api/v1/models/load", headers={"Authorization": f"Bearer {user}"})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "insufficient_scope"
    assert client.post("/api/v1/models/load", headers={"Authorization": f"Bearer {admin}"}).status_code == 200


def test_the_middleware_authenticates_websockets_three_ways(store):
    client = TestClient(_app(store))
    _, user = store.create("user")
    with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {user}"}) as socket:
        socket.send_text("hi")
        assert socket.receive_json() == {"echo": "hi", "caller": "user"}
    protocol = "bearer." + base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
    with client.websocket_connect("/ws", subprotocols=["other", protocol]) as socket:
        assert socket.accepted_subprotocol == protocol
        socket.send_text("hi")
        assert socket.receive_json()["caller"] == "user"
    with client.websocket_connect("/ws") as socket:
        socket.send_text(json.dumps({"type": "auth", "token": user}))
        socket.send_text("after")
        assert socket.receive_json() == {"echo": "after", "caller": "user"}
    with client.websocket_connect("/ws") as socket:
        socket.send_text("no auth first")
        assert socket.receive_json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_text()
        assert closed.value.code == 1008
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/ws", headers={"Authorization": "Bearer wrong"}):
            pass


def test_the_database_backend_shares_tokens_between_stores(tmp_path):
    """The table of a shared database (here through SQLite; tests/test_postgres.py runs it on PostgreSQL): two
    stores on two connections, as two daemons, see each other's tokens and revocations at the next check."""
    from lms.db import SQLiteDatabase

    here = TokenStore(database=SQLiteDatabase(tmp_path / "shared.db"))
    there = TokenStore(database=SQLiteDatabase(tmp_path / "shared.db"))
    assert not here.any()
    token, secret = here.create("app")
    _, admin = there.create("ops", "admin")
    assert there.any() and there.verify(secret).name == "app" and here.verify(admin).scope == "admin"
    assert [t.name for t in here.tokens()] == ["app", "ops"] and here.tokens()[0].last_used is not None
    with pytest.raises(LmsError) as duplicate:
        here.create("ops")
    assert duplicate.value.code == "token_exists"
    assert there.revoke(f"sk-lm-{token.identifier}").name == "app"
    assert here.verify(secret) is None and [t.name for t in here.tokens()] == ["ops"]
    with pytest.raises(LmsError) as missing:
        here.revoke("app")
    assert missing.value.kind is Kind.NOT_FOUND and here.path is None  # no token file
