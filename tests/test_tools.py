"""Function tools end to end: a tool-trained model choosing a tool by itself (tool_choice auto), on both
endpoints, streaming and not; and the result going back to the model."""

from __future__ import annotations

import json

from tests.conftest import TOOL_MODEL

WEATHER_FUNCTION = {"name": "get_weather", "description": "Get the current weather for a location",
                    "parameters": {"type": "object", "required": ["location"], "properties": {
                        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}}}}
QUESTION = "What's the weather like in San Francisco?"


def test_chat_completions_auto_tool_call_and_result(client):
    tools = [{"type": "function", "function": WEATHER_FUNCTION}]
    messages = [{"role": "user", "content": QUESTION}]
    first = client.chat.completions.create(model=TOOL_MODEL, messages=messages, tools=tools, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and "San Francisco" in json.loads(call.function.arguments)["location"]
    assert "<tool_call>" not in (choice.message.content or "")
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_f": 64, "sky": "fog"})}]
    final = client.chat.completions.create(model=TOOL_MODEL, messages=messages, tools=tools, temperature=0,
                                           max_tokens=60)
    # The result reached the model (a 0.5B model may answer or call again; both are valid turns).
    assert final.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert final.usage.prompt_tokens > first.usage.prompt_tokens + 10


def test_chat_completions_streams_tool_calls(client):
    tools = [{"type": "function", "function": WEATHER_FUNCTION}]
    chunks = list(client.chat.completions.create(model=TOOL_MODEL, messages=[{"role": "user", "content": QUESTION}],
                                                 tools=tools, temperature=0, stream=True))
    calls = [c for chunk in chunks if chunk.choices for c in (chunk.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    assert json.loads("".join(c.function.arguments for c in calls))["location"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()


def test_responses_auto_tool_call_round_trip(client):
    tool = {"type": "function", **WEATHER_FUNCTION}
    first = client.responses.create(model=TOOL_MODEL, input=QUESTION, tools=[tool], temperature=0)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    answer = client.responses.create(model=TOOL_MODEL, previous_response_id=first.id, tools=[tool], temperature=0,
                                     max_output_tokens=60, input=[{"type": "function_call_output",
                                                                   "call_id": call.call_id,
                                                                   "output": "64F and foggy"}])
    assert answer.output_text


def test_allowed_tools_suppresses_other_calls(client):
    weather = {"type": "function", **WEATHER_FUNCTION}
    clock = {"type": "function", "name": "get_time", "description": "Get the time in a city",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    response = client.responses.create(
        model=TOOL_MODEL, input=QUESTION, tools=[weather, clock], temperature=0, max_output_tokens=80,
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]})
    assert [item.name for item in response.output if item.type == "function_call"] == ["get_time"]


def test_trained_for_tool_use_is_reported(served):
    models = {m["modelKey"]: m for m in served.json("ls")}
    assert models[TOOL_MODEL]["trainedForToolUse"] is True
    assert models["huggingfacetb/smollm2-135m-instruct"]["trainedForToolUse"] is False
