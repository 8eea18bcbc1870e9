"""The request bodies that their routes read field by field (no pydantic model validates them as a whole),
written down as pydantic models so /openapi.json can describe them like the others (see lms/api/openapi.py).

The routes stay the authority: each model here lists the fields its route reads, with the limits the route
checks. A route that comes to validate its body with a model should use it here instead of its entry below.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lms.api.anthropic import _Sampling


class _Described(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- Anthropic's POST /v1/messages -------------------------------------------------------------------------------


class AnthropicImageSource(_Described):
    type: Literal["base64", "url"]
    media_type: str | None = Field(None, description="with base64 data, e.g. image/png")
    data: str | None = None
    url: str | None = None


class AnthropicBlock(_Described):
    """One content block: `text`, `image` (user), `tool_use` (assistant), `tool_result` (user), or `thinking`
    and `redacted_thinking` (ignored: earlier thoughts are not shown to the model again)."""

    type: Literal["text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking"]
    text: str | None = None
    source: AnthropicImageSource | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[AnthropicBlock] | None = None
    is_error: bool | None = None


class AnthropicMessage(_Described):
    role: Literal["user", "assistant"]
    content: str | list[AnthropicBlock]


class AnthropicTool(_Described):
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class AnthropicToolChoice(_Described):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, description="the tool to call, with type `tool`")
    disable_parallel_tool_use: bool = False


class AnthropicThinking(_Described):
    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = None


class MessagesBody(_Sampling):
    """The body of Anthropic's `POST /v1/messages`."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[AnthropicBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: AnthropicThinking | None = None
    stream: bool = False


# --- /v1/responses/compact ------------------------------------------------------------------------------------------


# --- LM Studio's native /api/v1 ---------------------------------------------------------------------------------------


class LoadBody(_Described):
    model: str = Field(min_length=1)
    context_length: int | None = Field(None, ge=1)
    replicas: int | None = Field(None, ge=1, description="Load on the connected Ray cluster, as this many replicas.")
    max_replicas: int | None = Field(None, ge=1, description="Autoscale the cluster replicas up to this many.")
    echo_load_config: bool = False


class UnloadBody(_Described):
    instance_id: str


class DownloadBody(_Described):
    model: str = Field(min_length=1, description="owner/repo, owner/repo@quantization or a Hugging Face URL")
    quantization: str | None = None


class ChatInputItem(_Described):
    type: Literal["message", "text", "image"]
    content: str | None = Field(None, description="with type message or text")
    data_url: str | None = Field(None, description="with type image")


class Integration(_Described):
    type: Literal["plugin", "ephemeral_mcp"]
    id: str | None = Field(None, description="a plugin: mcp/<name of an mcp.json server>")
    server_label: str | None = None
    server_url: str | None = None
    headers: dict[str, str] | None = None
    allowed_tools: list[str] | None = None


class NativeChatBody(_Described):
    """The body of LM Studio's stateful `POST /api/v1/chat`."""

    model: str = Field(min_length=1)
    input: str | list[ChatInputItem] = Field(description="a string, or a non-empty list of items")
    system_prompt: str | None = None
    integrations: list[str | Integration] | None = Field(None, description="'mcp/<name>' or an integration")
    reasoning: Literal["off", "on", "low", "medium", "high"] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0)
    max_output_tokens: int | None = Field(None, ge=1)
    store: bool = True
    previous_response_id: str | None = Field(None, pattern=r"^resp_")
    stream: bool = False
