"""What a surface hands the pipeline, already translated from its wire shape: one chat or one completion.

Messages are the internal chat messages (`role`, `content` as text with IMAGE_MARKER where each image sits,
`tool_calls`, `tool_call_id`): OpenAI's chat shape, which chat templates read. Sampling holds only what the
request gave, so a preset (or the defaults) fills the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChatInput:
    model: str | None
    messages: list[dict]
    image_urls: list[str] = field(default_factory=list)  # one per IMAGE_MARKER, in order (data: or http(s) URLs)
    image_param: str = "messages"  # the request field images came from, named by image errors
    sampling: dict = field(default_factory=dict)  # Sampling field -> value the request gave
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None  # GBNF
    json_schema: dict | None = None
    json_object: bool = False
    format_param: str = "response_format"  # the request field an output format came from
    logprobs: int | None = None  # None: none; N: each token's logprob and its N most likely alternatives
    tools: list[dict] = field(default_factory=list)  # function tools: {name, description, parameters, strict}
    tool_choice: object = "auto"  # auto, none, required, {type: function, name}, {type: allowed_tools, ...}
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = None
    reasoning_effort: str | None = None  # none turns reasoning off; others reach the template
    draft_model: str | None = None
    speculative: str | None = None  # ngram or off (GenerationRequest.speculative)
    ttl: int | None = None  # idle seconds before a JIT-loaded model unloads
    preset: str | None = None
    truncate: bool = False  # drop the oldest turns while the conversation does not fit the context
    prompt_progress: bool = False  # prompt_progress events while the prompt is evaluated
    unknown_tool_calls: bool = False  # a call of a tool not offered is still a call (the surface refuses it)
    persist: bool = False  # a stored conversation: its KV state outlives a restart (the engine's disk cache)


@dataclass
class CompletionInput:
    model: str | None
    prompt: str
    suffix: str | None = None  # fill in the middle: the text after the gap (the prompt is the text before it)
    sampling: dict = field(default_factory=dict)
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None
    draft_model: str | None = None
    speculative: str | None = None
    ttl: int | None = None
    prompt_progress: bool = False
