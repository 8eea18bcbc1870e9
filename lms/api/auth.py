"""API tokens on every surface of the public server.

As soon as a token exists (`lms server token create`, or the `api_token` setting), every HTTP route but the
greeting and the health check, every SSE stream and every WebSocket needs one, given as
`Authorization: Bearer <token>` or `x-api-key: <token>`. A WebSocket client that cannot set headers (a browser)
may offer the subprotocol `bearer.<base64url(token)>`, or send `{"type": "auth", "token": "..."}` as its first
message; anything else first is refused before any model work. The caller's scope is kept in the request state:
routes that change what is loaded or stored on disk need `admin`.
"""

from __future__ import annotations

import base64
import binascii
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lms.api.errors import refusal_response
from lms.api.ui import is_ui_path
from lms.errors import LmsError
from lms.tokens import Authenticator, Caller

# Health checks: LM Studio's greeting, ours, and Ollama's "Ollama is running".
OPEN_ROUTES = {("GET", "/lmstudio-greeting"), ("GET", "/lms-status"), ("GET", "/health"), ("HEAD", "/health"),
               ("GET", "/"), ("HEAD", "/")}
# What only an admin token may do over HTTP: change what is loaded, downloaded, created or deleted (and use
# mcp.json tools, see lms/api/context.py).
ADMIN_ROUTES = {("POST", "/api/v1/models/load"), ("POST", "/api/v1/models/unload"),
                ("POST", "/api/v1/models/download"), ("POST", "/api/pull"), ("DELETE", "/api/delete"),
                ("POST", "/api/copy"), ("POST", "/api/create"), ("POST", "/api/push")}
ADMIN_PREFIXES = (("POST", "/api/blobs/"),)


def needs_admin(method: str, path: str) -> bool:
    return (method, path) in ADMIN_ROUTES or any(method == m and path.startswith(p) for m, p in ADMIN_PREFIXES)


# LM Studio's SDK namespaces (lms/api/lmstudio): their clients send credentials only in their own first frame,
# which those routes check with this same Authenticator (handed over in the scope's state).
SDK_WEBSOCKET_PATHS = frozenset({"/system", "/llm", "/embedding", "/files", "/repository", "/plugins",
                                 "/diagnostics", "/runtime"})

SUBPROTOCOL_PREFIX = "bearer."
WEBSOCKET_POLICY_VIOLATION = 1008

MISSING = ("An API token is required to make requests to this server, but none was provided. Send it as "
           "'Authorization: Bearer <token>' (create one with `lms server token create NAME`).")
INVALID = "The API token is not valid (it may have been revoked). See `lms server token ls`."


def caller_of(scope: Scope) -> Caller | None:
    """Who is calling; None when the server needs no token."""
    return scope.get("state", {}).get("caller")


def require_admin(scope: Scope, action: str) -> None:
    caller = caller_of(scope)
    if caller is not None and not caller.admin:
        raise LmsError.forbidden(f"The token '{caller.name}' has the '{caller.scope}' scope; {action} needs a token "
                                 "with the 'admin' scope (`lms server token create NAME --scope admin`).",
                                 code="insufficient_scope")


def admin_only(endpoint):
    """A route only an admin token may call, even on a server that needs no token for anything else (the control
    API over HTTP: without tokens, anyone who reaches the port could load, download and reconfigure)."""

    async def guarded(request):
        caller = caller_of(request.scope)
        if caller is None:
            raise LmsError.forbidden("Controlling lms over HTTP needs an admin API token, and this server has none: "
                                     "create one on it with `lms server token create NAME --scope admin`.",
                                     code="admin_token_required")
        require_admin(request.scope, f"{request.method} {request.url.path}")
        return await endpoint(request)

    return guarded


def as_public_api(endpoint):
    """A control route with the public API's rule over HTTP: open while the server needs no token, and for an
    admin token once it does."""

    async def guarded(request):
        require_admin(request.scope, f"{request.method} {request.url.path}")
        return await endpoint(request)

    return guarded


def _header_secret(headers: dict[bytes, bytes]) -> str:
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return headers.get(b"x-api-key", b"").decode("latin-1").strip()


def _subprotocol_secret(headers: dict[bytes, bytes]) -> tuple[str, str] | None:
    """(the offered subprotocol, the token in it), when the client offered one of the form bearer.<base64url>."""
    offered = headers.get(b"sec-websocket-protocol", b"").decode("latin-1")
    for protocol in (part.strip() for part in offered.split(",")):
        if protocol.lower().startswith(SUBPROTOCOL_PREFIX):
            encoded = protocol[len(SUBPROTOCOL_PREFIX):]
            try:
                return protocol, base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, ValueError):
                return protocol, ""
    return None


class RequireToken:
    def __init__(self, app: ASGIApp, authenticator: Authenticator):
        self.app, self.auth = app, authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._guarded(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket" and scope["path"] in SDK_WEBSOCKET_PATHS:
            scope.setdefault("state", {})["authenticator"] = self.auth
            await self.app(scope, receive, send)
            return
        try:
            required = self.auth.required()
        except LmsError as exc:  # an unreadable token file: closed, not open
            await self._refuse(scope, receive, send, exc)
            return
        if not required:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        secret, subprotocol = _header_secret(headers), None
        if not secret and scope["type"] == "websocket" and (offered := _subprotocol_secret(headers)):
            subprotocol, secret = offered
        if not secret and scope["type"] == "websocket":
            await self.app(scope, self._first_message_auth(scope, receive, send), send)
            return
        caller = self.auth.caller(secret)
        if caller is None:
            await self._refuse(scope, receive, send, LmsError.unauthorized(INVALID if secret else MISSING))
            return
        if scope["type"] == "http" and needs_admin(scope["method"], scope["path"]) and not caller.admin:
            try:
                require_admin({"state": {"caller": caller}}, f"{scope['method']} {scope['path']}")
            except LmsError as exc:
                await self._refuse(scope, receive, send, exc)
                return
        scope.setdefault("state", {})["caller"] = caller
        if subprotocol:
            send = _accepting_with(subprotocol, send)
        await self.app(scope, receive, send)

    @staticmethod
    def _guarded(scope: Scope) -> bool:
        if scope["type"] == "websocket":
            return True
        if scope["method"] in ("GET", "HEAD") and is_ui_path(scope["path"]):
            return False  # the dashboard's files: no data in them, and the page must load to ask for a token
        return scope["method"] != "OPTIONS" and (scope["method"], scope["path"]) not in OPEN_ROUTES

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: LmsError) -> None:
        if scope["type"] == "websocket":  # refused before the handshake is accepted: no model work
            await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION, "reason": error.code or ""})
        else:
            await refusal_response(scope["path"], error)(scope, receive, send)

    def _first_message_auth(self, scope: Scope, receive: Receive, send: Send) -> Receive:
        """A receive that takes the first message as the credentials and hands the route the messages after it."""
        state = {"done": False}

        async def authenticating_receive() -> Message:
            message = await receive()
            if state["done"] or message["type"] != "websocket.receive":
                return message
            state["done"] = True
            caller = self.auth.caller(_auth_message_secret(message))
            if caller is None:
                error = {"type": "error", "status": 401, "error": {
                    "type": "invalid_request_error", "code": "invalid_api_key", "param": None,
                    "message": MISSING + ' A WebSocket client may send {"type": "auth", "token": "..."} first.'}}
                await send({"type": "websocket.send", "text": json.dumps(error)})
                await send({"type": "websocket.close", "code": WEBSOCKET_POLICY_VIOLATION, "reason": "invalid_api_key"})
                return {"type": "websocket.disconnect", "code": WEBSOCKET_POLICY_VIOLATION}
            scope.setdefault("state", {})["caller"] = caller
            return await receive()

        return authenticating_receive


def _auth_message_secret(message: Message) -> str:
    text = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return ""
    if isinstance(data, dict) and data.get("type") == "auth" and isinstance(data.get("token"), str):
        return data["token"].strip()
    return ""


def _accepting_with(subprotocol: str, send: Send) -> Send:
    """Browsers drop a connection whose accept does not name one of the subprotocols they offered."""
    async def send_with_subprotocol(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": subprotocol}
        await send(message)

    return send_with_subprotocol
