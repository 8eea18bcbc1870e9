"""Request bodies of the OpenAI-compatible endpoints, validated, and their translation to the internal request."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lms.generation.request import GenerationError, GenerationRequest, Sampling


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

    def sampling(self) -> Sampling:
        defaults = Sampling()
        values = {name: getattr(self, name) for name in
                  ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                   "repeat_penalty", "seed", "logit_bias")}
        return Sampling(**{k: v if v is not None else getattr(defaults, k) for k, v in values.items()})

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


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def for_template(self) -> dict:
        message = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            if any(part.type != "text" for part in self.content):
                raise GenerationError("This model accepts only text content parts.", status=400,
                                      code="unsupported_content", param="messages")
            message["content"] = "".join(part.text or "" for part in self.content)
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
    response_format: ResponseFormat | None = None
    tools: list[dict] | None = None
    tool_choice: Any = None

    def to_request(self) -> GenerationRequest:
        request = GenerationRequest(
            messages=[m.for_template() for m in self.messages], sampling=self.sampling(),
            max_tokens=self.max_new_tokens(), stop=self.stops(), tools=self.tools,
        )
        if self.max_completion_tokens not in (None, -1):
            request.max_tokens = self.max_completion_tokens
        fmt = self.response_format
        if fmt and fmt.type == "json_object":
            request.json_object = True
        elif fmt and fmt.type == "json_schema":
            if fmt.json_schema is None:
                raise GenerationError("'response_format.json_schema' is required", status=400,
                                      code="missing_required_parameter", param="response_format.json_schema")
            request.json_schema = fmt.json_schema.schema_
        return request


class CompletionBody(SamplingBody):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None

    def to_request(self) -> GenerationRequest:
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise GenerationError("Only one prompt per request is supported.", status=400,
                                      code="invalid_value", param="prompt")
            prompt = prompt[0]
        return GenerationRequest(prompt=prompt, sampling=self.sampling(), max_tokens=self.max_new_tokens(),
                                 stop=self.stops())


class EmbeddingBody(_Body):
    model: str | None = None
    input: str | list[str] = Field(...)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    ttl: int | None = Field(None, ge=1)

    def inputs(self) -> list[str]:
        inputs = [self.input] if isinstance(self.input, str) else self.input
        if not inputs:
            raise GenerationError("'input' must not be empty", status=400, code="invalid_value", param="input")
        if any(not text for text in inputs):
            raise GenerationError("'input' must not contain empty strings", status=400, code="invalid_value",
                                  param="input")
        return inputs
