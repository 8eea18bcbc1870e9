"""One stateful turn: resolve the state it continues, run generations over the pipeline (one, or one per round
of MCP tool calls), and stream Open Responses events while the output items grow.

The same turn serves /v1/responses as JSON, SSE and WebSocket, and LM Studio's /api/v1/chat: it yields the
spec's events in order and leaves the finished response resource in `self.response`, or the error that ended it
in `self.error`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from lms.conversation import compaction
from lms.conversation.items import images_of, normalize_input, to_messages
from lms.conversation.mcp import (
    MCP_JSON_OFF,
    REMOTE_MCP_OFF,
    McpToolset,
    answered_approvals,
    open_toolset,
    parse_server,
)
from lms.conversation.request import CreateResponse
from lms.conversation.session import Session, previous_not_found
from lms.conversation.store import StoredResponse
from lms.conversation.writer import EventWriter
from lms.errors import LmsError
from lms.generation.ids import new_id
from lms.generation.request import Sampling
from lms.manager.models import LoadedModel
from lms.mcp.client import McpError
from lms.pipeline import ChatInput, Usage
from lms.pipeline.pipeline import with_preset

MAX_TOOL_ROUNDS = 12  # generations in one response when MCP calls keep coming and max_tool_calls is unset


class ResponseRun:
    def __init__(self, body: CreateResponse, session: Session):
        self.body, self.session = body, session
        self.id = new_id("resp_", 48)
        self.created_at = int(time.time())
        self.writer = EventWriter(body.wants_logprobs)
        self.response: dict | None = None
        self.error: LmsError | None = None
        self.model: LoadedModel | None = None
        self.tools = body.function_tools()
        self.tool_choice = body.normalized_tool_choice(self.tools)
        self.mcp_servers = [parse_server(tool, param) for tool, param in body.mcp_tools()]
        if len({server.label for server in self.mcp_servers}) < len(self.mcp_servers):
            raise LmsError.invalid("Each mcp tool needs its own server_label.", "tools")
        self.toolset = McpToolset()
        self.input_items = normalize_input(body.input)
        self.context: list[dict] = []
        self.turn_start = 0  # where this turn's own items begin in the context (stored once: lms/conversation/store.py)
        self.known: dict[str, dict] = {}
        self.images: list[str] = []
        self.approvals: list[tuple[dict, dict]] = []
        self.calls_made = 0
        self.mcp_calls_seen: set[tuple[str, str]] = set()
        self.must_answer = False  # set when the model repeats an MCP call it already made in this response
        self.rounds = 0
        self.usage: Usage | None = None
        self.effective = self._effective()

    def _effective(self) -> ChatInput:
        """The request's sampling, limits and output format with its preset applied (read once per response):
        what every generation of the response runs with, and what the resource echoes. A preset's system prompt
        comes back as the one message."""
        body, fmt = self.body, self.body.text.format
        return with_preset(ChatInput(model=body.model, messages=[], sampling=body.given_sampling(),
                                     max_tokens=body.max_output_tokens, grammar=body.grammar,
                                     json_schema=(fmt.schema_ or {}) if fmt.type == "json_schema" else None,
                                     json_object=fmt.type == "json_object", preset=body.preset))

    @property
    def output(self) -> list[dict]:
        return self.writer.output

    # --- the resource ---------------------------------------------------------------------------------------

    def resource(self, status: str, *, error: dict | None = None, incomplete: str | None = None) -> dict:
        body = self.body
        sampling = Sampling.overriding(**self.effective.sampling)
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "completed_at": int(time.time()) if status == "completed" else None,
            "status": status,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": self.model.identifier if self.model else (body.model or ""),
            "previous_response_id": body.previous_response_id, "instructions": body.instructions,
            "output": list(self.output), "error": error,
            "tools": self._echoed_tools(), "tool_choice": self.tool_choice, "truncation": body.truncation,
            "parallel_tool_calls": body.parallel_tool_calls,
            "text": {"format": self._echoed_format(), "verbosity": body.text.verbosity or "medium"},
            "top_p": sampling.top_p, "temperature": sampling.temperature,
            "presence_penalty": sampling.presence_penalty, "frequency_penalty": sampling.frequency_penalty,
            "top_logprobs": body.top_logprobs or 0,
            "reasoning": {"effort": body.reasoning.effort, "summary": body.reasoning.summary} if body.reasoning
            else None,
            "usage": _responses_usage(self.usage) if self.usage and status != "in_progress" else None,
            "max_output_tokens": body.max_output_tokens, "max_tool_calls": body.max_tool_calls,
            "store": body.store, "background": False, "service_tier": "default",
            "metadata": body.metadata or {}, "safety_identifier": body.safety_identifier,
            "prompt_cache_key": body.prompt_cache_key,
        }

    def _echoed_format(self) -> dict:
        fmt, effective = self.body.text.format, self.effective
        if fmt.type == "text" and effective.json_schema is not None:  # from the preset
            return {"type": "json_schema", "name": "preset", "schema": effective.json_schema, "description": None,
                    "strict": None}
        if fmt.type == "text" and effective.json_object:
            return {"type": "json_object"}
        return fmt.echo()

    def _echoed_tools(self) -> list[dict]:
        functions, servers = iter(self.tools), iter(self.mcp_servers)
        return [next(servers).echo if tool.get("type") == "mcp" else next(functions) for tool in self.body.tools]

    # --- state ----------------------------------------------------------------------------------------------

    def _expand(self, items: list[dict], known: dict[str, dict]) -> list[dict]:
        """Resolve item references and unpack compaction items into the items they hold."""
        expanded = []
        for index, item in enumerate(items):
            if item["type"] == "item_reference":
                if item["id"] not in known:
                    raise LmsError.invalid(f"Item with id '{item['id']}' not found.", f"input[{index}].id",
                                           code="item_not_found")
                expanded.append(known[item["id"]])
            elif item["type"] == "compaction":
                expanded.extend(self._expand(compaction.unseal(item["encrypted_content"], f"input[{index}]"), known))
            else:
                expanded.append(item)
        return expanded

    def _build_context(self) -> list[dict]:
        previous: list[dict] = []
        if self.body.previous_response_id:
            stored = self.session.find(self.body.previous_response_id)
            if stored is None:
                raise previous_not_found(self.body.previous_response_id)
            previous = stored.context + stored.response.get("output", [])
        known = {item["id"]: item for item in previous if "id" in item}
        known.update({item["id"]: item for item in self.input_items if "id" in item})
        self.known = known
        self.turn_start = len(previous)
        return previous + self._expand(self.input_items, known)

    # --- generation -----------------------------------------------------------------------------------------

    def _round_tools(self) -> tuple[list[dict], object, int | None]:
        """The tools, tool choice and call budget of the next generation. After a round of MCP calls the
        choice relaxes to auto (a forced choice would loop), and a spent budget leaves only answering."""
        tools = self.tools + self.toolset.function_tools()
        choice = self.tool_choice
        if isinstance(choice, dict) and choice.get("type") == "mcp":
            choice = self.toolset.choice(choice)
        if self.rounds and choice not in ("none", "auto"):
            allowed = isinstance(choice, dict) and choice.get("type") == "allowed_tools"
            choice = {**choice, "mode": "auto"} if allowed else "auto"
        budget = self.body.max_tool_calls - self.calls_made if self.body.max_tool_calls else None
        if budget == 0 or self.must_answer or self.rounds >= MAX_TOOL_ROUNDS - 1:
            choice = "none"
        return tools, choice, budget

    def _chat_input(self) -> ChatInput:
        """The next generation over the conversation so far (this response's own items included)."""
        body, effective = self.body, self.effective
        tools, choice, budget = self._round_tools()
        instructions = body.instructions or (effective.messages[0]["content"] if effective.messages else None)
        return ChatInput(
            model=body.model, messages=to_messages(self.context + self.output, instructions),
            sampling=effective.sampling, max_tokens=effective.max_tokens, stop=effective.stop, grammar=body.grammar,
            json_schema=effective.json_schema, json_object=effective.json_object, format_param="text.format",
            logprobs=(body.top_logprobs or 0) if body.wants_logprobs else None,
            tools=tools, tool_choice=choice, parallel_tool_calls=body.parallel_tool_calls, max_tool_calls=budget,
            reasoning_effort=body.reasoning.effort if body.reasoning else None, draft_model=body.draft_model,
            speculative=body.speculative, ttl=body.ttl, truncate=body.truncation == "auto", persist=body.store)

    async def _prepare(self) -> None:
        """Everything that can fail before the first event: on failure the client gets a plain error."""
        if not self.body.model:
            raise LmsError.missing("model")
        self.context = self._build_context()
        self.approvals = answered_approvals(self.input_items, self.known)
        if self.mcp_servers:
            if any(not s.local for s in self.mcp_servers) and not self.session.allow_remote_mcp:
                raise LmsError.forbidden(REMOTE_MCP_OFF, "tools", code="remote_mcp_disabled")
            if any(s.local for s in self.mcp_servers) and not self.session.allow_mcp_json:
                raise LmsError.forbidden(MCP_JSON_OFF, "tools", code="mcp_json_disabled")
            params = [param for _, param in self.body.mcp_tools()]
            taken = {tool["name"] for tool in self.tools}
            self.toolset = await open_toolset(self.mcp_servers, params, self.session.mcp, taken, self.context,
                                              self.session.fetch_hosts)
        pipeline = self.session.pipeline
        self.model = await pipeline.model(self.body.model, self.body.ttl)
        self.images = await pipeline.images(self.model, images_of(self.context), "input")

    async def _generate(self) -> AsyncIterator[dict]:
        generation = await self.session.pipeline.chat(self._chat_input(), self.model, self.images)
        self.rounds += 1
        return generation.events

    async def events(self) -> AsyncIterator[dict]:
        """The turn's events, from response.created to the terminal one. Errors before the first event raise."""
        try:
            await self._prepare()
            # approved MCP calls run before the model continues, so its first generation waits for them
            first = None if self.approvals else await self._generate()
        except LmsError:
            if self.body.previous_response_id:
                self.session.evict(self.body.previous_response_id)  # a failed continuation evicts the id
            raise
        writer = self.writer
        in_progress = self.resource("in_progress")
        yield writer.event("response.created", response=in_progress)
        yield writer.event("response.in_progress", response=in_progress)
        try:
            for listing in self.toolset.listings:
                for out in writer.listing(listing):
                    yield out
            for request, answer in self.approvals:
                if answer["approve"]:
                    self.calls_made += 1  # an approved call counts against max_tool_calls like any other
                    async for out in self._mcp_call(request["server_label"], request["name"], request["arguments"],
                                                    approval_request_id=request["id"]):
                        yield out
            while True:
                events = first or await self._generate()
                first = None
                finished = None
                async for out in self._round(events):
                    if out["type"] == "round.finished":
                        finished = out
                    else:
                        yield out
                if finished is None:
                    raise LmsError.internal("The generation ended without finishing.")
                if finished["go_on"]:
                    continue  # the model reads the MCP results and goes on
                incomplete = finished["incomplete"]
                status = "incomplete" if incomplete else "completed"
                self.response = self.resource(status, incomplete=incomplete)
                self._remember()
                yield writer.event(f"response.{status}", response=self.response)
                return
        except LmsError as exc:
            self.error = exc
            for out in writer.close("incomplete"):
                yield out
            yield writer.event("error", error=exc)  # each surface puts the error in its own wire shape
            self.response = self.resource("failed", error={"code": exc.code or "server_error",
                                                           "message": exc.message})
            yield writer.event("response.failed", response=self.response)

    async def _round(self, events: AsyncIterator[dict]) -> AsyncIterator[dict]:
        """One generation's events as output items; ends with an internal `round.finished` marker that says
        whether the model goes on (it made MCP calls whose results it has not read yet)."""
        writer = self.writer
        ran_mcp = stops_here = False
        async for event in events:
            kind = event["type"]
            if kind in ("reasoning", "content"):
                for out in writer.text(event):
                    yield out
            elif kind == "tool_call":
                for out in writer.close("completed"):
                    yield out
                self.calls_made += 1
                owner = self.toolset.tools.get(event["name"])
                if owner is None:
                    stops_here = True  # the client runs its own functions
                    for out in writer.function_call(event):
                        yield out
                elif owner[0].needs_approval(owner[1]):
                    stops_here = True
                    for out in writer.approval_request(owner[0].label, event):
                        yield out
                else:
                    ran_mcp = True
                    self._note_repeats(event["name"], event["arguments"])
                    async for out in self._mcp_call(owner[0].label, event["name"], event["arguments"]):
                        yield out
            elif kind == "done":
                incomplete = "max_output_tokens" if event["finish_reason"] == "length" else None
                for out in writer.close("incomplete" if incomplete else "completed"):
                    yield out
                usage = Usage.of(event.get("usage"))
                self.usage = usage if self.usage is None else self.usage + usage
                yield {"type": "round.finished", "incomplete": incomplete,
                       "go_on": ran_mcp and not stops_here and not incomplete}
                return

    def _note_repeats(self, name: str, arguments: str) -> None:
        """Small models often call the same tool with the same arguments again after reading its result; the
        answer is already in the conversation, so the next generation must answer instead of looping."""
        try:
            key = (name, json.dumps(json.loads(arguments), sort_keys=True))
        except ValueError:
            key = (name, arguments)
        self.must_answer = self.must_answer or key in self.mcp_calls_seen
        self.mcp_calls_seen.add(key)

    def _remember(self) -> None:
        stored = StoredResponse(response=self.response, input_items=self.input_items, context=self.context,
                                turn_start=self.turn_start)
        self.session.remember(stored, persist=self.body.store)

    async def _mcp_call(self, label: str, name: str, arguments: str, approval_request_id: str | None = None):
        where, opening = self.writer.mcp_call_started(label, name, arguments, approval_request_id)
        for out in opening:
            yield out
        output, error = None, None
        try:
            output = (await self.session.mcp.call(self._server_of(label, name), name, _arguments(arguments))).text
        except McpError as exc:
            error = exc.error
        for out in self.writer.mcp_call_finished(where, label, name, arguments, approval_request_id, output, error):
            yield out

    def _server_of(self, label: str, name: str):
        server = self.toolset.server(label)
        if server is None or self.toolset.tools.get(name, (None,))[0] is not server:
            message = f"MCP server '{label}' with tool '{name}' is not among this request's tools."
            raise McpError(message, {"type": "mcp_protocol_error", "code": -32602, "message": message})
        return server.address


def _arguments(arguments: str) -> dict:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        message = "The tool call's arguments are not a JSON object."
        raise McpError(message, {"type": "mcp_protocol_error", "code": -32602, "message": message})
    return value


def _responses_usage(usage: Usage) -> dict:
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}
