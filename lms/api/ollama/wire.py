"""Ollama's wire conventions: `{"error": "..."}` errors, NDJSON streams, nanosecond durations, RFC 3339 times."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from lms.api.errors import retry_after_headers, status_of
from lms.errors import LmsError


def error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"invalid {where or 'request'}: {first.get('msg', 'invalid value')}"


def ollama_route(endpoint: Callable[[Request], Awaitable[Response]]):
    """Errors in Ollama's shape on Ollama's routes: `{"error": "message"}` with the status of its kind."""

    @functools.wraps(endpoint)
    async def route(request: Request) -> Response:
        try:
            return await endpoint(request)
        except LmsError as exc:
            return error(exc.message, status_of(exc), retry_after_headers(exc))
        except ValidationError as exc:
            return error(_validation_message(exc), 400)

    return route


def ndjson(objects: AsyncIterator[dict]) -> StreamingResponse:
    """One JSON object a line; a failure after the first line is sent as a last `{"error": ...}` line."""

    async def lines():
        try:
            async for item in objects:
                yield json.dumps(item, separators=(",", ":")) + "\n"
        except LmsError as exc:
            yield json.dumps({"error": exc.message}) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def nanoseconds(seconds: float | None) -> int:
    return max(int((seconds or 0) * 1e9), 0)


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Timer:
    """The durations Ollama reports, measured from when the request arrived."""

    def __init__(self):
        self.started = time.perf_counter()
        self.load_seconds = 0.0

    def total(self) -> int:
        return nanoseconds(time.perf_counter() - self.started)
