"""The one internal generation request every API surface translates into, and the events it yields.

It crosses the process boundary to a worker as plain JSON (`to_dict` / `from_dict`), so it is a dataclass of
JSON-able fields; the worker rebuilds the typed request before its engine sees it (runtimes/base.py). The manager
fills in the fields no surface sets: the resolved draft model (`draft`) and whether the log bus wants the
templated prompt back (`echo_prompt`).
Events are dicts with a `type`:
- `{"type": "prompt", "prompt_tokens", "cached_tokens", "reasoning_open"}` once the prompt is evaluated, with
  `prompt_text` (the templated prompt) when the request asked for `echo_prompt`,
- `{"type": "prompt_progress", "processed", "total", "cached"}` while a long prompt is evaluated (at most a few
  a second), only when the request asked for `prompt_progress`,
- `{"type": "text", "text"}` for each piece of generated text,
- `{"type": "done", "finish_reason", "usage", "stats"}` at the end (finish_reason stop, length or cancelled),
- `{"type": "error", "kind", "code", "message", "param"}` if the request failed (lms.errors.LmsError.to_event).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Where an image sits in a message's text; the worker swaps in its engine's own media marker.
IMAGE_MARKER = "<__lms_image__>"


@dataclass
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: dict[str, float] | None = None  # token id (as a string, as JSON keys are) -> bias

    @classmethod
    def overriding(cls, **values) -> Sampling:
        """Defaults, with every value a request gave (None means not given)."""
        return cls(**{key: value for key, value in values.items() if value is not None})


@dataclass
class DraftSpec:
    """The speculative-decoding draft model the manager resolved from a request's `draft_model`: the file the
    worker loads, its model key, and how many tokens it may guess per step (None: the engine's default)."""

    path: str
    name: str
    max_tokens: int | None = None


@dataclass
class GenerationRequest:
    messages: list[dict] | None = None  # chat: the template is applied in the worker
    prompt: str | None = None  # raw completion: no template
    suffix: str | None = None  # with prompt: fill in the middle, laid out with the model's own FIM tokens
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int | None = None  # None: until the context is full
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None  # GBNF
    json_schema: dict | None = None  # constrain output to this schema (by grammar)
    json_object: bool = False  # constrain output to any JSON object
    format_param: str = "response_format"  # the request field the schema came from, named by format errors
    tools: list[dict] | None = None  # handed to the chat template
    tool_choice: str | dict | None = None  # chat format, for an upstream server; local engines force calls by grammar
    logprobs: int | None = None  # None: none; N >= 0: each token's logprob and its N most likely alternatives
    reasoning_start: str | None = None  # "detect": output may open with <think>; "inside": the prompt opened it
    template_options: dict = field(default_factory=dict)  # extra chat-template variables (e.g. enable_thinking)
    images: list[str] = field(default_factory=list)  # base64 image bytes, one per IMAGE_MARKER in the messages
    draft_model: str | None = None  # speculative decoding with this model as the draft (a model key)
    speculative: str | None = None  # "ngram": drafts from the text itself (prompt lookup); "off": no drafts at all
    persist: bool = False  # a stored conversation: its KV state is kept on disk for a follow-up after a restart
    # set by the manager, not by a surface:
    draft: DraftSpec | None = None  # the draft_model resolved to a file
    echo_prompt: bool = False  # the engine adds the templated prompt (`prompt_text`) to its prompt event
    prompt_progress: bool = False  # the engine reports prompt_progress events while it evaluates the prompt

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GenerationRequest:
        data = dict(data)
        data["sampling"] = Sampling(**data.get("sampling") or {})
        if data.get("draft") is not None:
            data["draft"] = DraftSpec(**data["draft"])
        return cls(**data)


@dataclass
class EmbeddingRequest:
    """What an embedding model embeds, one vector per input."""

    inputs: list[str]
    truncate: bool = False  # cut an input longer than the context instead of refusing it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EmbeddingRequest:
        return cls(inputs=list(data["inputs"]), truncate=bool(data.get("truncate")))
