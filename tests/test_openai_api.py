"""The official openai client against the real server, engine and models."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import pytest

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_list_has_downloaded_models(client):
    ids = [m.id for m in client.models.list().data]
    assert CHAT_MODEL in ids
    assert EMBEDDING_MODEL in ids
    assert client.models.retrieve(CHAT_MODEL).id == CHAT_MODEL


def test_chat_completion_answers(client, chat_model):
    completion = client.chat.completions.create(model=chat_model, messages=QUESTION, temperature=0)
    choice = completion.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"
    assert completion.object == "chat.completion"
    assert completion.usage.prompt_tokens > 10
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_chat_streaming_matches_non_streaming(client, chat_model):
    full = client.chat.completions.create(model=chat_model, messages=QUESTION, temperature=0, seed=1)
    chunks = list(client.chat.completions.create(model=chat_model, messages=QUESTION, temperature=0, seed=1,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_content_parts_system_and_history(client, chat_model):
    messages = [
        {"role": "system", "content": "You answer with one word."},
        {"role": "user", "content": [{"type": "text", "text": "Name a color."}]},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of "}, {"type": "text",
                                                                                          "text": "France?"}]},
    ]
    completion = client.chat.completions.create(model=chat_model, messages=messages, temperature=0, max_tokens=20)
    assert completion.choices[0].message.content


def test_max_tokens_gives_length(client, chat_model):
    completion = client.chat.completions.create(model=chat_model, messages=[
        {"role": "user", "content": "Write a long story about a dragon."}], max_tokens=5, temperature=0)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5


def test_stop_string_is_not_emitted(client, chat_model):
    completion = client.chat.completions.create(model=chat_model, messages=QUESTION, temperature=0, stop=["Paris"])
    assert completion.choices[0].finish_reason == "stop"
    assert "Paris" not in completion.choices[0].message.content


def test_seed_makes_sampling_repeatable(client, chat_model):
    kwargs = dict(model=chat_model, messages=[{"role": "user", "content": "Invent a name for a cat."}],
                  temperature=1.0, max_tokens=16, seed=1234)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second


def test_logit_bias_bans_a_token(client, chat_model):
    import llama_cpp

    from lms.store.catalog import bundled_model_file

    baseline = client.chat.completions.create(model=chat_model, messages=QUESTION, temperature=0, max_tokens=3)
    text = baseline.choices[0].message.content
    vocab = llama_cpp.Llama(model_path=str(bundled_model_file()), vocab_only=True, verbose=False)
    first_token = vocab.tokenize(text.encode(), add_bos=False)[0]
    biased = client.chat.completions.create(model=chat_model, messages=QUESTION, temperature=0, max_tokens=3,
                                            logit_bias={str(first_token): -100})
    assert vocab.tokenize(biased.choices[0].message.content.encode(), add_bos=False)[0] != first_token


def test_penalties_and_sampling_parameters_are_accepted(client, chat_model):
    completion = client.chat.completions.create(
        model=chat_model, messages=QUESTION, temperature=0.7, top_p=0.9, presence_penalty=0.5,
        frequency_penalty=0.5, max_tokens=8, extra_body={"top_k": 20, "min_p": 0.1, "repeat_penalty": 1.2})
    assert completion.choices[0].message.content


def test_json_schema_is_enforced(client, chat_model):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    completion = client.chat.completions.create(
        model=chat_model, messages=[{"role": "user", "content": "Give me a city and its population as JSON."}],
        temperature=0, max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}})
    data = json.loads(completion.choices[0].message.content)
    assert set(data) == {"city", "population"}
    assert isinstance(data["city"], str) and isinstance(data["population"], int)


def test_json_object_is_enforced(client, chat_model):
    completion = client.chat.completions.create(
        model=chat_model, messages=[{"role": "user", "content": 'Answer as JSON with the key "capital": what is '
                                                                 'the capital of France?'}],
        temperature=0, max_tokens=200, response_format={"type": "json_object"})
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(completion.choices[0].message.content), dict)


def test_text_completion_uses_raw_prompt(client, chat_model):
    completion = client.completions.create(model=chat_model, prompt="The capital of France is", max_tokens=4,
                                           temperature=0)
    assert completion.object == "text_completion"
    assert "Paris" in completion.choices[0].text
    assert completion.usage.prompt_tokens == 5


def test_text_completion_streams(client, chat_model):
    stream = client.completions.create(model=chat_model, prompt="One, two, three,", max_tokens=8, temperature=0,
                                       stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def _cosine(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_embeddings_are_unit_vectors_with_meaning(client):
    texts = ["The cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly revenue grew by 8 percent."]
    result = client.embeddings.create(model=EMBEDDING_MODEL, input=texts)
    cat, kitten, revenue = (d.embedding for d in result.data)
    assert len(cat) == 384
    assert abs(sum(x * x for x in cat) - 1.0) < 1e-3
    assert _cosine(cat, kitten) > _cosine(cat, revenue) + 0.3
    assert result.usage.prompt_tokens > 10


def test_embeddings_single_string_and_base64(served):
    body = {"model": EMBEDDING_MODEL, "input": "hello world", "encoding_format": "base64"}
    data = httpx.post(f"{served.base_url}/v1/embeddings", json=body, timeout=60).json()
    raw = base64.b64decode(data["data"][0]["embedding"])
    vector = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(vector) == 384
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-3


@pytest.fixture(scope="module")
def small_context(served):
    """A second instance with a 256-token context: 'until the context is full' ends in seconds."""
    served.run("load", CHAT_MODEL, "--identifier", "unlimited-256", "-c", "256", "-y")
    yield "unlimited-256"
    served.run("unload", "unlimited-256")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_unlimited_max_tokens_runs_to_the_end_of_the_context(served, small_context, path):
    body = {"model": small_context, "max_tokens": -1, "temperature": 0, "logit_bias": {"2": -100}}
    body |= {"messages": QUESTION} if "chat" in path else {"prompt": "Paris is"}
    response = httpx.post(served.base_url + path, json=body, timeout=300)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"] == 256


THINK_GRAMMAR = ('root ::= "<think>\\n" thought "\\n</think>\\n\\n" answer\nthought ::= [a-zA-Z ,.]{5,80}\n'
                 'answer ::= [a-zA-Z ,.]{1,80}')


def test_chat_reasoning_is_separated(client, chat_model):
    completion = client.chat.completions.create(model=chat_model, messages=QUESTION, temperature=0,
                                                extra_body={"grammar": THINK_GRAMMAR})
    message = completion.choices[0].message
    assert message.reasoning.strip() and "<think>" not in message.content
    details = completion.usage.completion_tokens_details
    assert 0 < details.reasoning_tokens < completion.usage.completion_tokens
    chunks = list(client.chat.completions.create(model=chat_model, messages=QUESTION, temperature=0, stream=True,
                                                 extra_body={"grammar": THINK_GRAMMAR}))
    streamed = "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks if c.choices)
    assert streamed == message.reasoning


def test_reasoning_effort_none_turns_parsing_off(client, chat_model):
    completion = client.chat.completions.create(model=chat_model, messages=QUESTION, temperature=0,
                                                reasoning_effort="none", extra_body={"grammar": THINK_GRAMMAR})
    assert completion.choices[0].message.content.startswith("<think>")


def test_required_tool_choice_on_a_model_without_tool_training(client, chat_model):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    completion = client.chat.completions.create(model=chat_model, messages=[
        {"role": "user", "content": "Weather in Paris?"}], tools=tools, tool_choice="required", temperature=0)
    [call] = completion.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    assert completion.choices[0].finish_reason == "tool_calls"
