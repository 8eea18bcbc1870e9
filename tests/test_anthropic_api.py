"""Anthropic's /v1/messages, end to end with real models and the official `anthropic` client: text, streaming,
tool use and errors in Anthropic's shape."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import CHAT_MODEL, TOOL_MODEL

GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def claude(served):
    return anthropic.Anthropic(base_url=served.base_url, api_key="lm-studio", max_retries=0, timeout=120)


def test_anthropic_messages(claude):
    message = claude.messages.create(model=CHAT_MODEL, max_tokens=24, system="Answer in one sentence.",
                                     messages=[{"role": "user", "content": "What is the capital of France?"}],
                                     extra_body=GREEDY)
    assert message.role == "assistant" and message.content[0].type == "text" and "Paris" in message.content[0].text
    assert message.stop_reason == "end_turn" and message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    with claude.messages.stream(model=CHAT_MODEL, max_tokens=6, messages=[{"role": "user", "content": "Count: 1, 2,"}],
                                extra_body=GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text and final.stop_reason == "max_tokens" and final.usage.output_tokens == 6


def test_anthropic_tool_use_round_trip(claude):
    tools = [{"name": "get_weather", "description": "Get the current weather for a city",
              "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                               "required": ["location"]}}]
    question = {"role": "user", "content": "What's the weather in Paris?"}
    first = claude.messages.create(model=TOOL_MODEL, max_tokens=80, tools=tools, messages=[question],
                                   extra_body=GREEDY)
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert first.stop_reason == "tool_use" and use.name == "get_weather" and "Paris" in use.input["location"]
    assert use.id.startswith("toolu_")
    forced = claude.messages.create(model=CHAT_MODEL, max_tokens=60, tools=tools, messages=[question],
                                    tool_choice={"type": "tool", "name": "get_weather"}, extra_body=GREEDY)
    assert [b.type for b in forced.content] == ["tool_use"]  # a grammar makes even SmolLM2 call it
    answer = claude.messages.create(
        model=TOOL_MODEL, max_tokens=60, tools=tools, extra_body=GREEDY,
        messages=[question, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": "21 degrees and sunny"}]}])
    assert answer.usage.input_tokens + answer.usage.cache_read_input_tokens > first.usage.input_tokens
    with claude.messages.stream(model=TOOL_MODEL, max_tokens=80, tools=tools, messages=[question],
                                extra_body=GREEDY) as stream:
        streamed = stream.get_final_message()
    assert any(b.type == "tool_use" and b.input.get("location") for b in streamed.content)


def test_anthropic_errors_have_anthropic_shape(claude, served):
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="nobody/nothing", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    response = httpx.post(f"{served.base_url}/v1/messages", json={"model": CHAT_MODEL, "messages": [
        {"role": "user", "content": "x"}]})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model=CHAT_MODEL, max_tokens=5, messages=[{"role": "user", "content": [image]}])
