"""POST /v1/completions: a raw prompt, no chat template."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from lms.api.generate import collect, error_chunk, new_id, openai_usage, primed
from lms.api.http import read_json, sse, until_disconnect
from lms.api.native.details import native_details
from lms.api.openai.schemas import CompletionBody
from lms.generation.request import GenerationError


def _body(completion_id: str, model: str, created: int, text: str, finish_reason: str | None) -> dict:
    return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}


async def completions(request: Request, native: bool = False):
    """POST /v1/completions; `native` adds LM Studio's stats, model_info and runtime (/api/v0)."""
    body = CompletionBody.model_validate(await read_json(request))
    generation = body.to_request()
    manager = request.app.state.manager
    model = await manager.get_or_load(body.model, body.ttl)
    events = manager.generate(model, generation.to_dict())
    completion_id = new_id("cmpl-")
    echo = generation.prompt if body.echo else ""
    if body.stream:
        return sse(_stream(completion_id, model, await primed(events), body.include_usage, echo, native))
    outcome = await until_disconnect(request, collect(events))
    result = _body(completion_id, model.identifier, outcome.created, echo + outcome.text, outcome.finish_reason)
    result["usage"] = openai_usage(outcome.usage)
    if native:
        result.update(native_details(model, outcome.stats, outcome.finish_reason))
    return JSONResponse(result)


async def _stream(completion_id: str, loaded, events, include_usage: bool, echo: str, native: bool):
    created = int(time.time())
    model = loaded.identifier
    if echo:
        yield _body(completion_id, model, created, echo, None)
    try:
        async for event in events:
            if event["type"] == "text":
                yield _body(completion_id, model, created, event["text"], None)
            elif event["type"] == "done":
                last = _body(completion_id, model, created, "", event["finish_reason"])
                if native:
                    last.update(native_details(loaded, event.get("stats") or {}, event["finish_reason"]))
                yield last
                if include_usage:
                    usage = {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                             "choices": [], "usage": openai_usage(event["usage"] or {})}
                    yield usage
    except GenerationError as exc:
        yield error_chunk(exc)
    yield "[DONE]"
