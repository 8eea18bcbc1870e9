"""Splitting a model's streamed output into reasoning, visible content and tool calls.

Pure text in, semantic events out, for any chunking of the text: the result for a full output is the same
whether it arrives whole or a character at a time. Text that might still become a tool call is held back;
everything else streams out at once. Nothing is ever dropped: what fails to parse as a call is content.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from lms.generation.ids import MIXED, new_id

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
FENCE = "```"
# Tool-call openers of the model families, and what closes them (None: the end of the output).
MARKERS = {
    "tag": (CALL_OPEN, CALL_CLOSE),  # Hermes, Qwen 2.5/3 (JSON), Qwen3-Coder (<function=…>), GLM (<arg_key>)
    "python_tag": ("<|python_tag|>", None),  # Llama 3.x
    "mistral": ("[TOOL_CALLS]", None),  # Mistral: a JSON list, or name[ARGS]{…} in newer templates
    "deepseek": ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"),  # DeepSeek V3 / R1
    "gemma": ("<|tool_call>", "<tool_call|>"),  # Gemma 4: call:NAME{key:<|"|>text<|"|>,n:3}
    "function_gemma": ("<start_function_call>", "<end_function_call>"),  # FunctionGemma: call:NAME{k:<escape>v<escape>}
}
GEMMA_QUOTES = {"gemma": '<|"|>', "function_gemma": "<escape>"}
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)




def tool_families(template: str | None) -> tuple[str, ...]:
    """The call formats a model uses, from the markers its chat template writes; every known format when the
    template names none (models told about tools by our own prompt, or unknown templates)."""
    named = tuple(kind for kind, (opener, _) in MARKERS.items() if template and opener in template)
    return named or tuple(MARKERS)


@dataclass
class ParsedEvent:
    kind: Literal["reasoning", "content", "tool_call"]
    text: str = ""
    name: str | None = None
    arguments: str | None = None
    call_id: str | None = None


def new_call_id() -> str:
    return new_id("call_", 24, MIXED)


def _call_from(value, names: set[str] | None) -> ParsedEvent | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return None
    if not isinstance(arguments, dict) or (names is not None and value["name"] not in names):
        return None
    return ParsedEvent("tool_call", name=value["name"], call_id=new_call_id(),
                       arguments=json.dumps(arguments, separators=(",", ":"), ensure_ascii=False))


def parse_calls(text: str, names: set[str] | None) -> list[ParsedEvent] | None:
    """A whole text that is one call object, or a list of them, as calls; else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    values = value if isinstance(value, list) else [value]
    calls = [_call_from(v, names) for v in values]
    if not calls or any(c is None for c in calls):
        return None
    return calls


def _next_candidate(text: str, families: tuple[str, ...]) -> tuple[int, str]:
    """Where the next possible call starts in text, and its kind (a MARKERS key, "json" or "fence")."""
    found = [(text.find(MARKERS[kind][0]), kind) for kind in families]
    found += [(text.find("{"), "json"), (text.find(FENCE), "fence")]
    found = [(i, kind) for i, kind in found if i >= 0]
    return min(found) if found else (-1, "")


def _candidate_end(text: str, start: int, kind: str, final: bool) -> int:
    """The index just past a complete candidate, or -1 if it is not closed yet."""
    if kind in MARKERS:
        opener, closer = MARKERS[kind]
        if closer is None:
            return len(text) if final else -1
        end = text.find(closer, start + len(opener))
        return end + len(closer) if end >= 0 else -1
    if kind == "fence":
        end = text.find(FENCE, start + len(FENCE))
        return end + len(FENCE) if end >= 0 else -1
    return _json_end(text, start)


def _json_end(text: str, start: int) -> int:
    """The index just past the JSON object starting at start, or -1 if it does not close."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return -1


def _candidate_calls(raw: str, kind: str, names: set[str] | None) -> list[ParsedEvent] | None:
    if kind == "json":
        return parse_calls(raw, names)
    if kind == "fence":
        fenced = _FENCE.match(raw)
        return parse_calls(fenced.group(1).strip(), names) if fenced else None
    opener, closer = MARKERS[kind]
    body = raw[len(opener): len(raw) - len(closer) if closer else len(raw)].strip()
    if kind == "tag":
        if body.startswith("<function="):
            return _xml_calls(body, names)
        if "<arg_key>" in body:
            return _glm_call(body, names)
        return parse_calls(body, names)
    if kind == "python_tag":
        return parse_calls(body, names) or _each(body.split(";"), names)
    if kind == "mistral":
        return parse_calls(body, names) or _mistral_calls(body, names)
    if kind in GEMMA_QUOTES:
        return _gemma_calls(body, GEMMA_QUOTES[kind], names)
    return _deepseek_calls(body, names)


def _gemma_calls(body: str, quote: str, names: set[str] | None) -> list[ParsedEvent] | None:
    """Gemma: call:NAME{key:value,…}, where strings are wrapped in a quote token and keys are bare."""
    calls, rest = [], body.strip()
    try:
        while rest:
            if not rest.startswith("call:") or "{" not in rest:
                return None
            name, _, rest = rest[len("call:"):].partition("{")
            arguments, end = _gemma_value("{" + rest, 0, quote)
            calls.append(_call_from({"name": name.strip(), "arguments": arguments}, names))
            rest = rest[end - 1:].strip()
    except (ValueError, IndexError):
        return None
    return calls if calls and all(calls) else None


def _gemma_value(text: str, at: int, quote: str):
    """One value of Gemma's call syntax starting at `at`, and the index just past it."""
    while text[at].isspace():
        at += 1
    if text.startswith(quote, at):
        end = text.index(quote, at + len(quote))
        return text[at + len(quote):end], end + len(quote)
    if text[at] in "{[":
        closer, items, keyed = "}]"["{[".index(text[at])], [], text[at] == "{"
        at += 1
        while True:
            while text[at].isspace() or text[at] == ",":
                at += 1
            if text[at] == closer:
                return (dict(items) if keyed else items), at + 1
            if keyed:
                colon = text.index(":", at)
                key = text[at:colon].strip().strip('"')
                value, at = _gemma_value(text, colon + 1, quote)
                items.append((key, value))
            else:
                value, at = _gemma_value(text, at, quote)
                items.append(value)
    end = at
    while text[end] not in ",}]":
        end += 1
    return _value(text[at:end].strip()), end


def _each(parts: list[str], names: set[str] | None) -> list[ParsedEvent] | None:
    calls = [parse_calls(part.strip(), names) for part in parts if part.strip()]
    if not calls or any(c is None for c in calls):
        return None
    return [call for group in calls for call in group]


def _value(text: str):
    """An XML-style argument value: JSON when it reads as JSON (numbers, booleans, objects), else the string."""
    text = text.strip("\n")
    try:
        return json.loads(text)
    except ValueError:
        return text


_XML_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)</function>", re.DOTALL)
_XML_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.DOTALL)


def _xml_calls(body: str, names: set[str] | None) -> list[ParsedEvent] | None:
    """Qwen3-Coder: <function=NAME><parameter=KEY>value</parameter>…</function>."""
    calls = [_call_from({"name": name.strip(), "arguments": {k.strip(): _value(v) for k, v in
                                                              _XML_PARAMETER.findall(inner)}}, names)
             for name, inner in _XML_FUNCTION.findall(body)]
    return calls if calls and all(calls) else None


def _glm_call(body: str, names: set[str] | None) -> list[ParsedEvent] | None:
    """GLM 4.5: NAME, then <arg_key>KEY</arg_key><arg_value>VALUE</arg_value> pairs."""
    name = body.split("<arg_key>", 1)[0].strip()
    keys = re.findall(r"<arg_key>(.*?)</arg_key>", body, re.DOTALL)
    values = re.findall(r"<arg_value>(.*?)</arg_value>", body, re.DOTALL)
    if not name or len(keys) != len(values):
        return None
    call = _call_from({"name": name, "arguments": {k.strip(): _value(v) for k, v in zip(keys, values)}}, names)
    return [call] if call else None


def _mistral_calls(body: str, names: set[str] | None) -> list[ParsedEvent] | None:
    """Newer Mistral templates: NAME[ARGS]{json}, possibly several, each after its own [TOOL_CALLS]."""
    calls, rest = [], body
    while rest.strip():
        name, marker, rest = rest.strip().removeprefix(MARKERS["mistral"][0]).partition("[ARGS]")
        end = _json_end(rest, rest.find("{")) if marker and "{" in rest else -1
        if end < 0:
            return None
        calls.append(_call_from({"name": name.strip(), "arguments": rest[rest.find("{"):end]}, names))
        rest = rest[end:]
    return calls if calls and all(calls) else None


def _deepseek_calls(body: str, names: set[str] | None) -> list[ParsedEvent] | None:
    """DeepSeek: <｜tool▁call▁begin｜>[function]<｜tool▁sep｜>NAME + fenced JSON (V3) or NAME<｜tool▁sep｜>JSON."""
    calls = []
    for segment in re.findall(r"<｜tool▁call▁begin｜>(.*?)<｜tool▁call▁end｜>", body, re.DOTALL):
        left, _, right = segment.partition("<｜tool▁sep｜>")
        if left.strip() == "function":
            name, _, arguments = right.partition("\n")
            fenced = _FENCE.match(arguments)
            arguments = fenced.group(1) if fenced else arguments
        else:
            name, arguments = left, right
        calls.append(_call_from({"name": name.strip(), "arguments": arguments.strip() or "{}"}, names))
    return calls if calls and all(calls) else None


def _prefix_overlap(text: str, marker: str) -> int:
    """Length of the longest tail of text that is a proper prefix of marker."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class OutputParser:
    def __init__(self, *, reasoning: bool = True, starts_in_reasoning: bool = False, tools: bool = False,
                 forced_tool_json: bool = False, tool_names: set[str] | None = None,
                 families: tuple[str, ...] | None = None, unknown_calls: bool = False):
        self.tools, self.forced, self.names = tools or forced_tool_json, forced_tool_json, tool_names
        # names a marked call (or a whole output that is one call object) must have: any, with unknown_calls
        self.marked_names = None if unknown_calls else tool_names
        self.families = families or tuple(MARKERS)
        self.openers = [MARKERS[kind][0] for kind in self.families] + [FENCE]
        # phases: "start" (may open <think>), "reasoning", "content"
        self.phase = "reasoning" if starts_in_reasoning and reasoning else "start" if reasoning else "content"
        self.buffer = ""  # text not yet emitted
        self.strip_leading = False  # drop whitespace right after </think>
        self.whole: str | None = None  # whole-output mode: text that may be a bare/fenced call, held to the end
        self.seen_content = False  # whether any content (or a call) was produced
        self.pending_ws = ""  # whitespace after a call: content only if more content follows
        self.after_call = False

    # --- public ---------------------------------------------------------------------------------------------

    def feed(self, text: str) -> list[ParsedEvent]:
        self.buffer += text
        return self._drain(final=False)

    def finish(self) -> list[ParsedEvent]:
        return self._drain(final=True)

    # --- machinery --------------------------------------------------------------------------------------------

    def _drain(self, final: bool) -> list[ParsedEvent]:
        events: list[ParsedEvent] = []
        while True:
            before = (self.phase, len(self.buffer), self.whole is None)
            if self.phase == "start":
                self._start(final)
                if self.phase == "start":
                    break
            elif self.phase == "reasoning":
                events += self._reasoning(final)
            else:
                events += self._content(final)
            if (self.phase, len(self.buffer), self.whole is None) == before:
                break
        return _merge(events)

    def _start(self, final: bool) -> None:
        stripped = self.buffer.lstrip()
        if stripped.startswith(THINK_OPEN):
            self.buffer = stripped[len(THINK_OPEN):]
            self.phase = "reasoning"
        elif final or not THINK_OPEN.startswith(stripped) or not stripped and len(self.buffer) > 64:
            self.phase = "content"
        # else: still might be "<think>": wait for more

    def _reasoning(self, final: bool) -> list[ParsedEvent]:
        end = self.buffer.find(THINK_CLOSE)
        if end >= 0:
            text, self.buffer = self.buffer[:end], self.buffer[end + len(THINK_CLOSE):]
            self.phase, self.strip_leading = "content", True
            return [ParsedEvent("reasoning", text)] if text else []
        keep = 0 if final else _prefix_overlap(self.buffer, THINK_CLOSE)
        text = self.buffer[: len(self.buffer) - keep]
        self.buffer = self.buffer[len(text):]
        return [ParsedEvent("reasoning", text)] if text else []

    def _content(self, final: bool) -> list[ParsedEvent]:
        if self.strip_leading:
            stripped = self.buffer.lstrip()
            if not stripped and not final:
                self.buffer = ""
                return []
            self.buffer, self.strip_leading = stripped, False
        if self.forced:
            if not final:
                return []
            text, self.buffer = self.buffer, ""
            calls = parse_calls(text.strip(), None) if text.strip() else []
            return calls if calls is not None else [ParsedEvent("content", text)] if text else []
        if not self.tools:
            text, self.buffer = self.buffer, ""
            return self._emit_content(text)
        if self.whole is not None or (not self.seen_content and self._may_be_whole_call()):
            return self._whole_call(final)
        return self._tagged(final)

    def _may_be_whole_call(self) -> bool:
        stripped = self.buffer.lstrip()
        if not stripped:
            return True  # only whitespace so far: undecided
        return stripped[0] in "{[" or stripped.startswith("```") or "```".startswith(stripped)

    def _whole_call(self, final: bool) -> list[ParsedEvent]:
        self.whole = (self.whole or "") + self.buffer
        self.buffer = ""
        stripped = self.whole.strip()
        if stripped and not (stripped[0] in "{[" or stripped.startswith("```") or "```".startswith(stripped)):
            text, self.whole = self.whole, None  # it turned out to be prose
            self.buffer = text
            self.seen_content = True
            return self._tagged(final)
        if not final:
            return []
        text, self.whole = self.whole, None
        fenced = _FENCE.match(text)
        calls = parse_calls((fenced.group(1) if fenced else text).strip(), self.marked_names) if text.strip() \
            else None
        if calls:
            self.seen_content = True
            return calls
        self.buffer = text
        self.seen_content = True
        return self._tagged(final)

    def _tagged(self, final: bool) -> list[ParsedEvent]:
        """Calls inside prose: Hermes-style <tool_call>…</tool_call> blocks, and JSON call objects or fenced
        blocks after some text ("Here it is: {"name": …}"). Candidates are held until they close."""
        events: list[ParsedEvent] = []
        while True:
            start, kind = _next_candidate(self.buffer, self.families)
            if start < 0:
                keep = 0 if final else max(_prefix_overlap(self.buffer, marker) for marker in self.openers)
                text = self.buffer[: len(self.buffer) - keep]
                self.buffer = self.buffer[len(text):]
                events += self._emit_content(text, final=final)
                return events
            end = _candidate_end(self.buffer, start, kind, final)
            if end < 0:  # still open: hold it (or give it up as content at the end)
                events += self._emit_content(self.buffer[:start])
                self.buffer = self.buffer[start:]
                if final:
                    text, self.buffer = self.buffer, ""
                    events += self._emit_content(text, final=True)
                return events
            events += self._emit_content(self.buffer[:start])
            raw, self.buffer = self.buffer[start:end], self.buffer[end:]
            calls = _candidate_calls(raw, kind, self.names if kind in ("json", "fence") else self.marked_names)
            if calls:
                self.pending_ws = ""
                self.seen_content = True
                self.after_call = True
                events += calls
            else:
                events += self._emit_content(raw)

    def _emit_content(self, text: str, final: bool = False) -> list[ParsedEvent]:
        """Content, except that whitespace right after a call waits to see if more content follows."""
        if not text:
            return []
        if self.after_call:
            if not text.strip():
                self.pending_ws += text
                return []
            text, self.pending_ws, self.after_call = self.pending_ws + text, "", False
        self.seen_content = True
        return [ParsedEvent("content", text)]


def _merge(events: list[ParsedEvent]) -> list[ParsedEvent]:
    merged: list[ParsedEvent] = []
    for event in events:
        if merged and event.kind != "tool_call" and merged[-1].kind == event.kind:
            merged[-1].text += event.text
        else:
            merged.append(event)
    return merged
