"""POST /v1/chat/completions (and LM Studio's /api/v0/chat/completions, which adds stats, model_info and
runtime): the body becomes a ChatInput for the pipeline; parsed events come back as a completion or chunks."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from lms.api.context import pipeline_of
from lms.api.errors import openai_error
from lms.api.http import read_json, sse, until_disconnect
from lms.api.openai.schemas import ChatCompletionBody
from lms.api.openai.usage import openai_usage
from lms.errors import LmsError
from lms.generation.ids import new_id
from lms.manager.models import LoadedModel
from lms.pipeline import Usage
from lms.pipeline.stats import details


def _tool_call(event: dict, index: int | None = None) -> dict:
    call = {"id": event["call_id"], "type": "function",
            "function": {"name": event["name"], "arguments": event["arguments"]}}
    return call if index is None else {"index": index, **call}


async def chat_completions(request: Request, native: bool = False):
    body = ChatCompletionBody.model_validate(await read_json(request))
    generation = await pipeline_of(request).chat(body.to_input())
    reasoning_field = request.app.state.settings.reasoning_field
    completion_id = new_id("chatcmpl-", 21)
    if body.stream:
        return sse(_stream(completion_id, generation.model, generation.events, body, reasoning_field, native))
    outcome = await until_disconnect(request, generation.collect())
    message = {"role": "assistant", "content": outcome.text}
    if outcome.reasoning:
        message[reasoning_field] = outcome.reasoning
    if outcome.tool_calls:
        message["tool_calls"] = [_tool_call(call) for call in outcome.tool_calls]
    model = generation.model
    return JSONResponse({
        "id": completion_id, "object": "chat.completion", "created": outcome.created, "model": model.identifier,
        "system_fingerprint": model.identifier,
        "choices": [{"index": 0, "message": message,
                     "logprobs": {"content": outcome.logprobs} if body.logprobs else None,
                     "finish_reason": outcome.finish_reason}],
        "usage": openai_usage(outcome.usage),
        **details(model, outcome.stats, outcome.finish_reason, native),
    })


async def v0_chat_completions(request: Request):
    return await chat_completions(request, native=True)


async def _stream(completion_id: str, loaded: LoadedModel, events, body: ChatCompletionBody, reasoning_field: str,
                  native: bool):
    created = int(time.time())
    model = loaded.identifier
    include_usage = body.include_usage

    def chunk(delta: dict, finish_reason: str | None = None, token_logprobs: list | None = None) -> dict:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                             "logprobs": {"content": token_logprobs} if body.logprobs and token_logprobs else None}]}
        if include_usage:
            data["usage"] = None
        return data

    yield chunk({"role": "assistant", "content": ""})
    calls = 0
    try:
        async for event in events:
            kind = event["type"]
            if kind == "content":
                yield chunk({"content": event["text"]}, token_logprobs=event.get("logprobs"))
            elif kind == "reasoning":
                yield chunk({reasoning_field: event["text"]})
            elif kind == "tool_call":
                yield chunk({"tool_calls": [_tool_call(event, calls)]})
                calls += 1
            elif kind == "done":
                last = chunk({}, event["finish_reason"])
                last.update(details(loaded, event.get("stats") or {}, event["finish_reason"], native))
                yield last
                if include_usage:
                    yield {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": model, "choices": [],
                           "usage": openai_usage(Usage.of(event.get("usage")))}
    except LmsError as exc:
        yield {"error": openai_error(exc)}
    yield "[DONE]"
