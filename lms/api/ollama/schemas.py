"""Request bodies of Ollama's generation routes (its `api/types.go`), validated, and their translation to the
pipeline's inputs."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lms.api.ollama.keep_alive import keep_alive_seconds
from lms.errors import LmsError
from lms.generation.ids import new_id
from lms.generation.request import IMAGE_MARKER
from lms.generation.tools import chat_function_tools
from lms.pipeline.inputs import ChatInput, CompletionInput


class OllamaBody(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Options(OllamaBody):
    """The runtime options lms applies; Ollama's others (num_gpu, num_thread, mirostat, ...) are accepted and
    have no effect."""

    num_ctx: int | None = Field(None, ge=1)
    num_predict: int | None = Field(None, ge=-2)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    repeat_penalty: float | None = Field(None, ge=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def sampling(self) -> dict:
        values = {name: getattr(self, name) for name in (
            "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty",
            "seed")}
        return {name: value for name, value in values.items() if value is not None}

    def max_tokens(self) -> int | None:
        return self.num_predict if self.num_predict is not None and self.num_predict >= 0 else None

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class GenerationBody(OllamaBody):
    """What /api/chat and /api/generate share."""

    model: str = Field(min_length=1)
    format: str | dict | None = None
    options: Options = Field(default_factory=Options)
    stream: bool = True
    keep_alive: float | str | None = None
    think: bool | Literal["low", "medium", "high"] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def keep_alive_value(self) -> float | None:
        return keep_alive_seconds(self.keep_alive)

    def output_format(self) -> dict:
        """ChatInput fields for `format`: "json" is any JSON object, an object is a JSON schema."""
        if self.format in (None, ""):
            return {}
        if self.format == "json":
            return {"json_object": True, "format_param": "format"}
        if isinstance(self.format, dict):
            return {"json_schema": self.format, "format_param": "format"}
        raise LmsError.invalid("format must be \"json\" or a JSON schema object", "format")

    def reasoning_effort(self) -> str | None:
        return "none" if self.think is False else None if self.think in (None, True) else self.think

    def common(self) -> dict:
        return {"sampling": self.options.sampling(), "max_tokens": self.options.max_tokens(),
                "stop": self.options.stops(), "logprobs": (self.top_logprobs or 0) if self.logprobs else None}


def data_urls(images: list[str] | None) -> list[str]:
    """Ollama sends images as bare base64; the pipeline takes data URLs (the bytes decide the real format)."""
    return [f"data:image/*;base64,{image}" for image in images or []]


class ToolCallFunction(OllamaBody):
    name: str
    arguments: dict | str = Field(default_factory=dict)


class ToolCall(OllamaBody):
    function: ToolCallFunction


class Message(OllamaBody):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None


def _messages(messages: list[Message]) -> list[dict]:
    """Ollama's messages as the chat templates take them: images as markers before the text, tool calls with
    ids (Ollama has none), and each tool result tied to the latest call of its tool."""
    converted, call_ids = [], {}
    for message in messages:
        item: dict[str, Any] = {"role": message.role,
                                "content": IMAGE_MARKER * len(message.images or []) + message.content}
        if message.tool_calls:
            item["tool_calls"] = []
            for call in message.tool_calls:
                call_id = new_id("call_", 12)
                call_ids[call.function.name] = call_id
                arguments = call.function.arguments
                item["tool_calls"].append({"id": call_id, "type": "function", "function": {
                    "name": call.function.name,
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}})
        if message.role == "tool":
            if message.tool_name:
                item["name"] = message.tool_name
            item["tool_call_id"] = call_ids.get(message.tool_name or "", new_id("call_", 12))
        converted.append(item)
    return converted


class ChatBody(GenerationBody):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict] | None = None

    def to_input(self, model: str, ttl: int | None) -> ChatInput:
        return ChatInput(model=model, messages=_messages(self.messages), image_param="messages",
                         image_urls=[url for m in self.messages for url in data_urls(m.images)],
                         tools=chat_function_tools(self.tools), reasoning_effort=self.reasoning_effort(),
                         ttl=ttl, **self.common(), **self.output_format())


class GenerateBody(GenerationBody):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None  # accepted, as Ollama's clients send it back; lms reuses its prefix cache
    raw: bool = False
    images: list[str] | None = None

    def chat_input(self, model: str, ttl: int | None) -> ChatInput:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": IMAGE_MARKER * len(self.images or []) + self.prompt})
        return ChatInput(model=model, messages=messages, image_urls=data_urls(self.images), image_param="images",
                         reasoning_effort=self.reasoning_effort(), ttl=ttl, **self.common(), **self.output_format())

    def completion_input(self, model: str, ttl: int | None, prompt: str) -> CompletionInput:
        common = self.common()
        if common.pop("logprobs") is not None:
            raise LmsError.invalid("logprobs are available with the chat template only (raw, suffix and template "
                                   "requests do not have them)", "logprobs")
        if self.format not in (None, ""):
            raise LmsError.invalid("format is available with the chat template only (not with raw, suffix or "
                                   "template)", "format")
        return CompletionInput(model=model, prompt=prompt, suffix=self.suffix or None, ttl=ttl, **common)


class NamedModelBody(OllamaBody):
    """/api/show and /api/delete: the model (Ollama's older clients send `name`)."""

    model: str | None = None
    name: str | None = None

    def model_name(self) -> str:
        if not (self.model or self.name):
            raise LmsError.missing("model", "model is required")
        return self.model or self.name


class CopyBody(OllamaBody):
    source: str = Field(min_length=1, description="a downloaded model")
    destination: str = Field(min_length=1, description="the new model's name")
