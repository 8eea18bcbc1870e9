"""Control routes for API tokens (`/lms/tokens`): what `lms server token` does, for the dashboard and remote CLIs.
Over HTTP they always need an admin token (lms/daemon/control.py), so the first token is made on the machine."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lms.api.http import read_json


def _store(request: Request):
    return request.app.state.daemon.authenticator.store


async def listing(request: Request):
    return JSONResponse([token.public() for token in _store(request).tokens()])


async def create(request: Request):
    """The secret is in this answer only: it is stored hashed."""
    body = await read_json(request)
    token, secret = _store(request).create(str(body.get("name") or ""), str(body.get("scope") or "inference"))
    return JSONResponse({**token.public(), "token": secret})


async def revoke(request: Request):
    return JSONResponse(_store(request).revoke(str((await read_json(request)).get("name") or "")).public())


def routes() -> list[Route]:
    return [Route("/lms/tokens", listing),
            Route("/lms/tokens/create", create, methods=["POST"]),
            Route("/lms/tokens/revoke", revoke, methods=["POST"])]
