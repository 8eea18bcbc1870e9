"""OpenAI's harmony format (gpt-oss): channels instead of tags.

    <|channel|>analysis<|message|>…thinking…<|end|><|start|>assistant<|channel|>final<|message|>…answer…
    <|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"location": "Paris"}<|call|>

`analysis` is reasoning, `final` (and plain commentary) is content, a message addressed `to=functions.NAME` is a
tool call. `<|call|>` and `<|return|>` end generation, so a message may also end with the output. Same interface
and guarantees as OutputParser: any chunking gives the same events, nothing is dropped.
"""

from __future__ import annotations

import re

from lms.generation.output_parser import ParsedEvent, _call_from, _merge, _prefix_overlap

MESSAGE, END, START, CHANNEL = "<|message|>", "<|end|>", "<|start|>", "<|channel|>"
_BOUNDARIES = (END, START, CHANNEL)
_RECIPIENT = re.compile(r"to=functions\.([^\s<]+)")


def is_harmony(template: str | None) -> bool:
    return bool(template) and "<|channel|>" in template


class HarmonyParser:
    def __init__(self, *, reasoning: bool = True, tools: bool = False, tool_names: set[str] | None = None, **_):
        self.reasoning, self.tools, self.names = reasoning, tools, tool_names
        self.buffer = ""
        self.kind: str | None = None  # None: reading a header; else "reasoning", "content" or "call:NAME"
        self.header = ""
        self.call_text = ""

    def feed(self, text: str) -> list[ParsedEvent]:
        self.buffer += text
        return _merge(self._drain(final=False))

    def finish(self) -> list[ParsedEvent]:
        return _merge(self._drain(final=True))

    def _drain(self, final: bool) -> list[ParsedEvent]:
        events: list[ParsedEvent] = []
        while self.buffer:
            if self.kind is None:
                if not self._read_header(final, events):
                    break
            elif not self._read_body(final, events):
                break
        if final and self.kind is not None and self.kind.startswith("call:"):
            events += self._end_call()
        return events

    def _read_header(self, final: bool, events: list[ParsedEvent]) -> bool:
        stripped = self.buffer.lstrip()
        opening = START + "assistant"
        if opening.startswith(stripped) and not final:
            return False  # may still become a message header
        stripped = stripped.removeprefix(opening).lstrip()
        if not stripped.startswith(CHANNEL) and not (CHANNEL.startswith(stripped) and not final):
            self.kind = "plain"  # not harmony-shaped: the rest is plain content
            return True
        index = self.buffer.find(MESSAGE)
        if index < 0:
            if final:
                events.append(ParsedEvent("content", self.buffer))
                self.buffer = ""
            return False
        header, self.buffer = self.buffer[:index], self.buffer[index + len(MESSAGE):]
        channel = header.split(CHANNEL, 1)[-1].strip().split()[0] if CHANNEL in header else ""
        recipient = _RECIPIENT.search(header)
        if recipient and self.tools:
            self.kind, self.header, self.call_text = f"call:{recipient.group(1)}", header + MESSAGE, ""
        elif channel == "analysis" and self.reasoning:
            self.kind = "reasoning"
        else:
            self.kind = "content"
        return True

    def _read_body(self, final: bool, events: list[ParsedEvent]) -> bool:
        if self.kind == "plain":
            events.append(ParsedEvent("content", self.buffer))
            self.buffer = ""
            return False
        ends = [(self.buffer.find(marker), marker) for marker in _BOUNDARIES if marker in self.buffer]
        if ends:
            index, marker = min(ends)
            text = self.buffer[:index]
            self.buffer = self.buffer[index + (len(END) if marker == END else 0):]
        else:
            keep = 0 if final else max(_prefix_overlap(self.buffer, m) for m in _BOUNDARIES)
            text = self.buffer[: len(self.buffer) - keep]
            self.buffer = self.buffer[len(text):]
        if self.kind.startswith("call:"):
            self.call_text += text
        elif text:
            events.append(ParsedEvent(self.kind, text))
        if ends:
            if self.kind.startswith("call:"):
                events += self._end_call()
            self.kind = None
            return True
        return False

    def _end_call(self) -> list[ParsedEvent]:
        name = self.kind.split(":", 1)[1]
        call = _call_from({"name": name, "arguments": self.call_text.strip() or "{}"}, self.names)
        raw = self.header + self.call_text
        self.kind, self.call_text = None, ""
        return [call] if call else [ParsedEvent("content", raw)]
