"""Running one internal generation for a surface: start it, collect it, or stream it with early errors.

Streams are primed with their first event before any byte is sent, so a request that fails at once (context
too long, bad grammar) gets a real HTTP error status instead of a 200 stream holding an error.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from lms.generation.request import GenerationError

_ALPHABET = string.ascii_lowercase + string.digits


def new_id(prefix: str, length: int = 21) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass
class Outcome:
    text: str = ""
    finish_reason: str = "stop"
    usage: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    logprobs: list[dict] = field(default_factory=list)
    reasoning: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))


async def primed(events: AsyncIterator[dict]) -> AsyncIterator[dict]:
    """Pull the first event now (raising its error here), then hand back a stream of all events."""
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None

    async def chained():
        try:
            if first is not None:
                yield first
            async for event in events:
                yield event
        finally:
            await events.aclose()

    return chained()


async def collect(events: AsyncIterator[dict]) -> Outcome:
    """Gather engine events (text) or semantic events (content, reasoning, tool calls) into one outcome."""
    outcome, parts, thoughts = Outcome(), [], []
    async for event in events:
        if event["type"] in ("text", "content"):
            parts.append(event["text"])
            outcome.logprobs.extend(event.get("logprobs") or ())
        elif event["type"] == "reasoning":
            thoughts.append(event["text"])
        elif event["type"] == "tool_call":
            outcome.tool_calls.append(event)
        elif event["type"] == "done":
            outcome.finish_reason = event["finish_reason"]
            outcome.usage = event.get("usage") or {}
            outcome.stats = event.get("stats") or {}
    outcome.text, outcome.reasoning = "".join(parts), "".join(thoughts)
    return outcome


def openai_usage(usage: dict) -> dict:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0)},
        "completion_tokens_details": {"reasoning_tokens": usage.get("reasoning_tokens", 0)},
    }


def error_chunk(exc: GenerationError) -> dict:
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
