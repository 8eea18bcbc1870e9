"""Assembly of the public HTTP API (the routes every surface adds) into a Starlette app."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lms import __version__
from lms.api.anthropic import messages
from lms.api.auth import RequireToken
from lms.api.errors import EXCEPTION_HANDLERS, CatchUnexpected
from lms.api.guard import BrowserGuard
from lms.api.lmstudio.routes import lmstudio_routes
from lms.api.native.routes import native_routes
from lms.api.ollama.routes import ollama_routes
from lms.api.openai.routes import openai_routes
from lms.api.openapi import openapi_json
from lms.api.responses.routes import routes as responses_routes
from lms.metrics import CountRequests, metrics_endpoint
from lms.pipeline import Pipeline

log = logging.getLogger("lms.server")


async def greeting(_request: Request):
    return JSONResponse({"lmstudio": True})


async def lms_status(_request: Request):
    """What LM Studio's `lms` CLI probes on the well-known ports to find a server."""
    return JSONResponse({"package": "lms", "version": __version__})


async def health(_request: Request):
    """For load balancers and scripts: answers without a token once the server listens."""
    return JSONResponse({"status": "ok"})


def api_routes() -> list[Route]:
    return [
        Route("/lmstudio-greeting", greeting),
        Route("/health", health),
        Route("/lms-status", lms_status),
        *openai_routes(),
        *responses_routes(),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/metrics", metrics_endpoint),
        Route("/openapi.json", openapi_json),
        *native_routes(),
        *ollama_routes(),
        *lmstudio_routes(),
    ]


class LogRequests:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            log.info("Received request: %s to %s", scope["method"], scope["path"])
        await self.app(scope, receive, send)


def build_public_app(state, *, bind: str = "127.0.0.1", cors: bool = False, cors_origins: tuple[str, ...] = (),
                     allow_remote_mcp: bool = False) -> Starlette:
    allowed_hosts = {host.strip() for host in state.settings.allowed_hosts.split(",") if host.strip()}
    middleware = [Middleware(CountRequests, metrics=state.metrics), Middleware(CatchUnexpected),
                  Middleware(BrowserGuard, bind=bind, allowed_hosts=allowed_hosts, cors_all=cors,
                             cors_origins=set(cors_origins)),
                  Middleware(LogRequests)]
    if cors or cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=["*"] if cors else list(cors_origins),
                                     allow_methods=["*"], allow_headers=["*"]))
    # Checked on every request, so a token created while the server runs takes effect at once.
    middleware.append(Middleware(RequireToken, authenticator=state.authenticator))
    app = Starlette(routes=api_routes(), middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)
    # mcp.json servers run programs on this machine: over HTTP only for admin tokens (lms/api/context.py)
    share_state(app, state, allow_remote_mcp=allow_remote_mcp or state.settings.allow_remote_mcp,
                allow_mcp_json=state.settings.allow_mcp_json)
    app.state.public = True
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
