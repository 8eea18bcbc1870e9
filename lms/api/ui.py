"""The dashboard (`/ui`): static files from the package, served by the daemon beside the API they use.

The page holds no data and no secret, so its files need no token; everything it shows comes from the public API
with the token the user gives it. A strict Content-Security-Policy keeps it to its own scripts and its own origin,
and no other site may frame it. A browser opening `/` is sent to the page; a program asking for `/` (no `text/html`
in its Accept header) still gets Ollama's answer."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from lms.errors import LmsError

STATIC = Path(__file__).resolve().parents[1] / "ui" / "static"
PREFIX = "/ui"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
mimetypes.add_type("text/javascript", ".js")  # some systems map .js to text/plain, which browsers refuse to run


def is_ui_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


async def _file(request: Request) -> Response:
    relative = request.path_params.get("path") or "index.html"
    try:
        target = (STATIC / relative).resolve()
        found = target.is_relative_to(STATIC) and target.is_file()
    except (OSError, ValueError):  # a name no file can have (a NUL byte, one too long)
        found = False
    if not found:
        raise LmsError.not_found(f"No dashboard file '{relative}'.", code="not_found")
    return FileResponse(target, headers=SECURITY_HEADERS)


async def _to_page(_request: Request) -> Response:
    return RedirectResponse(PREFIX + "/", status_code=307)


def ui_routes() -> list[Route]:
    return [Route(PREFIX, _to_page, methods=["GET", "HEAD"]),
            Route(PREFIX + "/", _file, methods=["GET", "HEAD"]),
            Route(PREFIX + "/{path:path}", _file, methods=["GET", "HEAD"])]


class BrowsersToThePage:
    """`GET /` from a browser (it asks for text/html) goes to the dashboard; other clients get the route below."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] == "GET":
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            if "text/html" in accept:
                await RedirectResponse(PREFIX + "/", status_code=307)(scope, receive, send)
                return
        await self.app(scope, receive, send)
