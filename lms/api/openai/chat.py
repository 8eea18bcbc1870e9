"""POST /v1/chat/completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from lms.api.generate import collect, error_chunk, new_id, openai_usage, primed
from lms.api.http import read_json, sse, until_disconnect
from lms.api.openai.schemas import ChatCompletionBody
from lms.generation.request import GenerationError


async def chat_completions(request: Request):
    body = ChatCompletionBody.model_validate(await read_json(request))
    generation = body.to_request().to_dict()
    manager = request.app.state.manager
    model = await manager.get_or_load(body.model, body.ttl)
    events = manager.generate(model, generation)
    completion_id = new_id("chatcmpl-")
    if body.stream:
        return sse(_stream(completion_id, model.identifier, await primed(events), body.include_usage))
    outcome = await until_disconnect(request, collect(events))
    return JSONResponse({
        "id": completion_id,
        "object": "chat.completion",
        "created": outcome.created,
        "model": model.identifier,
        "system_fingerprint": model.identifier,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": outcome.text},
            "logprobs": None,
            "finish_reason": outcome.finish_reason,
        }],
        "usage": openai_usage(outcome.usage),
    })


async def _stream(completion_id: str, model: str, events, include_usage: bool):
    import time

    created = int(time.time())

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if include_usage:
            data["usage"] = None
        return data

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event in events:
            if event["type"] == "text":
                yield chunk({"content": event["text"]})
            elif event["type"] == "done":
                yield chunk({}, event["finish_reason"])
                if include_usage:
                    yield {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": model, "choices": [], "usage": openai_usage(event["usage"] or {})}
    except GenerationError as exc:
        yield error_chunk(exc)
    yield "[DONE]"
