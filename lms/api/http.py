"""Plumbing shared by every surface: bounded JSON bodies, SSE, and cancelling work when the client leaves."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable

from starlette.requests import Request
from starlette.responses import StreamingResponse

from lms.errors import LmsError

# A JSON body (32 MiB at most) that has not arrived in this time is a client holding the connection open, not a
# slow network: it is answered 408 and the connection closed (the HTTP server itself has no deadline for bodies).
BODY_SECONDS = 60


def is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_json(request: Request, *, any_type_outside_browsers: bool = False) -> dict:
    """The JSON object a request carries. A body declared as something else is refused (415): a web page can send
    text/plain or a form to any address without the browser asking first, but never JSON. With
    `any_type_outside_browsers` (Ollama's routes, whose documented examples are `curl -d`, a form type), such a
    body is read as JSON when no `Origin` says a browser sent it: browsers send one with every POST."""
    content_type = request.headers.get("content-type")
    tolerated = any_type_outside_browsers and "origin" not in request.headers
    if content_type is not None and not is_json(content_type) and not tolerated:
        raise LmsError.media_type(f"The request body must be JSON (Content-Type: application/json), not "
                                  f"{content_type.split(';')[0].strip() or 'empty'}.")
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise LmsError.too_large(f"Request body is larger than the limit of {limit} bytes.")
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_SECONDS):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise LmsError.too_large(f"Request body is larger than the limit of {limit} bytes.")
    except TimeoutError:
        raise LmsError.timeout(f"The request body did not arrive within {BODY_SECONDS} seconds.") from None
    return parse_json_object(bytes(body))


def optional_text(body: dict, name: str) -> str | None:
    """A JSON body's string field, None when absent: another type is a 400 here, not a surprise further on."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise LmsError.invalid(f"'{name}' must be a string", name)
    return value


MAX_DEPTH = 64  # real requests nest a few levels; a deep one only costs recursion
# A lone surrogate can only come from a \uD800-\uDFFF escape (raw bytes of one are not UTF-8, which json refuses):
# without such an escape the strings need no check, and a large image data URL is not copied to check it.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
MAX_INTEGER = 2**63  # beyond int64, a number is no count, size or seed any engine can take


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json_object(body: bytes) -> dict:
    """A request body as a JSON object that every later step can take: nested at most MAX_DEPTH levels, strings
    of valid Unicode (no lone surrogates), integers within int64, no NaN or Infinity. A body that breaks one of
    these is a 400 naming where, never a 500 further down."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise LmsError.invalid(f"The request body is nested more than {MAX_DEPTH} levels deep.",
                               code="invalid_json") from None
    except ValueError as exc:
        raise LmsError.invalid(f"The request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise LmsError.invalid("The request body must be a JSON object.", code="invalid_json")
    _check(data, "", 0, bool(SURROGATE_ESCAPE.search(body)))
    return data


def _check(value, path: str, depth: int, texts: bool) -> None:
    if depth > MAX_DEPTH:
        raise LmsError.invalid(f"The request body is nested more than {MAX_DEPTH} levels deep.",
                               code="invalid_json")
    if isinstance(value, dict):
        for key, item in value.items():
            if texts:
                _check_text(key, path, "a key in ")
            _check(item, f"{path}.{key}" if path else key, depth + 1, texts)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth + 1, texts)
    elif isinstance(value, str):
        if texts:
            _check_text(value, path)
    elif isinstance(value, int) and not isinstance(value, bool) and not -MAX_INTEGER <= value < MAX_INTEGER:
        raise LmsError.invalid(f"'{path}' is out of range: integers must fit in 64 bits.", path)


def _check_text(text: str, path: str, what: str = "") -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # the text itself is not repeated: it cannot be encoded in the answer either
        where = f"{what}'{path}'" if path else (what + "the body").strip()
        raise LmsError.invalid(f"{where[0].upper()}{where[1:]} holds a lone surrogate (\\ud800-\\udfff): not valid "
                               "Unicode text.", path or None) from None


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
