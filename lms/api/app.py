"""Assembly of the public HTTP API (the routes every surface adds) into a Starlette app."""

from __future__ import annotations

import logging
import secrets

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lms.api.anthropic import messages
from lms.api.errors import EXCEPTION_HANDLERS, CatchUnexpected, error_body
from lms.api.guard import BrowserGuard
from lms.api.native.routes import native_routes
from lms.api.openai.routes import openai_routes
from lms.api.responses.routes import routes as responses_routes
from lms.metrics import CountRequests, metrics_endpoint
from lms.pipeline import Pipeline

log = logging.getLogger("lms.server")


async def greeting(_request: Request):
    return JSONResponse({"lmstudio": True})


def api_routes() -> list[Route]:
    return [
        Route("/lmstudio-greeting", greeting),
        *openai_routes(),
        *responses_routes(),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/metrics", metrics_endpoint),
        *native_routes(),
    ]


class RequireToken:
    """When an API token is set, every request but the greeting, WebSocket handshakes included, needs
    `Authorization: Bearer <token>` (or `x-api-key`)."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "websocket" or (
            scope["type"] == "http" and scope["path"] != "/lmstudio-greeting" and scope["method"] != "OPTIONS")
        if guarded:
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"").decode()
            given = given.removeprefix("Bearer ").strip() or headers.get(b"x-api-key", b"").decode()
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                if scope["type"] == "websocket":  # refused before the handshake is accepted: no model work
                    await send({"type": "websocket.close", "code": 1008, "reason": "invalid_api_key"})
                    return
                response = JSONResponse(error_body("Invalid or missing API token.", "invalid_request_error", None,
                                                   "invalid_api_key"), status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class LogRequests:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            log.info("Received request: %s to %s", scope["method"], scope["path"])
        await self.app(scope, receive, send)


def build_public_app(state, *, bind: str = "127.0.0.1", cors: bool = False, cors_origins: tuple[str, ...] = (),
                     api_token: str | None = None, allow_remote_mcp: bool = False) -> Starlette:
    allowed_hosts = {host.strip() for host in state.settings.allowed_hosts.split(",") if host.strip()}
    middleware = [Middleware(CountRequests, metrics=state.metrics), Middleware(CatchUnexpected),
                  Middleware(BrowserGuard, bind=bind, allowed_hosts=allowed_hosts, cors_all=cors,
                             cors_origins=set(cors_origins)),
                  Middleware(LogRequests)]
    if cors or cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=["*"] if cors else list(cors_origins),
                                     allow_methods=["*"], allow_headers=["*"]))
    if api_token:
        middleware.append(Middleware(RequireToken, token=api_token))
    app = Starlette(routes=api_routes(), middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)
    # mcp.json servers run programs on this machine: over HTTP only for authenticated clients, as in LM Studio
    allow_mcp_json = state.settings.allow_mcp_json and bool(api_token)
    share_state(app, state, allow_remote_mcp=allow_remote_mcp or state.settings.allow_remote_mcp,
                allow_mcp_json=allow_mcp_json)
    return app


def share_state(app: Starlette, daemon, *, allow_remote_mcp: bool, allow_mcp_json: bool) -> None:
    """What every API route may use: the daemon's models, settings, stored responses and MCP connections."""
    app.state.manager = daemon.manager
    app.state.pipeline = Pipeline(daemon.manager)
    app.state.settings = daemon.settings
    app.state.responses = daemon.responses
    app.state.mcp = daemon.mcp
    app.state.downloads = daemon.downloads
    app.state.metrics = daemon.metrics
    app.state.allow_remote_mcp = allow_remote_mcp
    app.state.allow_mcp_json = allow_mcp_json
