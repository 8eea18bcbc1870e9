"""/v1/responses end to end with the official openai client, the real engine and SmolLM2."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import CHAT_MODEL

PARIS = "What is the capital of France? Answer in one sentence."


def test_string_input_answers(client, chat_model):
    response = client.responses.create(model=chat_model, input=PARIS, temperature=0)
    assert response.status == "completed" and response.object == "response"
    assert "Paris" in response.output_text
    assert response.id.startswith("resp_")
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert response.usage.input_tokens > 10 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_item_input_with_instructions_and_history(client, chat_model):
    response = client.responses.create(
        model=chat_model, instructions="You are terse.", temperature=0, max_output_tokens=40,
        input=[
            {"type": "message", "role": "user", "content": "My name is Alice."},
            {"type": "message", "role": "assistant", "content": "Nice to meet you, Alice.", "phase": "final_answer"},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be kind."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is my name?"}]},
        ])
    assert response.status in ("completed", "incomplete")
    assert response.instructions == "You are terse."


def test_streaming_events_are_ordered_and_complete(client, chat_model):
    events = list(client.responses.create(model=chat_model, input=PARIS, temperature=0, stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert types[2:5] == ["response.output_item.added", "response.content_part.added", "response.output_text.delta"]
    assert types[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text and "Paris" in text
    assert events[-1].response.output_text == text


def test_raw_sse_framing(served):
    with httpx.stream("POST", served.base_url + "/v1/responses", timeout=120, json={
            "model": CHAT_MODEL, "input": "Say hi", "stream": True, "max_output_tokens": 8}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    blocks = [b for b in body.split("\n\n") if b]
    assert blocks[-1] == "data: [DONE]"
    for block in blocks[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line == "event: " + json.loads(data_line.removeprefix("data: "))["type"]


def test_previous_response_id_chain_and_cached_tokens(client, chat_model):
    first = client.responses.create(model=chat_model, input="My favourite colour is green. Remember it.",
                                    temperature=0, max_output_tokens=30)
    second = client.responses.create(model=chat_model, previous_response_id=first.id, temperature=0,
                                     input="What is my favourite colour?", max_output_tokens=30)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    # the previous turn's tokens come from the KV cache
    previous = first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens >= 0.9 * previous
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    assert client.responses.retrieve(second.id).output_text == second.output_text


def test_store_false_is_not_retrievable(client, chat_model):
    response = client.responses.create(model=chat_model, input="Hi", store=False, max_output_tokens=5)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model=chat_model, previous_response_id=response.id, input="Again")
    assert error.value.body["code"] == "previous_response_not_found"


def test_delete(client, chat_model):
    response = client.responses.create(model=chat_model, input="Hi", max_output_tokens=5)
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_max_output_tokens_is_incomplete(client, chat_model):
    response = client.responses.create(model=chat_model, input="Write a long story about a dragon.",
                                       max_output_tokens=6)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[-1].status == "incomplete"
    assert response.usage.output_tokens == 6


def test_logprobs(client, chat_model):
    response = client.responses.create(model=chat_model, input=PARIS, temperature=0, max_output_tokens=8,
                                       include=["message.output_text.logprobs"], top_logprobs=3)
    part = response.output[0].content[0]
    assert len(part.logprobs) == response.usage.output_tokens
    first = part.logprobs[0]
    assert first.logprob <= 0 and len(first.top_logprobs) == 3
    assert first.top_logprobs[0].logprob >= first.top_logprobs[1].logprob
    assert "".join(lp.token for lp in part.logprobs) == part.text
    events = list(client.responses.create(model=chat_model, input=PARIS, temperature=0, max_output_tokens=8,
                                          include=["message.output_text.logprobs"], top_logprobs=2, stream=True))
    streamed = [lp for e in events if e.type == "response.output_text.delta" for lp in e.logprobs]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    # each streamed delta carries the logprobs of exactly its tokens
    assert "".join(lp.token for lp in streamed) == text and len(streamed) == events[-1].response.usage.output_tokens
    assert all(len(lp.top_logprobs) == 2 for lp in streamed)


def test_json_schema_output(client, chat_model):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    response = client.responses.create(
        model=chat_model, input="Name a famous city and its country.", temperature=0, max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}})
    assert set(json.loads(response.output_text)) == {"city", "country"}
    assert response.text.format.type == "json_schema"


WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_function_tool_round_trip_with_required_choice(client, chat_model):
    response = client.responses.create(model=chat_model, input="What is the weather in Paris?", tools=[WEATHER],
                                       tool_choice="required", temperature=0)
    calls = [item for item in response.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert "city" in json.loads(calls[0].arguments)
    assert response.tools[0].name == "get_weather" and response.tools[0].strict is None
    answer = client.responses.create(model=chat_model, previous_response_id=response.id, temperature=0,
                                     max_output_tokens=40, tools=[WEATHER], input=[
                                         {"type": "function_call_output", "call_id": calls[0].call_id,
                                          "output": json.dumps({"temperature_c": 18, "sky": "sunny"})}])
    assert answer.status in ("completed", "incomplete") and answer.output_text


def test_named_tool_choice_and_none(client, chat_model):
    other = {**WEATHER, "name": "get_time", "description": "Get the time in a city"}
    named = client.responses.create(model=chat_model, input="Weather in Rome?", tools=[WEATHER, other],
                                    tool_choice={"type": "function", "name": "get_time"}, temperature=0)
    assert [i.name for i in named.output if i.type == "function_call"] == ["get_time"]
    none = client.responses.create(model=chat_model, input="Weather in Rome?", tools=[WEATHER], tool_choice="none",
                                   temperature=0, max_output_tokens=20)
    assert all(i.type == "message" for i in none.output)


def test_reasoning_from_a_forced_think_block(client, chat_model):
    grammar = 'root ::= "<think>\\n" thought "\\n</think>\\n\\n" answer\nthought ::= [a-zA-Z ,.]{5,80}\n' \
              'answer ::= [a-zA-Z ,.]{1,80}'
    response = client.responses.create(model=chat_model, input=PARIS, temperature=0, extra_body={"grammar": grammar})
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message"]
    assert response.output[0].content[0].text.strip()
    assert "<think>" not in response.output_text
    assert 0 < response.usage.output_tokens_details.reasoning_tokens < response.usage.output_tokens
    events = list(client.responses.create(model=chat_model, input=PARIS, temperature=0, stream=True,
                                          extra_body={"grammar": grammar}))
    assert any(e.type == "response.reasoning.delta" for e in events)


def test_compaction_round_trip_and_tamper_evidence(served, client):
    compacted = httpx.post(served.base_url + "/v1/responses/compact", timeout=120, json={
        "model": CHAT_MODEL, "input": [{"role": "user", "content": "The secret word is cobalt."},
                                       {"role": "assistant", "content": "Noted: cobalt."}]}).json()
    assert compacted["object"] == "response.compaction" and compacted["usage"]["input_tokens"] > 0
    [item] = compacted["output"]
    assert item["type"] == "compaction"
    follow = client.responses.create(model=CHAT_MODEL, max_output_tokens=20,
                                     input=[item, {"role": "user", "content": "What is the secret word?"}])
    assert follow.status in ("completed", "incomplete")
    tampered = dict(item, encrypted_content=item["encrypted_content"][:-8] + "AAAAAAAA")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=CHAT_MODEL, input=[tampered, {"role": "user", "content": "Hi"}])
    missing = httpx.post(served.base_url + "/v1/responses/compact", json={"input": "hi"})
    assert missing.status_code == 400


def test_errors_are_openai_shaped(served, client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model=CHAT_MODEL, input=[{"type": "message", "role": "wizard", "content": "x"}])
    assert error.value.body["param"] == "input[0].role"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=CHAT_MODEL, input="hi", temperature=7)
    with pytest.raises(openai.BadRequestError) as unmatched:
        client.responses.create(model=CHAT_MODEL, input=[{"type": "function_call_output", "call_id": "nope",
                                                          "output": "x"}])
    assert unmatched.value.body["code"] == "invalid_function_call_output"
    image = {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}
    with pytest.raises(openai.BadRequestError) as no_vision:
        client.responses.create(model=CHAT_MODEL, input=[image])
    assert no_vision.value.body["code"] == "model_not_supported"


def test_truncation(served):
    served.run("load", CHAT_MODEL, "--identifier", "tiny-responses", "-c", "256", "-y")
    try:
        history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"Message number {i}. " * 8}
                   for i in range(12)] + [{"role": "user", "content": "Say hi."}]
        disabled = httpx.post(served.base_url + "/v1/responses", timeout=120, json={
            "model": "tiny-responses", "input": history, "instructions": "Be brief."})
        assert disabled.status_code == 400 and disabled.json()["error"]["code"] == "context_length_exceeded"
        auto = httpx.post(served.base_url + "/v1/responses", timeout=120, json={
            "model": "tiny-responses", "input": history, "instructions": "Be brief.", "truncation": "auto",
            "max_output_tokens": 10})
        assert auto.status_code == 200, auto.text
        assert auto.json()["truncation"] == "auto"
    finally:
        served.run("unload", "tiny-responses")


def test_chain_survives_a_daemon_restart(lms):
    lms.run("server", "start", "-p", str(lms.port))
    client = openai.OpenAI(base_url=lms.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    first = client.responses.create(model=CHAT_MODEL, input="My dog is called Rex.", max_output_tokens=20)
    lms.run("daemon", "down")
    lms.run("server", "start", "-p", str(lms.port))
    second = client.responses.create(model=CHAT_MODEL, previous_response_id=first.id, input="What is my dog called?",
                                     max_output_tokens=20)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens
    assert client.responses.retrieve(first.id).id == first.id
