"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the right HTTP status.

The one place an `LmsError`'s kind becomes an HTTP status and an OpenAI error type, for the OpenAI, Open
Responses and LM Studio native surfaces and the control API (the Anthropic surface maps kinds to its own types).
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lms.errors import Kind, LmsError

log = logging.getLogger("lms.server")

STATUS = {Kind.INVALID: 400, Kind.UNAUTHORIZED: 401, Kind.FORBIDDEN: 403, Kind.NOT_FOUND: 404, Kind.TIMEOUT: 408,
          Kind.CONFLICT: 409, Kind.TOO_LARGE: 413, Kind.MEDIA_TYPE: 415, Kind.DEPENDENCY: 424, Kind.CANCELLED: 499,
          Kind.INTERNAL: 500, Kind.UPSTREAM: 502, Kind.UNAVAILABLE: 503, Kind.STORAGE: 507}


def status_of(exc: LmsError) -> int:
    return STATUS[exc.kind]


def error_type(exc: LmsError) -> str:
    if exc.kind is Kind.FORBIDDEN:
        return "permission_error"
    return "invalid_request_error" if status_of(exc) < 500 else "server_error"


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def openai_error(exc: LmsError) -> dict:
    """The error object itself (`{"message", "type", "param", "code"}`), as streams and events carry it."""
    return error_body(exc.message, error_type(exc), exc.param, exc.code)["error"]


def retry_after_headers(exc: LmsError) -> dict[str, str]:
    """`Retry-After` for an error that says when to try again (a full queue); every surface sends it."""
    return {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}


def error_response(exc: LmsError) -> JSONResponse:
    return JSONResponse({"error": openai_error(exc)}, status_code=status_of(exc), headers=retry_after_headers(exc))


def is_ollama_path(path: str) -> bool:
    """Ollama's routes: `/` and `/api/...`, but not LM Studio's `/api/v0` and `/api/v1`."""
    return path == "/" or (path.startswith("/api/") and not path.startswith(("/api/v0/", "/api/v1/")))


def refusal_response(path: str, exc: LmsError) -> JSONResponse:
    """A refusal before any route runs (a token, a Host, an Origin), in the error shape of the surface the path
    belongs to: Ollama's clients read `{"error": "message"}`, every other client OpenAI's object."""
    if is_ollama_path(path):
        return JSONResponse({"error": exc.message}, status_code=status_of(exc), headers=retry_after_headers(exc))
    return error_response(exc)


def from_validation(exc: ValidationError) -> LmsError:
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    missing = first["type"] == "missing"
    message = f"'{param}' is required" if missing else f"Invalid value for '{param}': {first['msg']}"
    if len(exc.errors()) > 1:
        message += f" (and {len(exc.errors()) - 1} more problems)"
    return LmsError.invalid(message, param, code="missing_required_parameter" if missing else "invalid_value")


async def handle_api_error(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)  # type: ignore[arg-type]


async def handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    return error_response(from_validation(exc))  # type: ignore[arg-type]


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Unknown endpoint: {request.method} {request.url.path}"
        code = "unknown_url"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
        code = "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    if is_ollama_path(request.url.path):
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)
    return JSONResponse(error_body(message, "invalid_request_error", None, code), status_code=exc.status_code,
                        headers=exc.headers)


def internal_error(exc: Exception) -> JSONResponse:
    return JSONResponse(error_body(f"Internal error: {exc}", "server_error", None, "internal_error"), status_code=500)


async def handle_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    return internal_error(exc)


class CatchUnexpected:
    """A bug in a route becomes a logged 500 in the OpenAI shape, and the client's keep-alive connection stays
    usable. (Starlette's last-resort handler answers too, but then re-raises to the server, which drops the
    connection: the client's next request on it was reset.) A response already under way cannot be replaced:
    that error still goes up, and the connection is closed, so the client sees the answer was cut."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except ClientDisconnect:  # it left before its request was read whole: nobody to answer, nothing broken
            log.info("%s %s: the client went away before sending its whole request", scope.get("method"),
                     scope.get("path"))
        except Exception as exc:
            if started:
                raise
            log.exception("Internal error on %s %s", scope.get("method"), scope.get("path"))
            await internal_error(exc)(scope, receive, send)


EXCEPTION_HANDLERS = {
    LmsError: handle_api_error,
    ValidationError: handle_validation_error,
    HTTPException: handle_http_error,
    Exception: handle_unexpected,
}
