"""POST /v1/completions (and /api/v0/completions with LM Studio's extras): a raw prompt, no chat template."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from lms.api.context import pipeline_of
from lms.api.errors import openai_error
from lms.api.http import read_json, sse, until_disconnect
from lms.api.openai.schemas import CompletionBody
from lms.api.openai.usage import openai_usage
from lms.errors import LmsError
from lms.generation.ids import new_id
from lms.pipeline import Usage
from lms.pipeline.stats import details


def _body(completion_id: str, model: str, created: int, text: str, finish_reason: str | None) -> dict:
    return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}


async def completions(request: Request, native: bool = False):
    body = CompletionBody.model_validate(await read_json(request))
    completion = body.to_input()
    generation = await pipeline_of(request).completion(completion)
    completion_id = new_id("cmpl-", 21)
    echo = completion.prompt if body.echo else ""
    if body.stream:
        return sse(_stream(completion_id, generation.model, generation.events, body.include_usage, echo, native))
    outcome = await until_disconnect(request, generation.collect())
    model = generation.model
    result = _body(completion_id, model.identifier, outcome.created, echo + outcome.text, outcome.finish_reason)
    result["usage"] = openai_usage(outcome.usage)
    result.update(details(model, outcome.stats, outcome.finish_reason, native))
    return JSONResponse(result)


async def v0_completions(request: Request):
    return await completions(request, native=True)


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
                last.update(details(loaded, event.get("stats") or {}, event["finish_reason"], native))
                yield last
                if include_usage:
                    yield {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                           "choices": [], "usage": openai_usage(Usage.of(event.get("usage")))}
    except LmsError as exc:
        yield {"error": openai_error(exc)}
    yield "[DONE]"
