"""A turn's request: the body of POST /v1/responses (and of a WebSocket `response.create`, and what LM Studio's
/api/v1/chat translates to), validated, with tool normalization."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lms.errors import LmsError


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextFormat(_Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    def echo(self) -> dict:
        if self.type != "json_schema":
            return {"type": self.type}
        return {"type": "json_schema", "name": self.name or "response", "schema": self.schema_ or {},
                "description": self.description, "strict": self.strict}


class TextOptions(_Body):
    format: TextFormat = Field(default_factory=TextFormat)
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningOptions(_Body):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class StreamOptions(_Body):
    include_obfuscation: bool | None = None


INCLUDABLE = {"message.output_text.logprobs", "reasoning.encrypted_content", "message.input_image.image_url",
              "file_search_call.results", "web_search_call.results", "code_interpreter_call.outputs",
              "computer_call_output.output.image_url", "web_search_call.action.sources"}


class CreateResponse(_Body):
    model: str | None = None
    input: Any = None
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    background: bool = False
    tools: list[dict] = Field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = Field(None, ge=1)
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    include: list[str] = Field(default_factory=list)
    text: TextOptions = Field(default_factory=TextOptions)
    reasoning: ReasoningOptions | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    metadata: dict[str, str] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: Literal["auto", "default", "flex", "priority", "scale"] | None = None
    user: str | None = None
    # Extensions that llama.cpp users expect (llama-server accepts them too) and LM Studio's per-request TTL.
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0)
    seed: int | None = None
    grammar: str | None = None
    ttl: int | None = Field(None, ge=1)
    draft_model: str | None = None  # LM Studio's speculative decoding draft
    speculative: Literal["ngram", "off"] | None = None  # prompt-lookup drafts (ngram), or no drafts (off)
    preset: str | None = None  # a preset of LMS_HOME/config-presets: fills in what the request does not say

    @field_validator("include")
    @classmethod
    def _known_include(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in INCLUDABLE]
        if unknown:
            raise ValueError(f"unknown include value(s): {', '.join(unknown)}")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value):
        if value and (len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())):
            raise ValueError("at most 16 pairs, keys up to 64 and values up to 512 characters")
        return value

    def given_sampling(self) -> dict:
        """The sampling values this request gave (a preset or the defaults fill the others)."""
        values = {name: getattr(self, name) for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty",
                                                          "presence_penalty", "frequency_penalty", "seed")}
        return {name: value for name, value in values.items() if value is not None}

    @property
    def wants_logprobs(self) -> bool:
        return "message.output_text.logprobs" in self.include

    def function_tools(self) -> list[dict]:
        """Function tools in the normalized shape the response echoes: every key present."""
        normalized = []
        for index, tool in enumerate(self.tools):
            kind = tool.get("type")
            if kind == "mcp":
                continue
            if kind != "function":
                raise LmsError.invalid(f"Tool type {kind!r} is not supported here; use function or mcp tools.",
                                       f"tools[{index}].type", code="unsupported_tool_type")
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise LmsError.invalid("Every function tool needs a name.", f"tools[{index}].name",
                                       code="missing_required_parameter")
            normalized.append({"type": "function", "name": tool["name"], "description": tool.get("description"),
                               "parameters": tool.get("parameters"), "strict": tool.get("strict")})
        return normalized

    def mcp_tools(self) -> list[tuple[dict, str]]:
        """The `mcp` tools, each with its place in the request (for error messages)."""
        return [(tool, f"tools[{index}]") for index, tool in enumerate(self.tools) if tool.get("type") == "mcp"]

    def normalized_tool_choice(self, tools: list[dict]):
        """The tool choice, checked against the function tools; an MCP choice is checked once the servers'
        tools are known."""
        choice = self.tool_choice
        names = {t["name"] for t in tools}
        if isinstance(choice, dict) and choice.get("type") == "mcp":
            if not isinstance(choice.get("server_label"), str):
                raise LmsError.invalid("An mcp tool_choice needs a server_label.", "tool_choice.server_label")
            return {"type": "mcp", "server_label": choice["server_label"], "name": choice.get("name")}
        if choice in ("auto", "none", "required"):
            if choice == "required" and not tools and not self.mcp_tools():
                raise LmsError.invalid("tool_choice 'required' needs at least one tool.", "tool_choice")
            return choice
        if isinstance(choice, dict) and choice.get("type") == "function":
            if not isinstance(choice.get("name"), str) or choice["name"] not in names:
                raise LmsError.invalid(f"tool_choice names an unknown function {choice.get('name')!r}.",
                                       "tool_choice.name")
            return {"type": "function", "name": choice["name"]}
        if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
            allowed = choice.get("tools") or []
            mode = choice.get("mode", "auto")
            if mode not in ("auto", "required") or not isinstance(allowed, list):
                raise LmsError.invalid("allowed_tools needs a tools list and mode 'auto' or 'required'.", "tool_choice")
            for tool in allowed:
                name = tool.get("name") if isinstance(tool, dict) else None
                if not isinstance(name, str) or name not in names:
                    raise LmsError.invalid(f"allowed_tools names an unknown function {name!r}.", "tool_choice.tools")
            return {"type": "allowed_tools", "mode": mode,
                    "tools": [{"type": "function", "name": t["name"]} for t in allowed]}
        raise LmsError.invalid("tool_choice must be 'auto', 'none', 'required', a function or allowed_tools.",
                               "tool_choice")


class CompactResponse(_Body):
    """POST /v1/responses/compact: pack a conversation (`input`, after a previous response's whole context) into
    one compaction item."""

    model: str = Field(min_length=1)
    input: Any = None
    previous_response_id: str | None = None
    instructions: str | None = None
    ttl: int | None = Field(None, ge=1, strict=True, description="idle seconds before a JIT-loaded model unloads")
