"""Anthropic's `POST /v1/messages`, as a thin translator: the request becomes a ChatInput (system, text and
image content, tool_use and tool_result blocks, tools and tool_choice) for the pipeline, and the parsed events
come back as Anthropic content blocks, streamed or not. `x-api-key` is accepted like a bearer token (see
RequireToken). Errors have Anthropic's shape, mapped from the error's kind here."""

from __future__ import annotations

import json

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from lms.api.context import pipeline_of
from lms.api.errors import from_validation, retry_after_headers, status_of
from lms.api.http import read_json
from lms.errors import Kind, LmsError
from lms.generation.ids import MIXED, new_id
from lms.generation.request import IMAGE_MARKER
from lms.pipeline import ChatInput, Usage

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
ERROR_TYPES = {Kind.INVALID: "invalid_request_error", Kind.UNAUTHORIZED: "authentication_error",
               Kind.FORBIDDEN: "permission_error", Kind.NOT_FOUND: "not_found_error",
               Kind.TOO_LARGE: "request_too_large", Kind.UNAVAILABLE: "overloaded_error"}


def _id(prefix: str) -> str:
    return new_id(prefix, 24, MIXED)


class _Sampling(BaseModel):
    max_tokens: int = Field(ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[str] | None = Field(None, max_length=16)


def _text_of(blocks, param: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise LmsError.invalid(f"'{param}' must be a string or an array of content blocks", param)
    texts = []
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise LmsError.invalid(f"'{param}[{index}]' must be a text block", f"{param}[{index}]")
        texts.append(block["text"])
    return "\n".join(texts)


def _image_url(source: dict, param: str) -> str:
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise LmsError.invalid(f"'{param}.source' must be a base64 or url image source", f"{param}.source")


def _messages(body: dict) -> tuple[list[dict], list[str]]:
    """Anthropic messages as the pipeline's chat messages (tool results become tool messages), and the image
    URLs in the order their markers appear."""
    messages, images = [], []
    if body.get("system"):
        messages.append({"role": "system", "content": _text_of(body["system"], "system")})
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise LmsError.missing("messages")
    for index, message in enumerate(body["messages"]):
        param = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise LmsError.invalid(f"'{param}.role' must be 'user' or 'assistant'", f"{param}.role")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise LmsError.invalid(f"'{param}.content' must be a string or an array of content blocks",
                                   f"{param}.content")
        texts, calls = [], []
        for number, block in enumerate(blocks):
            where = f"{param}.content[{number}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "image" and role == "user":
                images.append(_image_url(block.get("source") or {}, where))
                texts.append(IMAGE_MARKER)
            elif kind == "tool_use" and role == "assistant":
                if not isinstance(block.get("name"), str) or not block["name"]:
                    raise LmsError.invalid(f"'{where}.name' must be a string", f"{where}.name")
                calls.append({"id": block.get("id") or _id("toolu_"), "type": "function",
                              "function": {"name": block.get("name"),
                                           "arguments": json.dumps(block.get("input") or {})}})
            elif kind == "tool_result" and role == "user":
                result = block.get("content")
                text = _text_of(result, f"{where}.content") if result is not None else ""
                messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                                 "content": f"Error: {text}" if block.get("is_error") else text})
            elif kind in ("thinking", "redacted_thinking"):
                continue  # earlier thoughts are not shown to the model again
            else:
                raise LmsError.invalid(f"'{where}.type' {kind!r} is not supported here", f"{where}.type")
        if texts or calls:
            entry = {"role": role, "content": "".join(texts)}
            if calls:
                entry["tool_calls"] = calls
            messages.append(entry)
    return messages, images


def _tool_choice(choice) -> tuple[object, bool]:
    if choice is None:
        return None, True
    kind = choice.get("type") if isinstance(choice, dict) else None
    parallel = not choice.get("disable_parallel_tool_use", False) if isinstance(choice, dict) else True
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "name": choice["name"]}, parallel
    raise LmsError.invalid("'tool_choice.type' must be auto, any, tool or none", "tool_choice")


def _list_of_objects(body: dict, name: str) -> list[dict]:
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise LmsError.invalid(f"'{name}' must be a list of objects", name)
    return value


def to_input(body: dict) -> ChatInput:
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise LmsError.missing("max_tokens", "'max_tokens' is required and must be a positive integer")
    try:
        sampling = _Sampling.model_validate(body)
    except ValidationError as exc:
        raise from_validation(exc) from None
    choice, parallel = _tool_choice(body.get("tool_choice"))
    tools = [{"name": t.get("name"), "description": t.get("description") or "",
              "parameters": t.get("input_schema") or {"type": "object"}} for t in _list_of_objects(body, "tools")]
    if any(not isinstance(tool["name"], str) or not tool["name"] for tool in tools):
        raise LmsError.invalid("Each tool needs a name.", "tools")
    thinking = body.get("thinking") or {}
    if not isinstance(thinking, dict):
        raise LmsError.invalid("'thinking' must be an object: {type: enabled, budget_tokens} or {type: disabled}",
                               "thinking")
    if not isinstance(body.get("model"), (str, type(None))):
        raise LmsError.invalid("'model' must be a string", "model")
    messages, images = _messages(body)
    given = {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k}
    return ChatInput(model=body.get("model"), messages=messages, image_urls=images,
                     sampling={key: value for key, value in given.items() if value is not None},
                     max_tokens=sampling.max_tokens, stop=sampling.stop_sequences or [], tools=tools,
                     tool_choice=choice or "auto", parallel_tool_calls=parallel,
                     reasoning_effort="none" if thinking.get("type") == "disabled" else None)


async def count_tokens(request: Request):
    """`POST /v1/messages/count_tokens`: the body of /v1/messages without max_tokens, translated the same way
    (system, tools, tool_use and tool_result blocks, images, thinking) -> {"input_tokens"}: the prompt tokens that
    request would have, cached ones included (its usage splits them into input_tokens and cache_read_input_tokens)."""
    try:
        body = await read_json(request)
        chat = to_input({**body, "max_tokens": 1, "stream": False})
        return JSONResponse({"input_tokens": await pipeline_of(request).count_chat(chat)})
    except LmsError as exc:
        return _error(exc)


def _error(exc: LmsError) -> JSONResponse:
    status = status_of(exc)
    kind = ERROR_TYPES.get(exc.kind, "api_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"type": "error", "error": {"type": kind, "message": exc.message}}, status_code=status,
                        headers=retry_after_headers(exc))


def _usage(usage: Usage) -> dict:
    return {"input_tokens": usage.prompt_tokens - usage.cached_tokens, "output_tokens": usage.completion_tokens,
            "cache_read_input_tokens": usage.cached_tokens, "cache_creation_input_tokens": 0}


def _tool_block(event: dict) -> dict:
    return {"type": "tool_use", "id": "toolu_" + event["call_id"].removeprefix("call_"), "name": event["name"],
            "input": json.loads(event["arguments"] or "{}")}


async def messages(request: Request):
    try:
        body = await read_json(request)
        generation = await pipeline_of(request).chat(to_input(body))
        model = generation.model
        if body.get("stream"):
            return StreamingResponse(_stream(model.identifier, generation.events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        content, stop_reason, usage = [], "end_turn", Usage()
        async for event in generation.events:
            kind = event["type"]
            if kind in ("content", "reasoning") and event["text"]:
                block_type, key = ("text", "text") if kind == "content" else ("thinking", "thinking")
                if content and content[-1]["type"] == block_type:
                    content[-1][key] += event["text"]
                else:
                    content.append({"type": block_type, key: event["text"]}
                                   | ({"signature": ""} if block_type == "thinking" else {}))
            elif kind == "tool_call":
                content.append(_tool_block(event))
            elif kind == "done":
                stop_reason, usage = STOP_REASONS.get(event["finish_reason"], "end_turn"), Usage.of(event.get("usage"))
    except LmsError as exc:
        return _error(exc)
    return JSONResponse({"id": _id("msg_"), "type": "message", "role": "assistant", "model": model.identifier,
                         "content": content, "stop_reason": stop_reason, "stop_sequence": None,
                         "usage": _usage(usage)})


def _sse(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, separators=(',', ':'))}\n\n"


async def _stream(model: str, events):
    """message_start, then each block (start, deltas, stop), message_delta with the stop reason, message_stop."""
    message_id, index, open_block, input_tokens = _id("msg_"), -1, None, 0
    started = False
    try:
        async for event in events:
            kind = event["type"]
            if kind == "prompt":
                input_tokens = event.get("prompt_tokens", 0) - event.get("cached_tokens", 0)
            if not started:
                started = True
                yield _sse("message_start", {"message": {
                    "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
                    "stop_reason": None, "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 0}}})
            if kind in ("content", "reasoning") and event["text"]:
                block_type = "text" if kind == "content" else "thinking"
                if open_block != block_type:
                    if open_block:
                        yield _sse("content_block_stop", {"index": index})
                    index, open_block = index + 1, block_type
                    start = {"type": "text", "text": ""} if block_type == "text" else {"type": "thinking",
                                                                                      "thinking": ""}
                    yield _sse("content_block_start", {"index": index, "content_block": start})
                delta = {"type": "text_delta", "text": event["text"]} if block_type == "text" else {
                    "type": "thinking_delta", "thinking": event["text"]}
                yield _sse("content_block_delta", {"index": index, "delta": delta})
            elif kind == "tool_call":
                if open_block:
                    yield _sse("content_block_stop", {"index": index})
                index, open_block = index + 1, None
                block = _tool_block(event)
                yield _sse("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
                yield _sse("content_block_delta", {"index": index, "delta": {"type": "input_json_delta",
                                                                             "partial_json": event["arguments"]}})
                yield _sse("content_block_stop", {"index": index})
            elif kind == "done":
                if open_block:
                    yield _sse("content_block_stop", {"index": index})
                usage = _usage(Usage.of(event.get("usage")))
                yield _sse("message_delta", {"delta": {"stop_reason": STOP_REASONS.get(event["finish_reason"],
                                                                                       "end_turn"),
                                                       "stop_sequence": None},
                                             "usage": {"output_tokens": usage["output_tokens"]}})
                yield _sse("message_stop", {})
    except LmsError as exc:
        yield _sse("error", {"error": {"type": "api_error", "message": exc.message}})
