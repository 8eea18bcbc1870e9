"""Request bodies of the OpenAI-compatible endpoints, validated, and their translation to the internal request."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lms.errors import LmsError
from lms.generation.request import IMAGE_MARKER
from lms.generation.tools import chat_function_tools
from lms.pipeline.inputs import ChatInput, CompletionInput


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Body):
    include_usage: bool = False


class SamplingBody(_Body):
    """Parameters chat and text completions share."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=-1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repeat_penalty: float | None = Field(None, ge=0)
    logit_bias: dict[str, float] | None = None
    n: int | None = Field(None, ge=1, le=1, description="only one choice per request is supported")
    ttl: int | None = Field(None, ge=1, description="idle seconds before a JIT-loaded model unloads")
    draft_model: str | None = Field(None, description="a smaller same-vocabulary model: speculative decoding")
    speculative: Literal["ngram", "off"] | None = Field(
        None, description="ngram: speculative decoding with drafts from the prompt and the text so far; off: none")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        if isinstance(value, list) and len(value) > 16:
            raise ValueError("at most 16 stop sequences")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, value):
        for key, bias in (value or {}).items():
            if not re.fullmatch(r"-?[0-9]+", key):
                raise ValueError(f"keys must be token ids, got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError("biases must be between -100 and 100")
        return value

    def given_sampling(self) -> dict:
        """The sampling values this request gave (a preset or the defaults fill the others)."""
        values = {name: getattr(self, name) for name in (
            "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repeat_penalty",
            "seed", "logit_bias")}
        return {name: value for name, value in values.items() if value is not None}

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def max_new_tokens(self) -> int | None:
        return None if self.max_tokens in (None, -1) else self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ContentPart(_Body):
    type: Literal["text", "image_url", "input_audio", "file"]
    text: str | None = None
    image_url: Any = None


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str | dict = "{}"  # a JSON string from OpenAI clients; some send the object itself


class ToolCall(BaseModel):
    """A call an earlier assistant turn made, sent back with the conversation."""

    model_config = ConfigDict(extra="allow")
    id: str | None = None
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None

    def image_urls(self) -> list[str]:
        if not isinstance(self.content, list):
            return []
        urls = []
        for part in self.content:
            if part.type == "image_url":
                url = part.image_url.get("url") if isinstance(part.image_url, dict) else part.image_url
                if not isinstance(url, str):
                    raise LmsError.invalid("An image_url part needs image_url.url.", "messages")
                urls.append(url)
        return urls

    def for_template(self) -> dict:
        message = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            if any(part.type not in ("text", "image_url") for part in self.content):
                raise LmsError.invalid("Only text and image_url content parts are supported.", "messages",
                                       code="unsupported_content")
            message["content"] = "".join(IMAGE_MARKER if part.type == "image_url" else part.text or ""
                                         for part in self.content)
        message.setdefault("content", "")
        if message["role"] == "developer":
            message["role"] = "system"  # templates know system, not developer
        return message


class JSONSchemaFormat(_Body):
    name: str = "response"
    schema_: dict = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class ChatCompletionBody(SamplingBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=-1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[dict] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    grammar: str | None = None  # a GBNF grammar, as llama-server accepts
    preset: str | None = None  # a preset of LMS_HOME/config-presets: fills in what the request does not say

    def function_tools(self) -> list[dict]:
        return chat_function_tools(self.tools)

    def normalized_tool_choice(self):
        """OpenAI's tool_choice in the pipeline's terms ({"type": "function", "name"} for a named function)."""
        choice = self.tool_choice if self.tool_choice is not None else "auto"
        if isinstance(choice, dict) and choice.get("type") == "function":
            return {"type": "function", "name": (choice.get("function") or {}).get("name")}
        if choice not in ("auto", "none", "required"):
            raise LmsError.invalid("tool_choice must be 'auto', 'none', 'required' or a function.", "tool_choice")
        return choice

    def to_input(self) -> ChatInput:
        if self.top_logprobs is not None and not self.logprobs:
            raise LmsError.invalid("'top_logprobs' requires 'logprobs' to be true", "top_logprobs")
        fmt = self.response_format
        if fmt and fmt.type == "json_schema" and fmt.json_schema is None:
            raise LmsError.missing("response_format.json_schema")
        max_tokens = self.max_new_tokens()
        if self.max_completion_tokens not in (None, -1):
            max_tokens = self.max_completion_tokens
        return ChatInput(
            model=self.model, messages=[m.for_template() for m in self.messages],
            image_urls=[url for message in self.messages for url in message.image_urls()],
            sampling=self.given_sampling(), max_tokens=max_tokens, stop=self.stops(), grammar=self.grammar,
            json_schema=fmt.json_schema.schema_ if fmt and fmt.type == "json_schema" else None,
            json_object=bool(fmt and fmt.type == "json_object"),
            logprobs=(self.top_logprobs or 0) if self.logprobs else None,
            tools=self.function_tools(), tool_choice=self.normalized_tool_choice(),
            parallel_tool_calls=self.parallel_tool_calls, reasoning_effort=self.reasoning_effort,
            draft_model=self.draft_model, speculative=self.speculative, ttl=self.ttl, preset=self.preset)


class CompletionBody(SamplingBody):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    grammar: str | None = None  # a GBNF grammar, as llama-server accepts

    def to_input(self) -> CompletionInput:
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise LmsError.invalid("Only one prompt per request is supported.", "prompt")
            prompt = prompt[0]
        return CompletionInput(model=self.model, prompt=prompt, suffix=self.suffix, sampling=self.given_sampling(),
                               max_tokens=self.max_new_tokens(), stop=self.stops(), grammar=self.grammar,
                               draft_model=self.draft_model, speculative=self.speculative, ttl=self.ttl)


class EmbeddingBody(_Body):
    model: str | None = None
    input: str | list[str] = Field(...)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    ttl: int | None = Field(None, ge=1)

    def inputs(self) -> list[str]:
        inputs = [self.input] if isinstance(self.input, str) else self.input
        if not inputs:
            raise LmsError.invalid("'input' must not be empty", "input")
        if any(not text for text in inputs):
            raise LmsError.invalid("'input' must not contain empty strings", "input")
        return inputs
