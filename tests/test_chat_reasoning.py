"""`lms chat --reasoning auto|on|off`: a thinking model's reasoning is shown between <think> lines before the
answer, or not produced at all with `off` (the template is told to skip it)."""

from __future__ import annotations

import json


def _short_preset(served) -> str:
    folder = served.home / "config-presets"
    folder.mkdir(exist_ok=True)
    (folder / "short-answers.preset.json").write_text(json.dumps({"max_tokens": 24, "temperature": 0}))
    return "short-answers"


def test_reasoning_on_shows_the_thinking_and_off_skips_it(served, thinking):
    preset = _short_preset(served)
    shown = served.run("chat", thinking, "-p", "What is 2+2?", "--preset", preset, "--reasoning", "on").stdout
    assert shown.startswith("<think>\n") and len(shown.strip()) > len("<think>")
    skipped = served.run("chat", thinking, "-p", "What is 2+2?", "--preset", preset, "--reasoning", "off").stdout
    assert "<think>" not in skipped and skipped.strip()
    wrong = served.run("chat", thinking, "-p", "hi", "--reasoning", "maybe", check=False)
    assert wrong.returncode == 1 and "auto, on or off" in wrong.stderr
