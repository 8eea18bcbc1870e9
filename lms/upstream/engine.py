"""An upstream model as a worker: the same `call`/`request`/`stop` contract the manager uses with local workers
(lms/manager/worker.py), answered over HTTP by the upstream server. Since the upstream applies the template and
parses its own output, a chat streams parsed events (`content`, `reasoning`, `tool_call`; lms/pipeline/parse.py)
that the pipeline passes on unchanged; a raw completion streams `text` events as a local engine does."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator

from lms.errors import LmsError
from lms.generation.finish import done_event as engine_done_event
from lms.generation.media import image_type
from lms.generation.request import IMAGE_MARKER, EmbeddingRequest, GenerationRequest
from lms.upstream.client import UpstreamClient

FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
                  "content_filter": "stop"}


class UpstreamWorker:
    pid = None
    alive = True
    exit_detail = ""

    def __init__(self, client: UpstreamClient, model: str):
        self.client, self.model = client, model

    async def call(self, op: str, **payload) -> AsyncIterator[dict]:
        if op != "generate":
            yield await self.request(op, **payload)
            return
        request = GenerationRequest.from_dict(payload["request"])
        events = self._chat(request) if request.messages is not None else self._completion(request)
        async for event in events:
            yield event

    async def request(self, op: str, **payload) -> dict:
        if op == "embed":
            return await self._embed(EmbeddingRequest.from_dict(payload["request"]))
        raise LmsError.invalid(f"'{self.client.upstream.name}/{self.model}' is served by an upstream server, which "
                               "does not offer this (token counts, tokenizing and templates are the upstream's).",
                               "model", code="model_not_supported")

    async def stop(self, timeout: float = 5.0) -> None:
        """Nothing runs here: the model stays on its server."""

    # --- translation ----------------------------------------------------------------------------------------

    def _sampling(self, request: GenerationRequest) -> dict:
        s = request.sampling
        body = {"temperature": s.temperature, "top_p": s.top_p, "presence_penalty": s.presence_penalty,
                "frequency_penalty": s.frequency_penalty, "stream": True, "stream_options": {"include_usage": True},
                # not OpenAI's, but read by vLLM, llama-server, LM Studio and lms (and ignored by others)
                "top_k": s.top_k, "min_p": s.min_p, "repeat_penalty": s.repeat_penalty}
        optional = {"seed": s.seed, "logit_bias": s.logit_bias, "max_tokens": request.max_tokens,
                    "stop": request.stop or None, "grammar": request.grammar}
        return body | {key: value for key, value in optional.items() if value is not None}

    def chat_body(self, request: GenerationRequest) -> dict:
        body = {"model": self.model, "messages": wire_messages(request.messages or [], request.images),
                **self._sampling(request)}
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        if request.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": request.json_schema}}
        elif request.json_object:
            body["response_format"] = {"type": "json_object"}
        if request.logprobs is not None:
            body.update(logprobs=True, top_logprobs=request.logprobs)
        effort = request.template_options.get("reasoning_effort")
        if effort:
            body["reasoning_effort"] = effort
        return body

    async def _chat(self, request: GenerationRequest) -> AsyncIterator[dict]:
        started, first_at = time.perf_counter(), None
        calls: dict[int, dict] = {}
        finish, usage = "stop", {}
        async for chunk in self.client.stream("chat/completions", self.chat_body(request)):
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if first_at is None:
                    first_at = time.perf_counter()
                    yield {"type": "prompt", "prompt_tokens": 0, "cached_tokens": 0}
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(reasoning, str) and reasoning:
                    yield {"type": "reasoning", "text": reasoning}
                logprobs = (choice.get("logprobs") or {}).get("content") or []
                if delta.get("content") or logprobs:
                    yield {"type": "content", "text": delta.get("content") or "", "logprobs": logprobs}
                for part in delta.get("tool_calls") or []:
                    gather_call(calls, part)
                finish = FINISH_REASONS.get(choice.get("finish_reason") or "", finish)
        if first_at is None:
            yield {"type": "prompt", "prompt_tokens": 0, "cached_tokens": 0}
        for call in calls.values():
            yield {"type": "tool_call", "name": call["name"], "arguments": call["arguments"] or "{}",
                   "call_id": call["id"]}
        if calls:
            finish = "tool_calls"
        yield done_event(finish, usage, started, first_at)

    async def _completion(self, request: GenerationRequest) -> AsyncIterator[dict]:
        started, first_at = time.perf_counter(), None
        body = {"model": self.model, "prompt": request.prompt, **self._sampling(request)}
        if request.suffix is not None:
            body["suffix"] = request.suffix
        finish, usage = "stop", {}
        yield {"type": "prompt", "prompt_tokens": 0, "cached_tokens": 0}
        async for chunk in self.client.stream("completions", body):
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if choice.get("text"):
                    first_at = first_at or time.perf_counter()
                    yield {"type": "text", "text": choice["text"]}
                finish = FINISH_REASONS.get(choice.get("finish_reason") or "", finish)
        yield done_event(finish, usage, started, first_at)

    async def _embed(self, request: EmbeddingRequest) -> dict:
        answer = await self.client.post_or_get("embeddings", {"model": self.model, "input": request.inputs})
        data = sorted(answer.get("data") or [], key=lambda item: item.get("index", 0))
        if len(data) != len(request.inputs):
            raise LmsError.upstream(f"Upstream '{self.client.upstream.name}' returned {len(data)} embeddings for "
                                    f"{len(request.inputs)} inputs.", code="upstream_error")
        return {"embeddings": [item["embedding"] for item in data],
                "prompt_tokens": (answer.get("usage") or {}).get("prompt_tokens", 0)}


def wire_messages(messages: list[dict], images: list[str]) -> list[dict]:
    """Internal chat messages in OpenAI's wire shape: each IMAGE_MARKER becomes an image part (a data URL), tool
    call arguments are JSON text."""
    pending = iter(images)
    wired = []
    for message in messages:
        message = dict(message)
        content = message.get("content")
        if isinstance(content, str) and IMAGE_MARKER in content:
            parts = []
            for index, text in enumerate(content.split(IMAGE_MARKER)):
                if index:
                    data = next(pending, "")
                    media_type = image_type(base64.b64decode(data[:64])) or "image/png"
                    parts.append({"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}})
                if text:
                    parts.append({"type": "text", "text": text})
            message["content"] = parts
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {**call, "function": {**call["function"], "arguments": call["function"]["arguments"]
                                      if isinstance(call["function"].get("arguments"), str)
                                      else json.dumps(call["function"].get("arguments") or {})}}
                for call in message["tool_calls"]]
        wired.append(message)
    return wired


def gather_call(calls: dict[int, dict], part: dict) -> None:
    """Streamed tool calls come in pieces keyed by index: the first has the id and name, later ones add text to
    the arguments."""
    index = part.get("index", len(calls))
    call = calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
    function = part.get("function") or {}
    call["id"] = part.get("id") or call["id"] or f"call_{index}"
    if function.get("name") and not call["name"]:
        call["name"] = function["name"]
    if isinstance(function.get("arguments"), str):
        call["arguments"] += function["arguments"]


def done_event(finish: str, usage: dict, started: float, first_at: float | None) -> dict:
    """The engine's done event, from the usage the upstream reported."""
    return engine_done_event(finish, usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
                             (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0,
                             (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
                             started, first_at, time.perf_counter())
