"""LM Studio's `POST /api/v1/chat`: stateful chat with MCP integrations, a thin translator onto a conversation
turn (the machinery /v1/responses runs too).

The request becomes a Responses request (input, `system_prompt` as instructions, integrations as `mcp` tools
that run without asking, reasoning, sampling, `previous_response_id`); the run's items and events come back in
LM Studio's native shapes: output items `message`, `reasoning`, `tool_call`, `invalid_tool_call`, and SSE events
from `chat.start` to `chat.end`: `model_load.start/progress/end` when the request loads its model (with its
`context_length`), `prompt_processing.start/progress/end` while the prompt is evaluated.

A model's call of a tool the request does not offer, or with arguments its input schema refuses, is an
`invalid_tool_call` item (`tool_call.failure` when streamed); such a call never reaches the MCP server, and the
model reads the error and goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from lms.api.context import session_of
from lms.api.errors import from_validation, status_of
from lms.api.http import read_json, until_disconnect
from lms.conversation.request import CreateResponse
from lms.conversation.turn import ResponseRun
from lms.errors import LmsError
from lms.pipeline import ChatInput

REASONING = {"off": "none", "on": "medium", "low": "low", "medium": "medium", "high": "high"}
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_output_tokens", "store",
            "previous_response_id", "draft_model", "speculative")
INVALID_ARGUMENTS_CODE = -32602  # JSON-RPC's invalid params, as an MCP server answers such a call



def _input(value) -> str | list[dict]:
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise LmsError.invalid("'input' must be a string or a non-empty array of message, text and image items",
                               "input")
    parts = []
    for index, item in enumerate(value):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind in ("message", "text") and isinstance(item.get("content"), str):
            parts.append({"type": "input_text", "text": item["content"]})
        elif kind == "image" and isinstance(item.get("data_url"), str):
            parts.append({"type": "input_image", "image_url": item["data_url"]})
        else:
            raise LmsError.invalid(f"'input[{index}]' must be {{type: message|text, content}} or "
                                   "{type: image, data_url}", f"input[{index}]")
    return [{"type": "message", "role": "user", "content": parts}]


def _integration(value, index: int) -> dict:
    """`"mcp/NAME"` or {type: plugin, id: "mcp/NAME"} (a server of mcp.json), or {type: ephemeral_mcp, ...}."""
    param = f"integrations[{index}]"
    if isinstance(value, str):
        value = {"type": "plugin", "id": value}
    if not isinstance(value, dict):
        raise LmsError.invalid(f"'{param}' must be a string or an object", param)
    tool = {"type": "mcp", "require_approval": "never", "allowed_tools": value.get("allowed_tools")}
    if value.get("type") == "plugin" and str(value.get("id", "")).startswith("mcp/"):
        return {**tool, "server_label": value["id"][len("mcp/"):]}
    if value.get("type") == "ephemeral_mcp":
        return {**tool, "server_label": value.get("server_label"), "server_url": value.get("server_url"),
                "headers": value.get("headers")}
    raise LmsError.invalid(f"'{param}' must name an MCP server: 'mcp/<name>', a plugin 'mcp/<name>' or an "
                           "ephemeral_mcp", param)


def to_responses(body: dict) -> CreateResponse:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise LmsError.invalid("'model' is required", "model", code="missing_required_parameter")
    if "input" not in body:
        raise LmsError.invalid("'input' is required", "input", code="missing_required_parameter")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous.startswith("resp_")):
        raise LmsError.invalid("'previous_response_id' must be a response id starting with 'resp_'",
                               "previous_response_id")
    reasoning = body.get("reasoning")
    if reasoning is not None and (not isinstance(reasoning, str) or reasoning not in REASONING):
        raise LmsError.invalid(f"'reasoning' must be one of {', '.join(REASONING)}", "reasoning")
    integrations = body.get("integrations") or []
    if not isinstance(integrations, list):
        raise LmsError.invalid("'integrations' must be a list", "integrations")
    translated = {"model": body["model"], "input": _input(body["input"]), "instructions": body.get("system_prompt"),
                  "tools": [_integration(v, i) for i, v in enumerate(integrations)],
                  **{key: body[key] for key in SAMPLING if body.get(key) is not None}}
    if reasoning:
        translated["reasoning"] = {"effort": REASONING[reasoning]}
    try:
        return CreateResponse.model_validate(translated)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _provider(item: dict, local: set[str]) -> dict:
    label = item["server_label"]
    return {"type": "plugin", "plugin_id": f"mcp/{label}"} if label in local else {"type": "ephemeral_mcp",
                                                                                    "server_label": label}


def _arguments(text: str):
    try:
        return json.loads(text or "{}")
    except ValueError:
        return text


def context_length_of(body: dict) -> int | None:
    """The request's `context_length`: the context of a model this request loads (one loaded already keeps its
    own)."""
    value = body.get("context_length")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise LmsError.invalid("'context_length' must be a positive integer", "context_length")
    return value


def invalid_arguments(schema: dict | None, arguments: str) -> str | None:
    """Why a call's arguments do not fit the tool's input schema (JSON Schema), or None when they do."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError as exc:
        return f"The arguments are not valid JSON: {exc}."
    if not isinstance(value, dict):
        return "The arguments are not a JSON object."
    if not schema:
        return None
    import jsonschema

    try:
        validator = jsonschema.validators.validator_for(schema)
        validator.check_schema(schema)
    except jsonschema.SchemaError:
        return None  # a schema we cannot read refuses nothing: the tool's server judges
    error = jsonschema.exceptions.best_match(validator(schema).iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"The arguments do not match the tool's input schema{f' at {where!r}' if where else ''}: {error.message}."


def _invalid_call(item: dict, local: set[str], invalid: dict[str, str]) -> dict | None:
    """An invalid_tool_call output item for a call of an unknown tool (a function_call: this endpoint offers only
    integrations) or one whose arguments were refused; None for any other item."""
    if item["type"] == "function_call":
        return {"type": "invalid_tool_call",
                "reason": f"The model called a tool that this request does not offer: '{item['name']}'.",
                "metadata": {"type": "invalid_name", "tool_name": item["name"],
                             "arguments": _arguments(item["arguments"])}}
    if item["type"] == "mcp_call" and item.get("id") in invalid:
        return {"type": "invalid_tool_call", "reason": invalid[item["id"]],
                "metadata": {"type": "invalid_arguments", "tool_name": item["name"],
                             "arguments": _arguments(item["arguments"]), "provider_info": _provider(item, local)}}
    return None


def _output_item(item: dict, local: set[str], invalid: dict[str, str] | None = None) -> dict | None:
    kind = item["type"]
    if (refused := _invalid_call(item, local, invalid or {})) is not None:
        return refused
    if kind == "message":
        return {"type": "message", "content": "".join(p.get("text", "") for p in item["content"])}
    if kind == "reasoning":
        return {"type": "reasoning", "content": "".join(p.get("text", "") for p in item.get("content") or [])}
    if kind == "mcp_call":
        error = item.get("error")
        return {"type": "tool_call", "tool": item["name"], "arguments": _arguments(item["arguments"]),
                "output": item["output"] if not error else f"Error: {error.get('message') or error}",
                "provider_info": _provider(item, local)}
    return None


class _Clock:
    def __init__(self, loaded_before: bool):
        self.started, self.first = time.perf_counter(), None
        self.loaded_before = loaded_before

    def load_seconds(self, run: ResponseRun) -> float:
        return run.model.load_seconds if run.model and not self.loaded_before else 0.0

    def result(self, run: NativeRun, local: set[str]) -> dict:
        response = run.response or {}
        usage = response.get("usage") or {}
        ended = time.perf_counter()
        if run.first_token_at is not None and (self.first is None or run.first_token_at < self.first):
            self.first = run.first_token_at
        output_tokens = usage.get("output_tokens", 0)
        decode = ended - (self.first or ended)
        load = self.load_seconds(run)
        stats = {"input_tokens": usage.get("input_tokens", 0), "total_output_tokens": output_tokens,
                 "reasoning_output_tokens": (usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0),
                 "tokens_per_second": round(output_tokens / decode, 3) if decode > 0 else None,
                 "time_to_first_token_seconds": round((self.first or ended) - self.started - load, 3)}
        if load:
            stats["model_load_time_seconds"] = round(load, 3)
        invalid = getattr(run, "invalid", {})
        result = {"model_instance_id": run.model.identifier if run.model else run.body.model,
                  "output": [o for o in (_output_item(i, local, invalid) for i in response.get("output", [])) if o],
                  "stats": stats}
        if run.body.store and response.get("id"):
            result["response_id"] = response["id"]
        return result


class NativeRun(ResponseRun):
    """A conversation turn as /api/v1/chat runs it: prompt progress reported, and tool calls whose arguments the
    tool's schema refuses answered with an error (the model reads it) instead of being sent to the server."""

    def __init__(self, body: CreateResponse, session):
        super().__init__(body, session)
        self.invalid: dict[str, str] = {}  # mcp_call item id -> why its arguments were refused
        self.first_token_at: float | None = None  # the prompt evaluated: a call held back until it closes still
        # counts its tokens from here

    def _chat_input(self) -> ChatInput:
        return replace(super()._chat_input(), prompt_progress=True, unknown_tool_calls=True)

    async def _round(self, events):
        """The prompt's progress events (all before its first token) go out as they come, the rest as a turn's."""
        iterator = aiter(events)
        first = None
        async for event in iterator:
            if event["type"] != "prompt_progress":
                first = event
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                break
            yield event

        async def rest():
            if first is not None:
                yield first
            async for event in iterator:
                yield event

        async for out in super()._round(rest()):
            yield out

    async def _mcp_call(self, label: str, name: str, arguments: str, approval_request_id: str | None = None):
        tool = self.toolset.tools.get(name)
        reason = invalid_arguments(tool[1].input_schema if tool else None, arguments)
        if reason is None:
            async for out in super()._mcp_call(label, name, arguments, approval_request_id):
                yield out
            return
        where, opening = self.writer.mcp_call_started(label, name, arguments, approval_request_id)
        for out in opening:
            yield out
        self.invalid[where["item_id"]] = reason
        error = {"type": "mcp_protocol_error", "code": INVALID_ARGUMENTS_CODE, "message": reason}
        for out in self.writer.mcp_call_finished(where, label, name, arguments, approval_request_id, None, error):
            yield out


async def _model_to_load(manager, name: str) -> str | None:
    """The model key a request for `name` loads just in time, or None when nothing loads (it is loaded, it is an
    upstream's, or JIT loading is off: the turn then says why it cannot run). An unknown model is a 404 here."""
    if manager.find_loaded(name) is not None or not manager.settings.jit_loading:
        return None
    if await manager.upstreams.find(name):
        return None
    return manager.resolve(name).model_key


async def chat(request: Request):
    raw = await read_json(request)
    body = to_responses(raw)
    context_length = context_length_of(raw)
    session = session_of(request)
    run = NativeRun(body, session)
    local = {s.label for s in run.mcp_servers if s.local}
    pipeline = session.pipeline
    loading = await _model_to_load(pipeline.manager, body.model)
    clock = _Clock(loading is None)
    events = run.events()
    if loading is not None and raw.get("stream"):
        return StreamingResponse(_stream_loading(loading, context_length, events, run, clock, local),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    if loading is not None:
        await pipeline.model(body.model, body.ttl, context_length)
    if not raw.get("stream"):
        async def finish():
            async for event in events:
                if event["type"].endswith(".delta") and clock.first is None:
                    clock.first = time.perf_counter()

        await until_disconnect(request, finish())
        if run.error:
            raise run.error
        return JSONResponse(clock.result(run, local))
    first = await anext(events)  # errors before the first event are plain HTTP errors
    return StreamingResponse(_stream(first, events, run, clock, local), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _sse(kind: str, **fields) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields}, separators=(',', ':'))}\n\n"


def _error_event(error: LmsError) -> str:
    return _sse("error", error={"type": "unknown" if status_of(error) >= 500 else "invalid_request",
                                "message": error.message, "code": error.code, "param": error.param})


async def _stream_loading(model_key: str, context_length: int | None, events, run: NativeRun, clock: _Clock,
                          local: set[str]):
    """The stream of a request that loads its model first: chat.start, model_load.start, its progress and end,
    then the turn's events as for a loaded model."""
    yield _sse("chat.start", model_instance_id=model_key)
    yield _sse("model_load.start", model_instance_id=model_key)
    progress: asyncio.Queue[float] = asyncio.Queue()
    load = asyncio.ensure_future(run.session.pipeline.model(run.body.model, run.body.ttl, context_length,
                                                            progress=progress.put_nowait))
    waiting: asyncio.Future | None = None
    try:
        while not load.done():
            waiting = asyncio.ensure_future(progress.get())
            await asyncio.wait({load, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                yield _sse("model_load.progress", model_instance_id=model_key, progress=round(waiting.result(), 4))
        model = load.result()
        first = await anext(events)
    except LmsError as exc:
        yield _error_event(exc)
        return
    finally:
        if waiting is not None:
            waiting.cancel()
        load.cancel()  # a client gone mid-load stops waiting; the load itself goes on for others (JIT)
    yield _sse("model_load.end", model_instance_id=model.identifier, load_time_seconds=round(model.load_seconds, 3))
    async for out in _stream(first, events, run, clock, local, started=True):
        yield out


async def _stream(first: dict, events, run: ResponseRun, clock: _Clock, local: set[str], started: bool = False):
    instance = run.model.identifier if run.model else run.body.model
    if not started:
        yield _sse("chat.start", model_instance_id=instance)
    yield _sse("prompt_processing.start")
    processing = True
    open_kinds: dict[str, str] = {}
    invalid = getattr(run, "invalid", {})
    async for event in events:
        kind = event["type"]
        item = event.get("item") or {}
        if processing and kind == "prompt_progress":
            total = event["total"] or 1
            yield _sse("prompt_processing.progress", progress=round(min(event["processed"] / total, 1.0), 4))
            continue
        if processing and kind in ("response.output_item.added", "response.completed", "response.failed"):
            processing = False
            yield _sse("prompt_processing.end")
        if kind == "response.output_item.added" and item.get("type") in ("message", "reasoning"):
            open_kinds[item["id"]] = item["type"]
            yield _sse(f"{item['type']}.start")
        elif kind in ("response.output_text.delta", "response.reasoning.delta"):
            clock.first = clock.first or time.perf_counter()
            yield _sse("message.delta" if kind == "response.output_text.delta" else "reasoning.delta",
                       content=event["delta"])
        elif kind == "response.output_item.done" and item.get("id") in open_kinds:
            yield _sse(f"{open_kinds.pop(item['id'])}.end")
        elif kind == "response.output_item.added" and item.get("type") == "mcp_call":
            yield _sse("tool_call.start", tool=item["name"], provider_info=_provider(item, local))
        elif kind == "response.output_item.done" and item.get("type") == "function_call":
            refused = _invalid_call(item, local, invalid)
            yield _sse("tool_call.failure", reason=refused["reason"], metadata=refused["metadata"])
        elif kind == "response.output_item.done" and item.get("type") == "mcp_call":
            provider = _provider(item, local)
            arguments = _arguments(item["arguments"])
            yield _sse("tool_call.arguments", tool=item["name"], arguments=arguments, provider_info=provider)
            if item.get("id") in invalid:
                refused = _invalid_call(item, local, invalid)
                yield _sse("tool_call.failure", reason=refused["reason"], metadata=refused["metadata"])
            elif item.get("error"):
                yield _sse("tool_call.failure", reason=item["error"].get("message", "the tool call failed"),
                           metadata={"type": "tool_error", "tool_name": item["name"], "arguments": arguments,
                                     "provider_info": provider})
            else:
                yield _sse("tool_call.success", tool=item["name"], arguments=arguments, output=item["output"],
                           provider_info=provider)
        elif kind == "error":
            yield _error_event(event["error"])
    yield _sse("chat.end", result=clock.result(run, local))
