"""POST /api/chat and POST /api/generate: Ollama's bodies become pipeline inputs; parsed events come back as
NDJSON lines (or one object with `stream: false`), ending with `done`, `done_reason` and the durations."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import JSONResponse

from lms import presets
from lms.api.context import pipeline_of
from lms.api.http import read_json, until_disconnect
from lms.api.ollama import library, names
from lms.api.ollama.keep_alive import keep_alive_seconds, model_for
from lms.api.ollama.schemas import ChatBody, GenerateBody, GenerationBody
from lms.api.ollama.template import render
from lms.api.ollama.wire import Timer, nanoseconds, ndjson, now_rfc3339, ollama_route
from lms.errors import LmsError
from lms.manager.models import ModelManager
from lms.pipeline import Generation

DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop", "cancelled": "stop"}


async def _load_or_unload(request: Request, body: GenerationBody, answer: dict):
    """An empty prompt or message list only loads the model, or with keep_alive 0 unloads it."""
    manager: ModelManager = request.app.state.manager
    keep_alive = keep_alive_seconds(body.keep_alive)
    base = {"model": body.model, "created_at": now_rfc3339(), **answer, "done": True}
    if keep_alive == 0:
        names.resolve(manager, body.model)
        loaded = manager.find_loaded(names.target(manager, body.model))
        if loaded is not None:
            if loaded.active:
                loaded.evict_when_idle = True
            else:
                with contextlib.suppress(LmsError):
                    await manager.unload(loaded.identifier)
        result = {**base, "done_reason": "unload"}
    else:
        await model_for(request, body.model, body.keep_alive, Timer(), body.options.num_ctx)
        result = {**base, "done_reason": "load"}
    return ndjson(_one(result)) if body.stream else JSONResponse(result)


async def _one(item: dict):
    yield item


def _final(name: str, event: dict, timer: Timer) -> dict:
    stats, usage = event.get("stats") or {}, event.get("usage") or {}
    first_token = stats.get("time_to_first_token") or 0.0
    return {"model": name, "created_at": now_rfc3339(), "done": True,
            "done_reason": DONE_REASONS.get(event.get("finish_reason"), "stop"),
            "total_duration": timer.total(), "load_duration": nanoseconds(timer.load_seconds),
            "prompt_eval_count": usage.get("prompt_tokens", 0), "prompt_eval_duration": nanoseconds(first_token),
            "eval_count": usage.get("completion_tokens", 0),
            "eval_duration": nanoseconds((stats.get("generation_time") or 0.0) - first_token)}


def _tool_call(event: dict) -> dict:
    try:
        arguments = json.loads(event["arguments"] or "{}")
    except ValueError:
        arguments = {}
    return {"function": {"name": event["name"], "arguments": arguments if isinstance(arguments, dict) else {}}}


async def _pieces(generation: Generation, name: str, timer: Timer, shape):
    """Each parsed event as an Ollama line (`shape` puts text, thinking or tool calls where the route wants
    them); the `done` line last."""
    async for event in generation.events:
        kind = event["type"]
        if kind in ("content", "text"):
            line = shape(content=event["text"])
            if event.get("logprobs"):
                line["logprobs"] = event["logprobs"]
        elif kind == "reasoning":
            line = shape(thinking=event["text"])
        elif kind == "tool_call":
            line = shape(tool_calls=[_tool_call(event)])
        elif kind == "done":
            line = {**shape(), **_final(name, event, timer)}
        else:
            continue
        yield {"model": name, "created_at": now_rfc3339(), "done": False, **line}


async def _collected(lines) -> dict:
    """The lines of a stream folded into one answer, as `stream: false` gives it."""
    answer: dict = {}
    texts: dict[str, list[str]] = {}
    calls, logprobs = [], []
    async for line in lines:
        for holder in (line, line.get("message") or {}):
            for field in ("content", "response", "thinking"):
                if holder.get(field):
                    texts.setdefault(field, []).append(holder[field])
            calls.extend(holder.get("tool_calls") or ())
        logprobs.extend(line.get("logprobs") or ())
        answer = line
    message = answer.get("message")
    for field, parts in texts.items():
        (message if message is not None and field != "response" else answer)[field] = "".join(parts)
    if calls and message is not None:
        message["tool_calls"] = calls
    if logprobs:
        answer["logprobs"] = logprobs
    return answer


async def _respond(request: Request, body: GenerationBody, lines):
    if body.stream:
        return ndjson(lines)
    return JSONResponse(await until_disconnect(request, _collected(lines)))


@ollama_route
async def chat(request: Request):
    body = ChatBody.model_validate(await read_json(request, any_type_outside_browsers=True))
    if not body.messages:
        return await _load_or_unload(request, body, {"message": {"role": "assistant", "content": ""}})
    timer = Timer()
    model, name = await model_for(request, body.model, body.keep_alive, timer, body.options.num_ctx)
    preset, _ = library.carried(model.entry.model_key)
    chat_input = replace(body.to_input(model.identifier, None), preset=preset)
    generation = await pipeline_of(request).chat(chat_input, model=model)

    def shape(content: str = "", thinking: str | None = None, tool_calls: list | None = None) -> dict:
        message = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {"message": message}

    return await _respond(request, body, _pieces(generation, name, timer, shape))


@ollama_route
async def generate(request: Request):
    body = GenerateBody.model_validate(await read_json(request, any_type_outside_browsers=True))
    if not body.prompt and not body.suffix:
        return await _load_or_unload(request, body, {"response": ""})
    timer = Timer()
    model, name = await model_for(request, body.model, body.keep_alive, timer, body.options.num_ctx)
    pipeline = pipeline_of(request)
    preset, carried_template = library.carried(model.entry.model_key)
    template = body.template or (carried_template if not body.raw else None)
    if body.suffix or body.raw or template:
        if body.images:
            raise LmsError.invalid("images need the model's chat template: leave out raw, suffix and template",
                                   "images")
        prompt = body.prompt
        if template and not body.suffix and not body.raw:
            system = body.system or (presets.load(preset).system_prompt if preset else None)
            prompt = render(template, {"System": system or "", "Prompt": body.prompt, "Suffix": ""})
        generation = await pipeline.completion(body.completion_input(model.identifier, None, prompt))
    else:
        chat_input = replace(body.chat_input(model.identifier, None), preset=preset)
        generation = await pipeline.chat(chat_input, model=model)

    def shape(content: str = "", thinking: str | None = None, tool_calls: list | None = None) -> dict:
        line = {"response": content}
        if thinking:
            line["thinking"] = thinking
        return line

    return await _respond(request, body, _pieces(generation, name, timer, shape))
