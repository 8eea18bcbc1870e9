"""Anthropic's `POST /v1/messages`, as a thin translator: the request becomes a chat body (system, text and
image content, tool_use and tool_result blocks, tools and tool_choice) run by the shared chat pipeline, and the
semantic events come back as Anthropic content blocks, streamed or not. `x-api-key` is accepted like a bearer
token (see RequireToken). Errors have Anthropic's shape."""

from __future__ import annotations

import json
import secrets
import string

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from lms.api.errors import from_validation
from lms.api.generate import primed
from lms.api.http import read_json
from lms.api.openai.chat import start_chat
from lms.api.openai.schemas import ChatCompletionBody
from lms.generation.request import GenerationError

_ALPHABET = string.ascii_letters + string.digits
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"}


def _id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def _bad(message: str, param: str) -> GenerationError:
    return GenerationError(message, status=400, code="invalid_value", param=param)


def _text_of(blocks, param: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _bad(f"'{param}' must be a string or an array of content blocks", param)
    texts = []
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _bad(f"'{param}[{index}]' must be a text block", f"{param}[{index}]")
        texts.append(block["text"])
    return "\n".join(texts)


def _image_url(source: dict, param: str) -> str:
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise _bad(f"'{param}.source' must be a base64 or url image source", f"{param}.source")


def _messages(body: dict) -> list[dict]:
    """Anthropic messages as OpenAI chat messages (tool results become tool messages)."""
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text_of(body["system"], "system")})
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise GenerationError("'messages' is required", status=400, code="missing_required_parameter",
                              param="messages")
    for index, message in enumerate(body["messages"]):
        param = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _bad(f"'{param}.role' must be 'user' or 'assistant'", f"{param}.role")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise _bad(f"'{param}.content' must be a string or an array of content blocks", f"{param}.content")
        parts, calls = [], []
        for number, block in enumerate(blocks):
            where = f"{param}.content[{number}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": str(block.get("text", ""))})
            elif kind == "image" and role == "user":
                parts.append({"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {}, where)}})
            elif kind == "tool_use" and role == "assistant":
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
                raise _bad(f"'{where}.type' {kind!r} is not supported here", f"{where}.type")
        if parts or calls:
            entry = {"role": role, "content": parts if any(p["type"] == "image_url" for p in parts)
                     else "".join(p["text"] for p in parts)}
            if calls:
                entry["tool_calls"] = calls
            messages.append(entry)
    return messages


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
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise _bad("'tool_choice.type' must be auto, any, tool or none", "tool_choice")


def _list_of_objects(body: dict, name: str) -> list[dict]:
    value = body.get(name) or []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise _bad(f"'{name}' must be a list of objects", name)
    return value


def to_chat(body: dict) -> ChatCompletionBody:
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise GenerationError("'max_tokens' is required and must be a positive integer", status=400,
                              code="missing_required_parameter", param="max_tokens")
    choice, parallel = _tool_choice(body.get("tool_choice"))
    tools = [{"type": "function", "function": {"name": t.get("name"), "description": t.get("description") or "",
                                               "parameters": t.get("input_schema") or {"type": "object"}}}
             for t in _list_of_objects(body, "tools")]
    thinking = body.get("thinking") or {}
    if not isinstance(thinking, dict):
        raise _bad("'thinking' must be an object: {type: enabled, budget_tokens} or {type: disabled}", "thinking")
    chat = {"model": body.get("model"), "messages": _messages(body), "max_tokens": body["max_tokens"],
            "stop": body.get("stop_sequences"), "temperature": body.get("temperature"), "top_p": body.get("top_p"),
            "top_k": body.get("top_k"), "stream": bool(body.get("stream")), "tools": tools or None,
            "tool_choice": choice, "parallel_tool_calls": parallel,
            "reasoning_effort": "none" if thinking.get("type") == "disabled" else None}
    try:
        return ChatCompletionBody.model_validate({k: v for k, v in chat.items() if v is not None})
    except ValidationError as exc:
        raise from_validation(exc) from None


def _error(exc: GenerationError) -> JSONResponse:
    kind = ERROR_TYPES.get(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error")
    return JSONResponse({"type": "error", "error": {"type": kind, "message": exc.message}}, status_code=exc.status)


def _usage(usage: dict) -> dict:
    cached = usage.get("cached_tokens", 0)
    return {"input_tokens": usage.get("prompt_tokens", 0) - cached, "output_tokens": usage.get("completion_tokens", 0),
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}


def _tool_block(event: dict) -> dict:
    return {"type": "tool_use", "id": "toolu_" + event["call_id"].removeprefix("call_"), "name": event["name"],
            "input": json.loads(event["arguments"] or "{}")}


async def messages(request: Request):
    try:
        body = await read_json(request)
        chat = to_chat(body)
        model, events = await start_chat(request.app, chat)
        if body.get("stream"):
            return StreamingResponse(_stream(model.identifier, await primed(events)), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        content, stop_reason, usage = [], "end_turn", {}
        async for event in events:
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
                stop_reason, usage = STOP_REASONS.get(event["finish_reason"], "end_turn"), event.get("usage") or {}
    except GenerationError as exc:
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
                usage = _usage(event.get("usage") or {})
                yield _sse("message_delta", {"delta": {"stop_reason": STOP_REASONS.get(event["finish_reason"],
                                                                                       "end_turn"),
                                                       "stop_sequence": None},
                                             "usage": {"output_tokens": usage["output_tokens"]}})
                yield _sse("message_stop", {})
    except GenerationError as exc:
        yield _sse("error", {"error": {"type": "api_error", "message": exc.message}})
