"""One Open Responses turn: resolve state, build the internal request, stream semantic events, finish.

The same runner serves plain JSON, SSE and WebSocket: it yields the spec's streaming events in order (each with
its sequence number) and leaves the finished response resource in `self.response`.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lms.api.generate import primed
from lms.api.images import load_image
from lms.api.responses import compaction
from lms.api.responses.items import (
    function_call_item,
    images_of,
    message_item,
    new_id,
    normalize_input,
    reasoning_item,
    to_messages,
)
from lms.api.responses.mcp import (
    MCP_JSON_OFF,
    REMOTE_MCP_OFF,
    McpToolset,
    answered_approvals,
    approval_request_item,
    mcp_call_item,
    open_toolset,
    parse_server,
)
from lms.api.responses.request import CreateResponse
from lms.api.responses.store import ResponseStore, StoredResponse
from lms.api.semantic import ParseOptions, semantic_events
from lms.generation.request import IMAGE_MARKER, GenerationError, GenerationRequest, Sampling
from lms.generation.tools import (
    describe_tools_if_needed,
    plan_tools,
    render_tool_calls_as_text,
    template_knows_tool_calls,
)
from lms.manager.models import LoadedModel, ModelManager
from lms.mcp.client import McpError, McpPool

MAX_TOOL_ROUNDS = 12  # generations in one response when MCP calls keep coming and max_tool_calls is unset


def previous_not_found(response_id: str) -> GenerationError:
    return GenerationError(f"Previous response with id '{response_id}' not found.", status=400,
                           code="previous_response_not_found", param="previous_response_id")


@dataclass
class Session:
    """Where responses live: the persistent store, plus a connection's own cache for `store: false` turns."""

    manager: ModelManager
    store: ResponseStore
    local: dict[str, StoredResponse] | None = None
    local_limit: int = 16
    mcp: McpPool | None = None
    allow_remote_mcp: bool = False
    allow_mcp_json: bool = False

    def find(self, response_id: str) -> StoredResponse | None:
        if self.local is not None and response_id in self.local:
            return self.local[response_id]
        return self.store.get(response_id)

    def remember(self, stored: StoredResponse, persist: bool) -> None:
        if persist:
            self.store.put(stored)
        elif self.local is not None:
            self.local[stored.response["id"]] = stored
            while len(self.local) > self.local_limit:
                self.local.pop(next(iter(self.local)))

    def evict(self, response_id: str) -> None:
        """A failed continuation drops the id from the connection's cache (the spec's rule). Stored responses
        stay: a client's mistake must not delete a persisted conversation."""
        if self.local is not None:
            self.local.pop(response_id, None)


@dataclass
class _OpenItem:
    kind: str  # "message" or "reasoning"
    item_id: str
    index: int
    text: list[str] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)


class ResponseRun:
    def __init__(self, body: CreateResponse, session: Session):
        self.body, self.session = body, session
        self.id = new_id("resp", 48)
        self.created_at = int(time.time())
        self.sequence = 0
        self.output: list[dict] = []
        self.response: dict | None = None
        self.model: LoadedModel | None = None
        self.tools = body.function_tools()
        self.tool_choice = body.normalized_tool_choice(self.tools)
        self.mcp_servers = [parse_server(tool, param) for tool, param in body.mcp_tools()]
        if len({server.label for server in self.mcp_servers}) < len(self.mcp_servers):
            raise GenerationError("Each mcp tool needs its own server_label.", status=400, code="invalid_value",
                                  param="tools")
        self.toolset = McpToolset()
        self.input_items = normalize_input(body.input)
        self.context: list[dict] = []
        self.known: dict[str, dict] = {}
        self.images: list[str] = []
        self.approvals: list[tuple[dict, dict]] = []
        self.calls_made = 0
        self.mcp_calls_seen: set[tuple[str, str]] = set()
        self.must_answer = False  # set when the model repeats an MCP call it already made in this response
        self.rounds = 0
        self.usage: dict = {}

    # --- the resource ---------------------------------------------------------------------------------------

    def resource(self, status: str, *, usage: dict | None = None, error: dict | None = None,
                 incomplete: str | None = None) -> dict:
        body = self.body
        sampling = self._sampling()
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
            "text": {"format": body.text.format.echo(), "verbosity": body.text.verbosity or "medium"},
            "top_p": sampling.top_p, "temperature": sampling.temperature,
            "presence_penalty": sampling.presence_penalty, "frequency_penalty": sampling.frequency_penalty,
            "top_logprobs": body.top_logprobs or 0,
            "reasoning": {"effort": body.reasoning.effort, "summary": body.reasoning.summary} if body.reasoning
            else None,
            "usage": usage, "max_output_tokens": body.max_output_tokens, "max_tool_calls": body.max_tool_calls,
            "store": body.store, "background": False, "service_tier": "default",
            "metadata": body.metadata or {}, "safety_identifier": body.safety_identifier,
            "prompt_cache_key": body.prompt_cache_key,
        }

    def _echoed_tools(self) -> list[dict]:
        functions, servers = iter(self.tools), iter(self.mcp_servers)
        return [next(servers).echo if tool.get("type") == "mcp" else next(functions) for tool in self.body.tools]

    def _sampling(self) -> Sampling:
        body = self.body
        return Sampling.overriding(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
                                   repeat_penalty=body.repeat_penalty, presence_penalty=body.presence_penalty,
                                   frequency_penalty=body.frequency_penalty, seed=body.seed)

    def event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    # --- state ----------------------------------------------------------------------------------------------

    def _expand(self, items: list[dict], known: dict[str, dict]) -> list[dict]:
        """Resolve item references and unpack compaction items into the items they hold."""
        expanded = []
        for index, item in enumerate(items):
            if item["type"] == "item_reference":
                if item["id"] not in known:
                    raise GenerationError(f"Item with id '{item['id']}' not found.", status=400,
                                          code="item_not_found", param=f"input[{index}].id")
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

    def _generation_request(self, messages: list[dict]) -> tuple[GenerationRequest, ParseOptions]:
        body = self.body
        tools, choice, budget = self._round_tools()
        plan = plan_tools(tools, choice, parallel=body.parallel_tool_calls, max_calls=budget)
        fmt = body.text.format
        effort = body.reasoning.effort if body.reasoning else None
        request = GenerationRequest(
            messages=messages, sampling=self._sampling(), max_tokens=body.max_output_tokens,
            tools=plan.template_tools, grammar=body.grammar,
            json_schema=plan.json_schema if plan.forced else (fmt.schema_ or {}) if fmt.type == "json_schema"
            else None,
            json_object=fmt.type == "json_object" and not plan.forced,
            format_param="tools" if plan.forced else "text.format",
            logprobs=(body.top_logprobs or 0) if body.wants_logprobs else None,
            reasoning_start=None if effort == "none" else "detect",
            template_options={"enable_thinking": effort != "none"} | ({"reasoning_effort": effort} if effort else {}),
            draft_model=body.draft_model,
        )
        return request, ParseOptions(reasoning=effort != "none", tools=plan, template=self.model.entry.chat_template)

    async def _prepare(self) -> None:
        """Everything that can fail before the first event: on failure the client gets a plain error."""
        manager = self.session.manager
        if not self.body.model:
            raise GenerationError("'model' is required", status=400, code="missing_required_parameter", param="model")
        self.context = self._build_context()
        self.approvals = answered_approvals(self.input_items, self.known)
        if self.mcp_servers:
            if any(not s.local for s in self.mcp_servers) and not self.session.allow_remote_mcp:
                raise GenerationError(REMOTE_MCP_OFF, status=403, code="remote_mcp_disabled", param="tools",
                                      type="permission_error")
            if any(s.local for s in self.mcp_servers) and not self.session.allow_mcp_json:
                raise GenerationError(MCP_JSON_OFF, status=403, code="mcp_json_disabled", param="tools",
                                      type="permission_error")
            params = [param for _, param in self.body.mcp_tools()]
            taken = {tool["name"] for tool in self.tools}
            self.toolset = await open_toolset(self.mcp_servers, params, self.session.mcp, taken, self.context)
        self.model = await manager.get_or_load(self.body.model, self.body.ttl)
        images = images_of(self.context)
        if images and not self.model.entry.vision:
            raise GenerationError(f"Model '{self.model.identifier}' does not accept images: it has no vision "
                                  "projector (an mmproj file beside the model).", status=400,
                                  code="model_not_supported", param="input")
        self.images = [base64.b64encode(await load_image(url, "input")).decode() for url in images]

    async def _generate(self) -> tuple[AsyncIterator[dict], ParseOptions]:
        """Start one generation over the conversation so far (this response's own items included)."""
        manager = self.session.manager
        messages = to_messages(self.context + self.output, self.body.instructions)
        if not template_knows_tool_calls(self.model.entry.chat_template):
            messages = render_tool_calls_as_text(messages)
        while True:
            request, options = self._generation_request(messages)
            request.messages = describe_tools_if_needed(messages, options.tools, self.model.entry.chat_template)
            request.images = self.images
            try:
                stream = await primed(manager.generate(self.model, request.to_dict()))
                self.rounds += 1
                return stream, options
            except GenerationError as exc:
                dropped = self._truncate(messages) if exc.code == "context_length_exceeded" else None
                if dropped is None:
                    raise
                messages = dropped

    def _truncate(self, messages: list[dict]) -> list[dict] | None:
        """truncation=auto: drop the oldest turn (never system messages, never the last message)."""
        if self.body.truncation != "auto":
            return None
        for index, message in enumerate(messages[:-1]):
            if message["role"] != "system" and IMAGE_MARKER not in message["content"]:
                return messages[:index] + messages[index + 1:]
        return None

    async def events(self) -> AsyncIterator[dict]:
        """The turn's events, from response.created to the terminal one. Errors before the first event raise."""
        try:
            await self._prepare()
            # approved MCP calls run before the model continues, so its first generation waits for them
            first = None if self.approvals else await self._generate()
        except GenerationError:
            if self.body.previous_response_id:
                self.session.evict(self.body.previous_response_id)  # a failed continuation evicts the id
            raise
        in_progress = self.resource("in_progress")
        yield self.event("response.created", response=in_progress)
        yield self.event("response.in_progress", response=in_progress)
        current: _OpenItem | None = None
        try:
            for listing in self.toolset.listings:
                for out in self._listing(listing):
                    yield out
            for request, answer in self.approvals:
                if answer["approve"]:
                    self.calls_made += 1  # an approved call counts against max_tool_calls like any other
                    async for out in self._mcp_call(request["server_label"], request["name"], request["arguments"],
                                                    approval_request_id=request["id"]):
                        yield out
            while True:
                stream, options = first or await self._generate()
                first = None
                ran_mcp = stops_here = False
                async for event in semantic_events(stream, options):
                    kind = event["type"]
                    if kind in ("reasoning", "content"):
                        wanted = "reasoning" if kind == "reasoning" else "message"
                        if current is None or current.kind != wanted:
                            for out in self._close(current, "completed"):
                                yield out
                            current = _OpenItem(wanted, new_id("rs" if wanted == "reasoning" else "msg"),
                                                len(self.output))
                            for out in self._open(current):
                                yield out
                        for out in self._delta(current, event):
                            yield out
                    elif kind == "tool_call":
                        for out in self._close(current, "completed"):
                            yield out
                        current = None
                        self.calls_made += 1
                        owner = self.toolset.tools.get(event["name"])
                        if owner is None:
                            stops_here = True  # the client runs its own functions
                            for out in self._tool_call(event):
                                yield out
                        elif owner[0].needs_approval(owner[1]):
                            stops_here = True
                            for out in self._approval_request(owner[0].label, event):
                                yield out
                        else:
                            ran_mcp = True
                            self._note_repeats(event["name"], event["arguments"])
                            async for out in self._mcp_call(owner[0].label, event["name"], event["arguments"]):
                                yield out
                    elif kind == "done":
                        incomplete = "max_output_tokens" if event["finish_reason"] == "length" else None
                        for out in self._close(current, "incomplete" if incomplete else "completed"):
                            yield out
                        current = None
                        self._add_usage(event.get("usage") or {})
                        if ran_mcp and not stops_here and not incomplete:
                            break  # the model reads the results and goes on
                        status = "incomplete" if incomplete else "completed"
                        self.response = self.resource(status, usage=self.usage, incomplete=incomplete)
                        self._remember()
                        yield self.event(f"response.{status}", response=self.response)
                        return
                else:
                    raise GenerationError("The generation ended without finishing.", status=500, code="server_error")
        except GenerationError as exc:
            for out in self._close(current, "incomplete"):
                yield out
            yield self.event("error", error={"type": exc.type, "code": exc.code or "server_error",
                                             "message": exc.message, "param": exc.param})
            self.response = self.resource("failed", error={"code": exc.code or "server_error",
                                                           "message": exc.message})
            yield self.event("response.failed", response=self.response)

    def _note_repeats(self, name: str, arguments: str) -> None:
        """Small models often call the same tool with the same arguments again after reading its result; the
        answer is already in the conversation, so the next generation must answer instead of looping."""
        try:
            key = (name, json.dumps(json.loads(arguments), sort_keys=True))
        except ValueError:
            key = (name, arguments)
        self.must_answer = self.must_answer or key in self.mcp_calls_seen
        self.mcp_calls_seen.add(key)

    def _add_usage(self, usage: dict) -> None:
        """Usage sums every generation of the response (one per round of MCP calls)."""
        this = _usage(usage)
        if not self.usage:
            self.usage = this
            return
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            self.usage[key] += this[key]
        self.usage["input_tokens_details"]["cached_tokens"] += this["input_tokens_details"]["cached_tokens"]
        self.usage["output_tokens_details"]["reasoning_tokens"] += this["output_tokens_details"]["reasoning_tokens"]

    def _remember(self) -> None:
        stored = StoredResponse(response=self.response, input_items=self.input_items, context=self.context)
        self.session.remember(stored, persist=self.body.store)

    # --- items ----------------------------------------------------------------------------------------------

    def _item(self, item: _OpenItem, status: str) -> dict:
        text = "".join(item.text)
        if item.kind == "reasoning":
            return reasoning_item(item.item_id, text, status)
        return message_item(item.item_id, text, status, item.logprobs if self.body.wants_logprobs else None)

    def _part(self, item: _OpenItem, text: str) -> dict:
        if item.kind == "reasoning":
            return {"type": "reasoning_text", "text": text}
        logprobs = item.logprobs if self.body.wants_logprobs and text else []
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}

    def _open(self, item: _OpenItem):
        shell = self._item(item, "in_progress")
        shell["content"] = []
        yield self.event("response.output_item.added", output_index=item.index, item=shell)
        yield self.event("response.content_part.added", item_id=item.item_id, output_index=item.index,
                         content_index=0, part=self._part(item, ""))

    def _delta(self, item: _OpenItem, event: dict):
        item.text.append(event["text"])
        where = {"item_id": item.item_id, "output_index": item.index, "content_index": 0}
        if item.kind == "reasoning":
            yield self.event("response.reasoning.delta", delta=event["text"], **where)
            return
        logprobs = event.get("logprobs") or []
        item.logprobs.extend(logprobs)
        if self.body.wants_logprobs:
            yield self.event("response.output_text.delta", delta=event["text"], logprobs=logprobs, **where)
        elif event["text"]:
            yield self.event("response.output_text.delta", delta=event["text"], **where)

    def _close(self, item: _OpenItem | None, status: str):
        if item is None:
            return
        text = "".join(item.text)
        where = {"item_id": item.item_id, "output_index": item.index, "content_index": 0}
        if item.kind == "reasoning":
            yield self.event("response.reasoning.done", text=text, **where)
        elif self.body.wants_logprobs:
            yield self.event("response.output_text.done", text=text, logprobs=item.logprobs, **where)
        else:
            yield self.event("response.output_text.done", text=text, **where)
        yield self.event("response.content_part.done", part=self._part(item, text), **where)
        done = self._item(item, status)
        self.output.append(done)
        yield self.event("response.output_item.done", output_index=item.index, item=done)

    def _tool_call(self, event: dict):
        index = len(self.output)
        item_id = new_id("fc")
        shell = function_call_item(item_id, event["call_id"], event["name"], "", "in_progress")
        yield self.event("response.output_item.added", output_index=index, item=shell)
        yield self.event("response.function_call_arguments.delta", item_id=item_id, output_index=index,
                         delta=event["arguments"])
        yield self.event("response.function_call_arguments.done", item_id=item_id, output_index=index,
                         arguments=event["arguments"])
        done = function_call_item(item_id, event["call_id"], event["name"], event["arguments"], "completed")
        self.output.append(done)
        yield self.event("response.output_item.done", output_index=index, item=done)

    def _listing(self, listing: dict):
        index, where = len(self.output), {"item_id": listing["id"]}
        yield self.event("response.output_item.added", output_index=index, item={**listing, "tools": []})
        yield self.event("response.mcp_list_tools.in_progress", output_index=index, **where)
        yield self.event("response.mcp_list_tools.completed", output_index=index, **where)
        self.output.append(listing)
        yield self.event("response.output_item.done", output_index=index, item=listing)

    def _approval_request(self, label: str, event: dict):
        index, item = len(self.output), approval_request_item(label, event["name"], event["arguments"])
        yield self.event("response.output_item.added", output_index=index, item=item)
        self.output.append(item)
        yield self.event("response.output_item.done", output_index=index, item=item)

    async def _mcp_call(self, label: str, name: str, arguments: str, approval_request_id: str | None = None):
        index, item_id = len(self.output), new_id("mcp")
        where = {"item_id": item_id, "output_index": index}
        shell = mcp_call_item(item_id, label, name, "", "in_progress", approval_request_id=approval_request_id)
        yield self.event("response.output_item.added", output_index=index, item=shell)
        yield self.event("response.mcp_call.in_progress", **where)
        yield self.event("response.mcp_call_arguments.delta", delta=arguments, **where)
        yield self.event("response.mcp_call_arguments.done", arguments=arguments, **where)
        output, error = None, None
        try:
            output = (await self.session.mcp.call(self._server_of(label, name), name, _arguments(arguments))).text
        except McpError as exc:
            error = exc.error
        status = "failed" if error else "completed"
        yield self.event(f"response.mcp_call.{status}", **where)
        done = mcp_call_item(item_id, label, name, arguments, status, output=output, error=error,
                             approval_request_id=approval_request_id)
        self.output.append(done)
        yield self.event("response.output_item.done", output_index=index, item=done)

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


def _usage(usage: dict) -> dict:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion,
            "input_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0)},
            "output_tokens_details": {"reasoning_tokens": usage.get("reasoning_tokens", 0)}}
