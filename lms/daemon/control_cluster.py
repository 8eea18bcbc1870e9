"""Control routes behind `lms cluster connect|status|disconnect`. The cluster's address is a setting
(`cluster_address`, persisted in settings.json), so a daemon started later rejoins it. Asking the cluster anything
runs runtimes/cluster/control.py as a child process with a deadline: a cluster that is down answers "unreachable",
it never hangs the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lms.api.http import read_json
from lms.errors import Kind, LmsError
from lms.settings import persist_setting

STATUS_DEADLINE_SECONDS = 60.0  # joining takes a few seconds; a cluster that does not answer by then is down
REPO = Path(__file__).resolve().parents[2]


async def query_cluster(address: str) -> dict:
    """The cluster's nodes and lms applications; LmsError (unavailable) when it cannot be reached in time."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runtimes.cluster.control", "status", address, cwd=str(REPO),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), STATUS_DEADLINE_SECONDS)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        await process.wait()
        raise LmsError(f"The Ray cluster at {address} did not answer within {STATUS_DEADLINE_SECONDS:.0f} s.",
                       Kind.UNAVAILABLE, code="cluster_unreachable") from None
    try:
        answer = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = {"error": "no answer"}
    if process.returncode != 0 or "error" in answer:
        raise LmsError(f"The Ray cluster at {address} cannot be reached: {answer.get('error')}", Kind.UNAVAILABLE,
                       code="cluster_unreachable")
    return answer


def _cluster_models(daemon) -> list[str]:
    return sorted(m.identifier for m in daemon.manager.loaded.values() if m.placement)


async def connect(request: Request):
    body = await read_json(request)
    address = body.get("address")
    if not isinstance(address, str) or not address.strip():
        raise LmsError.invalid("Give the cluster's address: host:6379, ray://host:10001 or auto.", "address")
    address = address.strip()
    daemon = request.app.state.daemon
    if daemon.manager.settings.cluster_address not in ("", address) and _cluster_models(daemon):
        raise LmsError.conflict(f"Models are loaded on the cluster at {daemon.manager.settings.cluster_address}; "
                                "unload them or `lms cluster disconnect` first.", "address")
    status = await query_cluster(address)
    persist_setting("cluster_address", address)
    daemon.manager.settings.cluster_address = address
    return JSONResponse({"connected": True, **status})


async def status(request: Request):
    daemon = request.app.state.daemon
    address = daemon.manager.settings.cluster_address
    if not address:
        return JSONResponse({"connected": False, "address": None})
    try:
        answer = await query_cluster(address)
    except LmsError as exc:
        return JSONResponse({"connected": True, "reachable": False, "address": address, "error": exc.message,
                             "models": _cluster_models(daemon)})
    return JSONResponse({"connected": True, "reachable": True, **answer, "models": _cluster_models(daemon)})


async def disconnect(request: Request):
    """Forget the cluster: its models are unloaded (their applications deleted); local models stay."""
    daemon = request.app.state.daemon
    unloaded = _cluster_models(daemon)
    for identifier in unloaded:
        await daemon.manager.unload(identifier)
    persist_setting("cluster_address", None)
    daemon.manager.settings.cluster_address = ""
    return JSONResponse({"connected": False, "unloaded": unloaded})


def routes() -> list[Route]:
    return [Route("/lms/cluster/connect", connect, methods=["POST"]),
            Route("/lms/cluster/status", status),
            Route("/lms/cluster/disconnect", disconnect, methods=["POST"])]
