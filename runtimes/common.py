"""What every engine shares: the error event, the base of engines that run one request at a time, the
load-progress callback, token log-probability entries, text events, and the count of reasoning tokens.

Engines raise `lms.errors.LmsError` (invalid for a request that cannot run, internal for an engine failure); any
other exception is an internal error. This module imports no engine and nothing from runtimes/base.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from lms.errors import LmsError
from lms.generation.request import GenerationRequest

PROMPT_PROGRESS_SECONDS = 0.5


def error_event(exc: BaseException) -> dict:
    """The error event of a failed request: an LmsError as it is, anything else an internal error."""
    if isinstance(exc, LmsError):
        return exc.to_event()
    return LmsError.internal(str(exc) or type(exc).__name__).to_event()


class SerialEngine:
    """The base of an engine that runs one request at a time: `generate` runs to the end before it returns, and
    its events go out as they are emitted (see the Engine protocol in runtimes/base.py)."""

    concurrent = False

    def on_step_end(self, flush: Callable[[], None]) -> threading.Thread | None:
        return None


class PromptProgress:
    """prompt_progress events while a long prompt is evaluated, at most one per PROMPT_PROGRESS_SECONDS: enough
    for a client to see the work move (LM Studio's SDKs show it), never a flood on a fast machine."""

    def __init__(self, emit: Callable[[dict], None]):
        self.emit, self.last = emit, 0.0

    def report(self, processed: int, total: int, cached: int) -> None:
        now = time.perf_counter()
        if now - self.last >= PROMPT_PROGRESS_SECONDS and processed < total:
            self.last = now
            self.emit({"type": "prompt_progress", "processed": processed, "total": total, "cached": cached})


def format_param(request: GenerationRequest) -> str:
    """The request field an output-format error is about (a grammar, a response format, forced tool calls)."""
    return "grammar" if request.grammar else request.format_param or "response_format"


def start_of_empty_prompt(bos: int | None) -> list[int]:
    """An empty prompt (OpenAI accepts "") starts from the model's beginning-of-text token; a model without one
    has nothing to start from."""
    if bos is None or bos < 0:
        raise LmsError.invalid("The prompt is empty, and this model has no beginning-of-text token to start from.",
                               "prompt", code="invalid_value")
    return [bos]


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


Progress = Callable[[float], bool]  # gets 0..1; returns False to abort the load


def token_entry(piece: bytes, logprob: float) -> dict:
    return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(piece)}


def text_event(text: str, logprobs: list[dict]) -> dict:
    """A text event; logprobs of the tokens behind it (held back by stop strings or UTF-8) ride along."""
    event = {"type": "text", "text": text}
    if logprobs:
        event["logprobs"] = logprobs[:]
        logprobs.clear()
    return event


class ReasoningCounter:
    """Counts generated tokens that fall inside a leading <think> block (real tokens, for usage)."""

    def __init__(self, start: str | None):
        self.state = "inside" if start == "inside" else "maybe" if start == "detect" else "off"
        self.text = ""
        self.tokens = 0
        self.undecided = 0

    def add(self, piece: str) -> None:
        if self.state == "off":
            return
        self.text += piece
        if self.state == "maybe":
            stripped = self.text.lstrip()
            if len(stripped) < len("<think>") and "<think>".startswith(stripped):
                self.undecided += 1
                return
            self.state = "inside" if stripped.startswith("<think>") else "off"
            if self.state == "off":
                return
            self.tokens += self.undecided
        self.tokens += 1
        if "</think>" in self.text:
            self.state = "off"


def generation_limits(request: GenerationRequest, prompt_tokens: int, n_ctx: int) -> tuple[int, int]:
    """(tokens the answer may have, seed) of a request: a prompt that fills the context fails here."""
    import random

    if prompt_tokens >= n_ctx:
        raise LmsError.invalid(
            f"This model's maximum context length is {n_ctx} tokens. However, your request has "
            f"{prompt_tokens} input tokens. Please reduce the length of the input.",
            "messages" if request.messages is not None else "prompt", code="context_length_exceeded")
    budget = n_ctx - prompt_tokens
    max_tokens = request.max_tokens
    limit = budget if max_tokens is None or max_tokens < 0 else min(max_tokens, budget)
    seed = request.sampling.seed
    return limit, seed if seed is not None else random.randint(0, 2**31 - 1)
