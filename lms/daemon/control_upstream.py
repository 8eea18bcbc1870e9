"""Control routes behind `lms upstream add|ls|rm`. An upstream is checked when it is added (its model list must
answer), kept in upstreams.json, and its models are listed as NAME/<model> on every surface from then on."""

from __future__ import annotations

import contextlib

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lms.api.http import read_json
from lms.errors import LmsError
from lms.upstream import registry


def _directory(request: Request):
    return request.app.state.daemon.manager.upstreams


async def add(request: Request):
    body = await read_json(request)
    upstream = registry.validated(str(body.get("name") or ""), str(body.get("url") or ""), body.get("api_key_env"))
    directory = _directory(request)
    known = directory.upstreams()
    if upstream.name in known:
        raise LmsError.conflict(f"An upstream named '{upstream.name}' exists ({known[upstream.name].url}); remove "
                                "it first.", "name", code="upstream_exists")
    # The CLI hands over the key from its own environment, so a daemon started without the variable has it too.
    key = body.get("api_key") if isinstance(body.get("api_key"), str) and body.get("api_key") else None
    await directory.check(upstream, key)  # a wrong URL or key is said now, not at the first request
    directory.remember_key(upstream.name, key)
    registry.save({**known, upstream.name: upstream})
    entries = await directory.refresh(directory.upstreams()[upstream.name])
    return JSONResponse({**upstream.public(), "models": [e.model_key for e in entries]})


async def listing(request: Request):
    directory = _directory(request)
    with contextlib.suppress(LmsError):
        await directory.refresh_all()
    return JSONResponse({"upstreams": directory.status()})


async def remove(request: Request):
    """Forget an upstream: its attached models leave `lms ps`; nothing runs here to stop."""
    name = str((await read_json(request)).get("name") or "")
    directory = _directory(request)
    known = directory.upstreams()
    if name not in known:
        raise LmsError.not_found(f"No upstream is named '{name}'. Upstreams: {', '.join(known) or 'none'}.", "name",
                                 code="upstream_not_found")
    manager = request.app.state.daemon.manager
    detached = sorted(m.identifier for m in manager.loaded.values() if m.upstream == name)
    for identifier in detached:
        await manager.unload(identifier)
    registry.save({key: value for key, value in known.items() if key != name})
    directory.remember_key(name, None)
    directory.upstreams()
    return JSONResponse({"removed": name, "detached": detached})


def routes() -> list[Route]:
    return [Route("/lms/upstreams", listing),
            Route("/lms/upstreams/add", add, methods=["POST"]),
            Route("/lms/upstreams/remove", remove, methods=["POST"])]
