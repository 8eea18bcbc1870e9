"""gpt-oss's harmony channels: reasoning, final answers and function calls, for any chunking."""

from __future__ import annotations

import pytest

from lms.generation.harmony import HarmonyParser, is_harmony

NAMES = {"get_weather"}


def parse(chunks: list[str]) -> list[tuple]:
    parser = HarmonyParser(tools=True, tool_names=NAMES)
    merged: list[tuple] = []
    for event in [e for chunk in chunks for e in parser.feed(chunk)] + parser.finish():
        if event.kind == "tool_call":
            merged.append(("tool_call", event.name, event.arguments))
        elif merged and merged[-1][0] == event.kind:
            merged[-1] = (event.kind, merged[-1][1] + event.text)
        else:
            merged.append((event.kind, event.text))
    return merged


CASES = [
    ("<|channel|>analysis<|message|>User wants weather.<|end|><|start|>assistant<|channel|>final<|message|>Sunny.",
     [("reasoning", "User wants weather."), ("content", "Sunny.")]),
    ("<|channel|>analysis<|message|>Need a tool.<|end|><|start|>assistant<|channel|>commentary "
     'to=functions.get_weather <|constrain|>json<|message|>{"location":"Paris"}',
     [("reasoning", "Need a tool."), ("tool_call", "get_weather", '{"location":"Paris"}')]),
    ("Plain answer.", [("content", "Plain answer.")]),
    ("<|channel|>commentary to=functions.rm <|constrain|>json<|message|>{}",
     [("content", "<|channel|>commentary to=functions.rm <|constrain|>json<|message|>{}")]),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_any_chunking(text, expected):
    assert parse([text]) == expected
    assert parse(list(text)) == expected
    for cut in range(1, len(text)):
        assert parse([text[:cut], text[cut:]]) == expected


def test_detected_from_the_template():
    assert is_harmony("{{ '<|start|>assistant<|channel|>final<|message|>' }}")
    assert not is_harmony("{{ '<|im_start|>assistant' }}") and not is_harmony(None)
