"""From engine events to parsed events, for every surface.

The engine streams raw text; this splits it with the shared OutputParser into reasoning, visible content and
tool calls, keeps token logprobs with the content they belong to, and passes the start and end events on:
- `{"type": "prompt", ...}` as the engine sent it,
- `{"type": "reasoning", "text"}`, `{"type": "content", "text", "logprobs"}`,
- `{"type": "tool_call", "name", "arguments", "call_id"}`,
- `{"type": "done", "finish_reason", "usage", "stats"}`; finish_reason becomes "tool_calls" when calls were made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from lms.generation.harmony import HarmonyParser, is_harmony
from lms.generation.output_parser import OutputParser, tool_families
from lms.generation.tools import ToolPlan


@dataclass
class ParseOptions:
    reasoning: bool = True
    tools: ToolPlan | None = None
    template: str | None = None  # the model's chat template: it tells the output format family


def _parser(options: ParseOptions, reasoning_open: bool) -> OutputParser | HarmonyParser:
    plan = options.tools or ToolPlan()
    if is_harmony(options.template) and not plan.forced:
        return HarmonyParser(reasoning=options.reasoning, tools=plan.parse_calls, tool_names=plan.allowed_names)
    return OutputParser(reasoning=options.reasoning and not plan.forced, starts_in_reasoning=reasoning_open,
                        tools=plan.parse_calls or plan.forced, forced_tool_json=plan.forced,
                        tool_names=plan.allowed_names, families=tool_families(options.template),
                        unknown_calls=plan.unknown_calls)


async def parse_events(events: AsyncIterator[dict], options: ParseOptions) -> AsyncIterator[dict]:
    parser: OutputParser | None = None
    pending_logprobs: list[dict] = []
    calls = 0
    max_calls = options.tools.max_calls if options.tools else None

    def translate(parsed) -> list[dict]:
        nonlocal calls
        out = []
        for event in parsed:
            if event.kind == "content":
                out.append({"type": "content", "text": event.text, "logprobs": pending_logprobs[:]})
                pending_logprobs.clear()
            elif event.kind == "reasoning":
                out.append({"type": "reasoning", "text": event.text})
            elif max_calls is None or calls < max_calls:
                calls += 1
                out.append({"type": "tool_call", "name": event.name, "arguments": event.arguments,
                            "call_id": event.call_id})
        if not any(e["type"] == "content" for e in out) and any(e["type"] != "content" for e in out):
            pending_logprobs.clear()  # those tokens were reasoning or a call, not content
        return out

    async for event in events:
        kind = event["type"]
        if kind == "prompt":
            parser = _parser(options, bool(event.get("reasoning_open")))
            yield event
        elif kind == "text":
            parser = parser or _parser(options, False)
            pending_logprobs.extend(event.get("logprobs") or ())
            for out in translate(parser.feed(event["text"])):
                yield out
        elif kind == "done":
            parser = parser or _parser(options, False)
            for out in translate(parser.finish()):
                yield out
            if pending_logprobs:
                yield {"type": "content", "text": "", "logprobs": pending_logprobs[:]}
            if calls and event["finish_reason"] == "stop":
                event = {**event, "finish_reason": "tool_calls"}
            yield event
        else:
            yield event
