"""Request bodies of the OpenAI-compatible endpoints, validated, and their translation to the internal request."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lms.generation.request import IMAGE_MARKER, GenerationError, GenerationRequest, Sampling
from lms.generation.tools import ToolPlan, plan_tools


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
        return Sampling.overriding(**{name: getattr(self, name) for name in (
            "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repeat_penalty",
            "seed", "logit_bias")})

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
                    raise GenerationError("An image_url part needs image_url.url.", status=400,
                                          code="invalid_value", param="messages")
                urls.append(url)
        return urls

    def for_template(self) -> dict:
        message = self.model_dump(exclude_none=True)
        if isinstance(self.content, list):
            if any(part.type not in ("text", "image_url") for part in self.content):
                raise GenerationError("Only text and image_url content parts are supported.", status=400,
                                      code="unsupported_content", param="messages")
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

    def function_tools(self) -> list[dict]:
        """Chat-format tools, flattened to the shape every surface shares: {name, description, parameters}."""
        flat = []
        for index, tool in enumerate(self.tools or []):
            function = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
                raise GenerationError("Each tool must be {'type': 'function', 'function': {'name': ...}}.",
                                      status=400, code="invalid_value", param=f"tools[{index}]")
            flat.append({"name": function["name"], "description": function.get("description"),
                         "parameters": function.get("parameters"), "strict": function.get("strict")})
        return flat

    def tool_plan(self) -> ToolPlan:
        tools = self.function_tools()
        choice = self.tool_choice if self.tool_choice is not None else "auto"
        if isinstance(choice, dict) and choice.get("type") == "function":
            name = (choice.get("function") or {}).get("name")
            if name not in {t["name"] for t in tools}:
                raise GenerationError(f"tool_choice names an unknown function {name!r}.", status=400,
                                      code="invalid_value", param="tool_choice")
            choice = {"type": "function", "name": name}
        elif choice not in ("auto", "none", "required"):
            raise GenerationError("tool_choice must be 'auto', 'none', 'required' or a function.", status=400,
                                  code="invalid_value", param="tool_choice")
        if choice == "required" and not tools:
            raise GenerationError("tool_choice 'required' needs tools.", status=400, code="invalid_value",
                                  param="tool_choice")
        return plan_tools(tools, choice, parallel=self.parallel_tool_calls)

    def to_request(self) -> GenerationRequest:
        plan = self.tool_plan()
        effort = self.reasoning_effort
        request = GenerationRequest(
            messages=[m.for_template() for m in self.messages], sampling=self.sampling(),
            max_tokens=self.max_new_tokens(), stop=self.stops(), tools=plan.template_tools, grammar=self.grammar,
            json_schema=plan.json_schema, format_param="tools" if plan.forced else "response_format",
            reasoning_start=None if effort == "none" else "detect",
            template_options={"enable_thinking": effort != "none"} | ({"reasoning_effort": effort} if effort else {}),
            draft_model=self.draft_model,
        )
        if self.max_completion_tokens not in (None, -1):
            request.max_tokens = self.max_completion_tokens
        if self.top_logprobs is not None and not self.logprobs:
            raise GenerationError("'top_logprobs' requires 'logprobs' to be true", status=400, code="invalid_value",
                                  param="top_logprobs")
        if self.logprobs:
            request.logprobs = self.top_logprobs or 0
        fmt = self.response_format
        if plan.forced:
            pass  # the tool-call grammar wins over any response format
        elif fmt and fmt.type == "json_object":
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
    grammar: str | None = None  # a GBNF grammar, as llama-server accepts

    def to_request(self) -> GenerationRequest:
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise GenerationError("Only one prompt per request is supported.", status=400,
                                      code="invalid_value", param="prompt")
            prompt = prompt[0]
        return GenerationRequest(prompt=prompt, sampling=self.sampling(), max_tokens=self.max_new_tokens(),
                                 stop=self.stops(), grammar=self.grammar, draft_model=self.draft_model)


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
