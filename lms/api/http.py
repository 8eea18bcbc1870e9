"""Plumbing shared by every surface: bounded JSON bodies, SSE, and cancelling work when the client leaves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable

from starlette.requests import Request
from starlette.responses import StreamingResponse

from lms.errors import LmsError


def is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_json(request: Request) -> dict:
    """The JSON object a request carries. A body declared as something else is refused (415): a web page can send
    text/plain or a form to any address without the browser asking first, but never JSON."""
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json(content_type):
        raise LmsError.media_type(f"The request body must be JSON (Content-Type: application/json), not "
                                  f"{content_type.split(';')[0].strip() or 'empty'}.")
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise LmsError.too_large(f"Request body is larger than the limit of {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise LmsError.too_large(f"Request body is larger than the limit of {limit} bytes.")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise LmsError.invalid(f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise LmsError.invalid("The request body must be a JSON object.", code="invalid_json")
    return data


def sse(events: AsyncIterator[dict | str]) -> StreamingResponse:
    """Server-sent events: each dict is one `data:` line; a string is sent as it is (e.g. [DONE])."""

    async def body():
        async for event in events:
            payload = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
            yield f"data: {payload}\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def until_disconnect(request: Request, work: Awaitable):
    """Run work, cancelling it if the client disconnects first (the body must already have been read)."""
    task = asyncio.ensure_future(work)

    async def watch():
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise LmsError.cancelled("client disconnected")
    finally:
        watcher.cancel()
