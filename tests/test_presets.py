"""Presets from LMS_HOME/config-presets: a request's `preset` brings its system prompt, sampling and structured
output (in LM Studio's format or a flat one); what the request says itself wins; `lms chat --preset`."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import CHAT_MODEL

LMSTUDIO_PRESET = {"identifier": "@local:terse", "name": "Terse", "operation": {"fields": [
    {"key": "llm.prediction.systemPrompt", "value": "You are a pirate. Answer every question like a pirate would."},
    {"key": "llm.prediction.temperature", "value": 0},
    {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 5}}]}}
FLAT_PRESET = {"name": "json-answer", "temperature": 0, "max_tokens": 40, "response_format": {
    "type": "json_schema", "json_schema": {"name": "answer", "schema": {
        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}}


@pytest.fixture(scope="module")
def presets(served):
    folder = served.home / "config-presets"
    folder.mkdir(exist_ok=True)
    (folder / "terse.preset.json").write_text(json.dumps(LMSTUDIO_PRESET))
    (folder / "json-answer.json").write_text(json.dumps(FLAT_PRESET))
    return served


def chat(served, system: str | None = None, **body):
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": "Where is Paris?"})
    return httpx.post(f"{served.base_url}/v1/chat/completions", timeout=60,
                      json={"model": CHAT_MODEL, "messages": messages, **body})


def test_a_preset_brings_its_system_prompt_and_sampling(presets):
    pirate = LMSTUDIO_PRESET["operation"]["fields"][0]["value"]
    explicit = chat(presets, system=pirate, temperature=0, max_tokens=5).json()
    styled = chat(presets, preset="terse").json()
    assert styled["usage"]["prompt_tokens"] == explicit["usage"]["prompt_tokens"]  # its system prompt
    assert styled["choices"][0]["message"]["content"] == explicit["choices"][0]["message"]["content"]
    assert styled["usage"]["completion_tokens"] <= 5  # its max tokens
    own = chat(presets, system="Be brief.", preset="terse").json()  # the request's own system message wins
    assert own["usage"]["prompt_tokens"] < styled["usage"]["prompt_tokens"]
    longer = chat(presets, preset="terse", max_tokens=12).json()  # the request's own value wins
    assert longer["usage"]["completion_tokens"] > 5


def test_a_preset_brings_structured_output_to_both_endpoints(presets):
    content = chat(presets, preset="json-answer").json()["choices"][0]["message"]["content"]
    assert isinstance(json.loads(content)["answer"], str)
    response = httpx.post(f"{presets.base_url}/v1/responses", timeout=60,
                          json={"model": CHAT_MODEL, "input": "Where is Paris?", "preset": "json-answer"}).json()
    assert isinstance(json.loads(response["output"][-1]["content"][0]["text"])["answer"], str)
    assert response["text"]["format"]["type"] == "json_schema"


def test_unknown_preset_and_lms_chat_preset(presets):
    missing = chat(presets, preset="nope")
    assert missing.status_code == 404 and "terse" in missing.json()["error"]["message"]
    answer = presets.run("chat", CHAT_MODEL, "--preset", "json-answer", "-p", "Where is Paris?")
    assert "answer" in json.loads(answer.stdout)
    bad = presets.run("chat", CHAT_MODEL, "--preset", "nope", "-p", "hi", check=False)
    assert bad.returncode == 1 and "No preset named" in bad.stderr
