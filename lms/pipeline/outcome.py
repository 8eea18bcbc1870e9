"""What a generation gives back: its events primed (so an early failure is a real HTTP error), or collected into
one outcome with typed usage and the stop reason.

Streams are primed with their first event before any byte is sent, so a request that fails at once (context
too long, bad grammar) gets an error status instead of a 200 stream holding an error.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Usage:
    """Token counts of one generation (or the sum of several, for a response with tool rounds)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, reused from a cache
    reasoning_tokens: int = 0  # of completion_tokens, spent thinking

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def of(cls, usage: dict | None) -> Usage:
        """From a `done` event's usage (the engine's dict)."""
        usage = usage or {}
        return cls(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), usage.get("cached_tokens", 0),
                   usage.get("reasoning_tokens", 0))

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.cached_tokens + other.cached_tokens, self.reasoning_tokens + other.reasoning_tokens)


@dataclass
class Outcome:
    text: str = ""
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
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
    """Gather engine events (text) or parsed events (content, reasoning, tool calls) into one outcome."""
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
            outcome.usage = Usage.of(event.get("usage"))
            outcome.stats = event.get("stats") or {}
    outcome.text, outcome.reasoning = "".join(parts), "".join(thoughts)
    return outcome
