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
from lms.api.anthropic import count_tokens, messages
from lms.api.auth import RequireToken
from lms.api.errors import EXCEPTION_HANDLERS, CatchUnexpected
from lms.api.guard import BrowserGuard
from lms.api.lmstudio.routes import lmstudio_routes
from lms.api.native.routes import native_routes
from lms.api.ollama.routes import ollama_routes
from lms.api.openai.routes import openai_routes
from lms.api.openapi import openapi_json
from lms.api.responses.routes import routes as responses_routes
from lms.api.tokenize import routes as tokenize_routes
from lms.api.ui import BrowsersToThePage, ui_routes
from lms.metrics import CountRequests, metrics_endpoint
from lms.pipeline import Pipeline

log = logging.getLogger("lms.server")


async def greeting(_request: Request):
    return JSONResponse({"lmstudio": True})


async def lms_status(_request: Request):
    """What LM Studio's `lms` CLI probes on the well-known ports to find a server."""
    return JSONResponse({"package": "lms", "version": __version__})


async def health(request: Request):
    """For load balancers and scripts, without a token: 200 {"status": "ok"} when requests can be served; 503
    {"status": "loading", "reason"} while the daemon is still starting or a model loads (with `?model=X`, only
    while X loads), like llama-server's /health during its load."""
    manager = request.app.state.manager
    if not manager.ready:
        return _not_ready("starting", "The daemon is starting.")
    loading = manager.loading()
    wanted = request.query_params.get("model")
    if wanted:
        loading = [identifier for identifier in loading if _names(identifier, wanted)]
    if loading:
        return _not_ready("loading", f"Loading model{'s' if len(loading) > 1 else ''} {', '.join(loading)}.", loading)
    return JSONResponse({"status": "ok"})


def _names(identifier: str, wanted: str) -> bool:
    """Whether a request's model name means this identifier (itself, or the model key of its `:N` instances)."""
    wanted, identifier = wanted.lower(), identifier.lower()
    return identifier == wanted or identifier.rsplit(":", 1)[0] == wanted or identifier.endswith("/" + wanted)


def _not_ready(status: str, reason: str, models: list[str] | None = None) -> JSONResponse:
    body = {"status": status, "reason": reason} | ({"loading": models} if models else {})
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


def api_routes() -> list[Route]:
    return [
        Route("/lmstudio-greeting", greeting),
        Route("/health", health),
        Route("/lms-status", lms_status),
        *openai_routes(),
        *responses_routes(),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        *tokenize_routes(),
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
                     allow_remote_mcp: bool = False, control_routes: list[Route] | None = None,
                     ui: bool = True) -> Starlette:
    """The public server: every API surface, (with `control_routes`) the control API over HTTP, and (unless `ui`
    is False) the dashboard's files."""
    allowed_hosts = {host.strip() for host in state.settings.allowed_hosts.split(",") if host.strip()}
    middleware = [Middleware(CountRequests, metrics=state.metrics), Middleware(CatchUnexpected),
                  Middleware(BrowserGuard, bind=bind, allowed_hosts=allowed_hosts, cors_all=cors,
                             cors_origins=set(cors_origins)),
                  Middleware(LogRequests)]
    if ui:
        middleware.append(Middleware(BrowsersToThePage))
    if cors or cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=["*"] if cors else list(cors_origins),
                                     allow_methods=["*"], allow_headers=["*"]))
    # Checked on every request, so a token created while the server runs takes effect at once.
    middleware.append(Middleware(RequireToken, authenticator=state.authenticator))
    routes = [*api_routes(), *(control_routes or []), *(ui_routes() if ui else [])]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)
    app.state.daemon = state  # what the control routes work on
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
