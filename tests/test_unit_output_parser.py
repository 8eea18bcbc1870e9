"""The shared output parser: reasoning, content and tool calls, identical for any chunking of the text."""

from __future__ import annotations

import json
import random

import pytest

from lms.generation.output_parser import MARKERS, OutputParser, tool_families

NAMES = {"get_weather", "get_time"}
GEMMA_BROKEN = '<|tool_call>call:get_weather{location:<|"|>Paris}<tool_call|>'
QWEN_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"location": "San Francisco, CA"}}\n</tool_call>'


def parse(chunks: list[str], **options) -> list[tuple]:
    parser = OutputParser(**options)
    events = [e for chunk in chunks for e in parser.feed(chunk)] + parser.finish()
    merged: list[tuple] = []
    for event in events:
        if merged and event.kind != "tool_call" and merged[-1][0] == event.kind:
            merged[-1] = (event.kind, merged[-1][1] + event.text)
        elif event.kind == "tool_call":
            merged.append(("tool_call", event.name, json.loads(event.arguments)))
        else:
            merged.append((event.kind, event.text))
    return merged


def every_chunking(text: str, **options) -> list[tuple]:
    """The parse of the whole text, checked to be the same split at every position and randomly."""
    whole = parse([text], **options)
    assert parse(list(text), **options) == whole
    for cut in range(1, len(text)):
        assert parse([text[:cut], text[cut:]], **options) == whole, cut
    rng = random.Random(7)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 8))))
        assert parse([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])], **options) == whole
    return whole


CASES = [
    ("plain prose", "The capital of France is Paris.", {}, [("content", "The capital of France is Paris.")]),
    ("reasoning", "<think>\nParis is in France.\n</think>\n\nParis.", {},
     [("reasoning", "\nParis is in France.\n"), ("content", "Paris.")]),
    ("template opened think", "Let me think.</think>Paris.", {"starts_in_reasoning": True},
     [("reasoning", "Let me think."), ("content", "Paris.")]),
    ("late think is content", "Hi <think>x</think>", {}, [("content", "Hi <think>x</think>")]),
    ("reasoning off", "<think>x</think>y", {"reasoning": False}, [("content", "<think>x</think>y")]),
    ("hermes call", QWEN_CALL, {"tools": True, "tool_names": NAMES},
     [("tool_call", "get_weather", {"location": "San Francisco, CA"})]),
    ("text then call", "Let me check.\n" + QWEN_CALL, {"tools": True, "tool_names": NAMES},
     [("content", "Let me check.\n"), ("tool_call", "get_weather", {"location": "San Francisco, CA"})]),
    ("two calls", QWEN_CALL + "\n" + QWEN_CALL.replace("get_weather", "get_time"), {"tools": True, "tool_names": NAMES},
     [("tool_call", "get_weather", {"location": "San Francisco, CA"}),
      ("tool_call", "get_time", {"location": "San Francisco, CA"})]),
    ("fenced call", '```json\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n```',
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_weather", {"location": "Paris"})]),
    ("bare call with parameters", '{"name": "get_time", "parameters": {"city": "Zürich"}}',
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_time", {"city": "Zürich"})]),
    ("array of calls", '[{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": "{}"}]',
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_time", {}), ("tool_call", "get_weather", {})]),
    ("prose then bare call", 'Here you go:\n{"name": "get_weather", "arguments": {"location": "Oslo"}}',
     {"tools": True, "tool_names": NAMES}, [("content", "Here you go:\n"),
                                           ("tool_call", "get_weather", {"location": "Oslo"})]),
    ("unknown tool stays content", '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
     {"tools": True, "tool_names": NAMES}, [("content", '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>')]),
    ("unknown tool is a call where the surface refuses it", '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
     {"tools": True, "tool_names": NAMES, "unknown_calls": True}, [("tool_call", "rm_rf", {})]),
    ("a whole output that is one unknown call object", '{"name": "rm_rf", "arguments": {"path": "/"}}',
     {"tools": True, "tool_names": NAMES, "unknown_calls": True}, [("tool_call", "rm_rf", {"path": "/"})]),
    ("json of an unknown name inside prose stays content", 'Use {"name": "rm_rf", "arguments": {}} here',
     {"tools": True, "tool_names": NAMES, "unknown_calls": True},
     [("content", 'Use {"name": "rm_rf", "arguments": {}} here')]),
    ("malformed call stays content", "<tool_call>{not json}</tool_call>", {"tools": True, "tool_names": NAMES},
     [("content", "<tool_call>{not json}</tool_call>")]),
    ("json that is no call", 'Data: {"a": "}"} done', {"tools": True, "tool_names": NAMES},
     [("content", 'Data: {"a": "}"} done')]),
    ("reasoning then call", "<think>need weather</think>\n" + QWEN_CALL, {"tools": True, "tool_names": NAMES},
     [("reasoning", "need weather"), ("tool_call", "get_weather", {"location": "San Francisco, CA"})]),
    ("forced json", '{"name": "get_time", "arguments": {"city": "Rome"}}', {"forced_tool_json": True},
     [("tool_call", "get_time", {"city": "Rome"})]),
    ("unclosed call at the end", "Checking <tool_call>{\"name\": ", {"tools": True, "tool_names": NAMES},
     [("content", 'Checking <tool_call>{"name": ')]),
    # model families
    ("llama 3 python_tag", '<|python_tag|>{"name": "get_weather", "parameters": {"location": "Paris"}}',
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_weather", {"location": "Paris"})]),
    ("llama 3 two calls", '<|python_tag|>{"name": "get_time", "parameters": {}}; '
                          '{"name": "get_weather", "parameters": {"location": "Oslo"}}',
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_time", {}),
                                           ("tool_call", "get_weather", {"location": "Oslo"})]),
    ("mistral list", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Lyon"}}]',
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_weather", {"location": "Lyon"})]),
    ("mistral name[ARGS]", '[TOOL_CALLS]get_weather[ARGS]{"location": "Nice"}[TOOL_CALLS]get_time[ARGS]{}',
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_weather", {"location": "Nice"}),
                                           ("tool_call", "get_time", {})]),
    ("qwen3-coder xml", "<tool_call>\n<function=get_weather>\n<parameter=location>\nSan Francisco, CA\n"
                        "</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_weather", {"location": "San Francisco, CA",
                                                                          "days": 3})]),
    ("glm arg_key", "<tool_call>get_weather\n<arg_key>location</arg_key>\n<arg_value>Rome</arg_value>\n</tool_call>",
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_weather", {"location": "Rome"})]),
    ("deepseek v3", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                    '{"location": "Tokyo"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_weather", {"location": "Tokyo"})]),
    ("deepseek v3.1", '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{"city": "Seoul"}'
                      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_time", {"city": "Seoul"})]),
    ("text before a llama call", 'Sure. <|python_tag|>{"name": "get_time", "parameters": {}}',
     {"tools": True, "tool_names": NAMES}, [("content", "Sure. "), ("tool_call", "get_time", {})]),
    ("gemma 4", '<|tool_call>call:get_weather{location:<|"|>Paris, France<|"|>,days:3,units:{metric:true},'
                'hours:[9,<|"|>noon<|"|>]}<tool_call|>',
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_weather", {
         "location": "Paris, France", "days": 3, "units": {"metric": True}, "hours": [9, "noon"]})]),
    ("gemma 4 after text, two calls", 'Checking.<|tool_call>call:get_time{city:<|"|>Oslo, {N}<|"|>}<tool_call|>'
                                      "<|tool_call>call:get_weather{}<tool_call|>",
     {"tools": True, "tool_names": NAMES}, [("content", "Checking."), ("tool_call", "get_time", {"city": "Oslo, {N}"}),
                                           ("tool_call", "get_weather", {})]),
    ("function gemma", "<start_function_call>call:get_weather{location:<escape>London<escape>}<end_function_call>",
     {"tools": True, "tool_names": NAMES}, [("tool_call", "get_weather", {"location": "London"})]),
    ("gemma malformed stays content", GEMMA_BROKEN, {"tools": True, "tool_names": NAMES}, [("content", GEMMA_BROKEN)]),
    ("a family the template does not name stays content", "Try [TOOL_CALLS]get_time[ARGS]{}",
     {"tools": True, "tool_names": NAMES, "families": ("tag",)}, [("content", "Try [TOOL_CALLS]get_time[ARGS]{}")]),
]


@pytest.mark.parametrize("text,options,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cases_for_any_chunking(text, options, expected):
    assert every_chunking(text, **options) == expected


def test_family_is_detected_from_the_chat_template():
    assert tool_families("{{ '<tool_call>' }}{{ tools }}") == ("tag",)
    assert tool_families("{%- if tools %}<|python_tag|>{% endif %}") == ("python_tag",)
    assert tool_families("{{ '<start_function_call>' }}") == ("function_gemma",)
    assert tool_families("{{ '<|tool_call>call:' }}") == ("gemma",)
    assert set(tool_families("{{ messages }}")) == set(MARKERS)  # names none: every format is read
    assert set(tool_families(None)) == set(MARKERS)


def test_prose_streams_without_waiting_for_the_end():
    parser = OutputParser(tools=True, tool_names=NAMES)
    assert "".join(e.text for e in parser.feed("Hello there, how are you")) == "Hello there, how are you"


def test_call_ids_are_unique():
    parser = OutputParser(tools=True)
    events = parser.feed(QWEN_CALL + QWEN_CALL) + parser.finish()
    ids = [e.call_id for e in events if e.kind == "tool_call"]
    assert len(ids) == 2 and len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


def test_nothing_is_lost():
    text = "Intro " + QWEN_CALL + " middle <tool_call>{bad}</tool_call> end"
    parser = OutputParser(tools=True, tool_names=NAMES)
    events = [e for ch in text for e in parser.feed(ch)] + parser.finish()
    content = "".join(e.text for e in events if e.kind == "content")
    assert content == "Intro  middle <tool_call>{bad}</tool_call> end"
