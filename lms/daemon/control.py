"""The control API the CLI talks to over the daemon's unix socket (mode 0600: only this user).

It also serves the public API routes, so `lms chat` works whether or not the HTTP server is on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from lms import __version__, config
from lms.api.app import api_routes, share_state
from lms.api.auth import admin_only, as_public_api
from lms.api.errors import EXCEPTION_HANDLERS, CatchUnexpected
from lms.api.http import read_json
from lms.daemon import (
    control_cluster,
    control_config,
    control_events,
    control_models,
    control_tokens,
    control_upstream,
    listings,
)
from lms.errors import LmsError
from lms.logs import SOURCES


class LoadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    identifier: str | None = None
    context_length: int | Literal["max"] | None = None  # max: the longest that fits the guardrails
    ttl: int | None = Field(None, ge=1)
    parallel: int | None = Field(None, ge=1)
    draft_model: str | None = None
    draft_max_tokens: int | None = Field(None, ge=1)
    draft_min_probability: float | None = Field(None, ge=0, le=1)
    speculative: Literal["ngram", "off"] | None = None
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] | None = None
    flash_attention: Literal["on", "off", "auto"] | None = None
    batch_size: int | None = Field(None, ge=1)
    gpu: Literal["off", "max"] | float | None = None  # accepted; this machine runs models on its CPU
    replicas: int | None = Field(None, ge=1)  # on the Ray cluster
    max_replicas: int | None = Field(None, ge=1)
    stream: bool = False


class ServerStartBody(BaseModel):
    port: int = Field(1234, ge=0, le=65535)
    bind: str = "127.0.0.1"
    cors: bool = False
    cors_origins: list[str] = Field(default_factory=list)
    allow_remote_mcp: bool = False
    no_auth: bool = False  # serve a network address without an API token, knowingly
    ollama_port: int | None = Field(None, ge=0, le=65535)  # a second listener for Ollama's clients (11434)
    ui: bool = True  # the web dashboard at /ui


def _state(request: Request):
    return request.app.state.daemon


async def status(request: Request):
    daemon = _state(request)
    return JSONResponse({"status": "running", "pid": os.getpid(), "isDaemon": True, "version": __version__,
                         "home": str(config.home()), "server": daemon.http.status(),
                         "loaded": len(daemon.manager.loaded), "spareWorkerPid": daemon.manager.spare.pid})


async def shutdown(request: Request):
    asyncio.get_running_loop().call_later(0.05, _state(request).request_shutdown)
    return JSONResponse({"status": "stopping"})


async def list_downloaded(request: Request):
    return JSONResponse(listings.downloaded(_state(request).manager))


async def resolve(request: Request):
    body = await read_json(request)
    entry = _state(request).manager.resolve(str(body.get("model") or ""))
    return JSONResponse(entry.info())


async def list_loaded(request: Request):
    return JSONResponse(await listings.loaded(_state(request).manager))


async def estimate(request: Request):
    body = await read_json(request)
    manager = _state(request).manager
    entry = manager.resolve(str(body.get("model") or ""))
    context_length = body.get("context_length")
    if context_length is not None and context_length != "max" and (not isinstance(context_length, int)
                                                                  or context_length < 1):
        raise LmsError.invalid("'context_length' must be a positive integer or max", "context_length")
    parallel = body.get("parallel")
    if parallel is not None and (not isinstance(parallel, int) or parallel < 1):
        raise LmsError.invalid("'parallel' must be a positive integer", "parallel")
    kv_cache_type = body.get("kv_cache_type")
    if kv_cache_type not in (None, "f16", "q8_0", "q4_0"):
        raise LmsError.invalid("'kv_cache_type' must be f16, q8_0 or q4_0", "kv_cache_type")
    batch_size, flash_attention = body.get("batch_size"), body.get("flash_attention")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise LmsError.invalid("'batch_size' must be a positive integer", "batch_size")
    if flash_attention not in (None, "on", "off", "auto"):
        raise LmsError.invalid("'flash_attention' must be on, off or auto", "flash_attention")
    gpu_ratio = body.get("gpu_ratio")
    return JSONResponse(manager.estimate(entry, context_length, None if gpu_ratio is None else float(gpu_ratio),
                                         parallel, kv_cache_type, batch_size=batch_size,
                                         flash_attention=flash_attention))


async def load(request: Request):
    """Load a model. With `"stream": true` the answer is NDJSON: `{"progress": 0..1}` lines, then
    `{"loaded": {...}}` or `{"error": {...}}`; a client that goes away cancels the load."""
    body = LoadBody.model_validate(await read_json(request))
    manager = _state(request).manager
    started = time.perf_counter()
    options = dict(identifier=body.identifier, context_length=body.context_length, ttl=body.ttl,
                   parallel=body.parallel, draft_model=body.draft_model, draft_max_tokens=body.draft_max_tokens,
                   replicas=body.replicas, max_replicas=body.max_replicas, kv_cache_type=body.kv_cache_type,
                   flash_attention=body.flash_attention, batch_size=body.batch_size,
                   draft_min_probability=body.draft_min_probability, gpu=body.gpu, speculative=body.speculative)
    if not body.stream:
        model = await manager.load(body.model, **options)
        return JSONResponse({"loadTimeSeconds": round(time.perf_counter() - started, 3), **model.ps_info()})
    manager.resolve(body.model)  # a missing model is a plain 404, before the stream starts
    events: asyncio.Queue = asyncio.Queue()

    async def run():
        try:
            model = await manager.load(body.model, progress=lambda p: events.put_nowait({"progress": p}),
                                       **options)
            events.put_nowait({"loaded": {"loadTimeSeconds": round(time.perf_counter() - started, 3),
                                          **model.ps_info()}})
        except LmsError as exc:
            events.put_nowait({"error": {"message": exc.message, "code": exc.code}})
        except Exception as exc:  # noqa: BLE001 - the client must hear about it, not wait forever
            logging.getLogger("lms.daemon").exception("load of %s failed", body.model)
            events.put_nowait({"error": {"message": f"Internal error while loading: {exc}", "code": "internal_error"}})

    async def lines():
        task = asyncio.create_task(run())
        try:
            while True:
                event = await events.get()
                yield json.dumps(event) + "\n"
                if "progress" not in event:
                    return
        finally:
            task.cancel()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def unload(request: Request):
    body = await read_json(request)
    manager = _state(request).manager
    if body.get("all"):
        return JSONResponse({"unloaded": await manager.unload_all()})
    identifier = body.get("identifier")
    if not identifier:
        raise LmsError.invalid("'identifier' is required", "identifier", code="missing_required_parameter")
    await manager.unload(identifier)
    return JSONResponse({"unloaded": [identifier]})


async def server_start(request: Request):
    body = ServerStartBody.model_validate(await read_json(request))
    result = await _state(request).http.start(body.port, body.bind, body.cors, body.allow_remote_mcp,
                                              cors_origins=tuple(body.cors_origins), no_auth=body.no_auth,
                                              ollama_port=body.ollama_port, ui=body.ui)
    config.write_json(config.server_config_path(), {"port": result["port"], "networkInterface": body.bind,
                                                    "cors": body.cors, "allowRemoteMcp": body.allow_remote_mcp})
    return JSONResponse(result)


async def server_stop(request: Request):
    return JSONResponse(await _state(request).http.stop())


async def server_status(request: Request):
    return JSONResponse(_state(request).http.status())


async def log_stream(request: Request):
    """NDJSON of log events: `?source=model|server|runtime&filter=input,output` (LM Studio's `lms log stream`)."""
    source = request.query_params.get("source", "model")
    if source not in SOURCES:
        raise LmsError.invalid(f"source must be one of {', '.join(SOURCES)}", "source")
    types = set(SOURCES[source])
    if source == "model" and request.query_params.get("filter"):
        wanted = {f"llm.prediction.{part.strip()}" for part in request.query_params["filter"].split(",")}
        if not wanted <= types:
            raise LmsError.invalid("filter must be input, output or input,output", "filter")
        types = wanted

    async def lines():
        yield json.dumps({"timestamp": int(time.time() * 1000), "data": {"type": "log.subscribed",
                                                                         "source": source}}) + "\n"
        async for event in _state(request).bus.subscribe(types):
            yield json.dumps(event) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


# Control routes a remote CLI (`lms --host`) may not use: starting, stopping or shutting down the very server it
# talks through is done on the machine itself.
LOCAL_ONLY = frozenset({"/lms/shutdown", "/lms/server/start", "/lms/server/stop"})
# Control routes that do over HTTP what the public API already lets a caller do (list and load models, download,
# delete, watch): they keep the public API's rule, open while the server has no token and admin once it has one,
# so the dashboard works on a fresh server. The others (settings, tokens, the cluster, upstreams) reconfigure the
# server or run code, and always need an admin token over HTTP.
AS_PUBLIC_API = frozenset({
    "/lms/status", "/lms/models", "/lms/ps", "/lms/server/status", "/lms/resolve", "/lms/load", "/lms/estimate",
    "/lms/unload", "/lms/log/stream", "/lms/events", "/lms/hub/search", "/lms/hub/variants", "/lms/downloads",
    "/lms/downloads/{job_id}", "/lms/downloads/{job_id}/cancel", "/lms/models/remove", "/lms/models/unreadable"})


def control_routes() -> list[Route]:
    reads = {"/lms/status": status, "/lms/models": list_downloaded, "/lms/ps": list_loaded,
             "/lms/server/status": server_status}
    actions = {"/lms/shutdown": shutdown, "/lms/resolve": resolve, "/lms/load": load, "/lms/estimate": estimate,
               "/lms/unload": unload, "/lms/server/start": server_start, "/lms/server/stop": server_stop}
    return [*(Route(path, endpoint) for path, endpoint in reads.items()),
            *(Route(path, endpoint, methods=["POST"]) for path, endpoint in actions.items()),
            Route("/lms/log/stream", log_stream, methods=["GET", "POST"]),
            *control_models.routes(), *control_cluster.routes(), *control_upstream.routes(),
            *control_config.routes(), *control_events.routes(), *control_tokens.routes()]


def remote_control_routes() -> list[Route]:
    """The control API on the HTTP server, for the dashboard and the CLI on another machine (lms/api/auth.py)."""
    return [Route(route.path, (as_public_api if route.path in AS_PUBLIC_API else admin_only)(route.endpoint),
                  methods=route.methods)
            for route in control_routes() if route.path not in LOCAL_ONLY]


def build_control_app(daemon) -> Starlette:
    routes = [*control_routes(), *api_routes()]
    app = Starlette(routes=routes, middleware=[Middleware(CatchUnexpected)], exception_handlers=EXCEPTION_HANDLERS)
    app.state.daemon = daemon
    # the control socket is the owner's own (mode 0600): mcp.json servers are theirs to use, as in `lms chat`
    share_state(app, daemon, allow_remote_mcp=daemon.settings.allow_remote_mcp, allow_mcp_json=True)
    return app
