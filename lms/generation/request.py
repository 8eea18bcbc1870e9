"""The one internal generation request every API surface translates into, and the events it yields.

It crosses the process boundary to a worker as plain JSON, so it is a dataclass of JSON-able fields.
Events are dicts with a `type`:
- `{"type": "prompt", "prompt_tokens", "cached_tokens"}` once the prompt is evaluated,
- `{"type": "text", "text"}` for each piece of generated text,
- `{"type": "done", "finish_reason", "usage", "stats"}` at the end (finish_reason stop, length or cancelled),
- `{"type": "error", "code", "message", "status", "param"}` if the request failed.
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
class GenerationRequest:
    messages: list[dict] | None = None  # chat: the template is applied in the worker
    prompt: str | None = None  # raw completion: no template
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int | None = None  # None: until the context is full
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None  # GBNF
    json_schema: dict | None = None  # constrain output to this schema (by grammar)
    json_object: bool = False  # constrain output to any JSON object
    format_param: str = "response_format"  # the request field the schema came from, named by format errors
    tools: list[dict] | None = None  # handed to the chat template
    logprobs: int | None = None  # None: none; N >= 0: each token's logprob and its N most likely alternatives
    reasoning_start: str | None = None  # "detect": output may open with <think>; "inside": the prompt opened it
    template_options: dict = field(default_factory=dict)  # extra chat-template variables (e.g. enable_thinking)
    images: list[str] = field(default_factory=list)  # base64 image bytes, one per IMAGE_MARKER in the messages
    draft_model: str | None = None  # speculative decoding with this model as the draft (a model key)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GenerationRequest:
        data = dict(data)
        data["sampling"] = Sampling(**data.get("sampling") or {})
        return cls(**data)


@dataclass
class EmbeddingRequest:
    inputs: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


class GenerationError(Exception):
    """A request that failed for a reason the client should hear about (an OpenAI-shaped error)."""

    def __init__(self, message: str, *, status: int = 500, code: str | None = None, param: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.message, self.status, self.code, self.param = message, status, code, param
        self.type = type or ("invalid_request_error" if 400 <= status < 500 else "server_error")

    def event(self) -> dict:
        return {"type": "error", "message": self.message, "status": self.status, "code": self.code,
                "param": self.param, "error_type": self.type}

    @classmethod
    def from_event(cls, event: dict) -> GenerationError:
        return cls(event.get("message", "generation failed"), status=event.get("status", 500),
                   code=event.get("code"), param=event.get("param"), type=event.get("error_type"))
