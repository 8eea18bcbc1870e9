"""The MLX engine end to end: the MLX conversion of the bundled SmolLM2 (tools/mlx_from_gguf.py) listed, loaded
into its own worker on mlx-lm and served by the same endpoints as GGUF models."""

from __future__ import annotations

import json
import sys

import httpx
import openai
import pytest

from tests.conftest import REPO, Lms, free_port

MLX_KEY = "lmstudio-community/smollm2-135m-instruct-mlx-4bit"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def mlx_lms(tmp_path_factory):
    sys.path.insert(0, str(REPO))
    from tools.mlx_from_gguf import ensure_mlx_smollm2

    instance = Lms(home=tmp_path_factory.mktemp("mlx") / "home", port=free_port())
    target = instance.home / "models" / "lmstudio-community" / "SmolLM2-135M-Instruct-MLX-4bit"
    target.parent.mkdir(parents=True)
    target.symlink_to(ensure_mlx_smollm2())
    instance.run("server", "start", "-p", str(instance.port))
    instance.run("load", MLX_KEY, "-c", "2048", "-y")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def mlx_client(mlx_lms):
    return openai.OpenAI(base_url=mlx_lms.base_url + "/v1", api_key="lm-studio", max_retries=0, timeout=120)


def test_an_mlx_folder_is_listed_and_loaded(mlx_lms):
    [model] = [m for m in mlx_lms.json("ls") if m["modelKey"] == MLX_KEY]
    assert model["format"] == "safetensors" and model["paramsString"] == "135M"
    assert model["quantization"]["name"] == "4bit" and model["architecture"] == "llama"
    [loaded] = mlx_lms.json("ps")
    assert loaded["identifier"] == MLX_KEY and loaded["contextLength"] == 2048
    plan = mlx_lms.json("load", MLX_KEY, "--estimate-only", "-c", "2048")
    assert plan["memory"]["totalBytes"] > model["sizeBytes"]


def test_chat_streaming_and_logprobs(mlx_client):
    answer = mlx_client.chat.completions.create(model=MLX_KEY, messages=QUESTION, temperature=0, max_tokens=20,
                                                logprobs=True, top_logprobs=2)
    choice = answer.choices[0]
    assert "Paris" in choice.message.content and choice.finish_reason == "stop"
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content and len(tokens[0].top_logprobs) == 2
    chunks = list(mlx_client.chat.completions.create(model=MLX_KEY, messages=QUESTION, temperature=0,
                                                     max_tokens=20, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
    again = mlx_client.chat.completions.create(model=MLX_KEY, messages=QUESTION, temperature=0, max_tokens=20)
    assert again.usage.prompt_tokens_details.cached_tokens >= again.usage.prompt_tokens - 1  # the prompt cache


def test_completions_stop_strings_and_max_tokens(mlx_client):
    counted = mlx_client.completions.create(model=MLX_KEY, prompt="Monday, Tuesday, Wednesday,", temperature=0,
                                            max_tokens=30, stop=["Friday"])
    assert "Friday" not in counted.choices[0].text and counted.choices[0].finish_reason in ("stop", "length")
    short = mlx_client.completions.create(model=MLX_KEY, prompt="Once upon a time", max_tokens=3, temperature=0)
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"


def test_responses_state_on_mlx(mlx_client):
    first = mlx_client.responses.create(model=MLX_KEY, input="My name is Ada.", max_output_tokens=12,
                                        temperature=0)
    follow = mlx_client.responses.create(model=MLX_KEY, input="What is my name?", max_output_tokens=12,
                                         previous_response_id=first.id, temperature=0)
    assert follow.output_text and follow.usage.input_tokens > first.usage.input_tokens
    assert follow.usage.input_tokens_details.cached_tokens > 0


def test_structured_output_and_forced_tools_on_mlx(mlx_client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    answer = mlx_client.chat.completions.create(
        model=MLX_KEY, messages=[{"role": "user", "content": "Name a city and its country."}], temperature=0,
        max_tokens=60, response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}})
    assert set(json.loads(answer.choices[0].message.content)) == {"city", "country"}
    anything = mlx_client.chat.completions.create(model=MLX_KEY, messages=QUESTION, temperature=0, max_tokens=12,
                                                  response_format={"type": "json_object"})
    assert anything.choices[0].message.content.lstrip().startswith("{")  # an object, cut short by max_tokens
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    forced = mlx_client.chat.completions.create(model=MLX_KEY, messages=QUESTION, tools=tools, tool_choice="required",
                                                temperature=0, max_tokens=60)
    [call] = forced.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    yes_no = mlx_client.completions.create(model=MLX_KEY, prompt="Is Paris in France? Answer:", max_tokens=4,
                                           temperature=0, extra_body={"grammar": 'root ::= " yes" | " no"'})
    assert yes_no.choices[0].text in (" yes", " no")


def test_what_mlx_cannot_do_is_a_clear_error(mlx_lms):
    embed = httpx.post(f"{mlx_lms.base_url}/v1/embeddings", json={"model": MLX_KEY, "input": "x"}, timeout=60)
    assert embed.status_code == 400 and json.loads(embed.text)["error"]["message"]
    deep = "root ::= " + "(" * 30_000 + '" yes"' + ")" * 30_000  # too deep to translate: refused, not a 500
    refused = httpx.post(f"{mlx_lms.base_url}/v1/completions", timeout=60,
                         json={"model": MLX_KEY, "prompt": "Is Paris in France? Answer:", "max_tokens": 4,
                               "grammar": deep})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_format", refused.text
