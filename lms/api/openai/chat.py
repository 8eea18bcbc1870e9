"""POST /v1/chat/completions."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse

from lms.api.generate import collect, error_chunk, new_id, openai_usage, primed
from lms.api.http import read_json, sse, until_disconnect
from lms.api.images import load_image
from lms.api.native.details import draft_stats, native_details
from lms.api.openai.schemas import ChatCompletionBody
from lms.api.semantic import ParseOptions, semantic_events
from lms.generation.request import GenerationError
from lms.generation.tools import describe_tools_if_needed, render_tool_calls_as_text, template_knows_tool_calls
from lms.manager.models import LoadedModel
from lms.presets import apply_to_chat


def _tool_call(event: dict, index: int | None = None) -> dict:
    call = {"id": event["call_id"], "type": "function",
            "function": {"name": event["name"], "arguments": event["arguments"]}}
    return call if index is None else {"index": index, **call}


async def start_chat(app, body: ChatCompletionBody) -> tuple[LoadedModel, AsyncIterator[dict]]:
    """Load the model if needed and start the generation; returns its semantic events. Shared by every
    surface that speaks in chat messages (OpenAI chat, LM Studio's v0 chat, Anthropic messages)."""
    generation = body.to_request()
    manager = app.state.manager
    model = await manager.get_or_load(body.model, body.ttl)
    plan = body.tool_plan()
    if not template_knows_tool_calls(model.entry.chat_template):
        generation.messages = render_tool_calls_as_text(generation.messages)
    generation.messages = describe_tools_if_needed(generation.messages, plan, model.entry.chat_template)
    image_urls = [url for message in body.messages for url in message.image_urls()]
    if image_urls and not model.entry.vision:
        raise GenerationError(f"Model '{model.identifier}' does not accept images: it has no vision projector "
                              "(an mmproj file beside the model).", status=400, code="model_not_supported",
                              param="messages")
    generation.images = [base64.b64encode(await load_image(url, "messages")).decode() for url in image_urls]
    options = ParseOptions(reasoning=body.reasoning_effort != "none", tools=plan, template=model.entry.chat_template)
    return model, semantic_events(manager.generate(model, generation.to_dict()), options)


async def chat_completions(request: Request, native: bool = False):
    """POST /v1/chat/completions; `native` adds LM Studio's stats, model_info and runtime (/api/v0)."""
    body = ChatCompletionBody.model_validate(apply_to_chat(await read_json(request)))
    model, events = await start_chat(request.app, body)
    reasoning_field = request.app.state.settings.reasoning_field
    completion_id = new_id("chatcmpl-")
    if body.stream:
        return sse(_stream(completion_id, model, await primed(events), body, reasoning_field, native))
    outcome = await until_disconnect(request, collect(events))
    message = {"role": "assistant", "content": outcome.text}
    if outcome.reasoning:
        message[reasoning_field] = outcome.reasoning
    if outcome.tool_calls:
        message["tool_calls"] = [_tool_call(call) for call in outcome.tool_calls]
    return JSONResponse({
        "id": completion_id,
        "object": "chat.completion",
        "created": outcome.created,
        "model": model.identifier,
        "system_fingerprint": model.identifier,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": {"content": outcome.logprobs} if body.logprobs else None,
            "finish_reason": outcome.finish_reason,
        }],
        "usage": openai_usage(outcome.usage),
        **(native_details(model, outcome.stats, outcome.finish_reason) if native else _speculative(outcome.stats)),
    })


def _speculative(raw_stats: dict) -> dict:
    """With a draft model, LM Studio's draft counters ride along as `stats` (OpenAI clients ignore the field)."""
    found = draft_stats(raw_stats or {})
    return {"stats": found} if found else {}


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
                last.update(native_details(loaded, event.get("stats") or {}, event["finish_reason"]) if native
                            else _speculative(event.get("stats")))
                yield last
                if include_usage:
                    yield {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": model, "choices": [], "usage": openai_usage(event["usage"] or {})}
    except GenerationError as exc:
        yield error_chunk(exc)
    yield "[DONE]"
