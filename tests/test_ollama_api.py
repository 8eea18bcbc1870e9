"""Ollama's API end to end: the official `ollama` Python client and raw HTTP against a real daemon with real
models (SmolLM2 for chat, Qwen2.5-Coder for tools and fill-in-the-middle, MiniLM for embeddings), plus the
request sequences GitHub Copilot, Continue and Open WebUI send."""

from __future__ import annotations

import json
import time

import httpx
import ollama
import pytest

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, TOOL_MODEL
from tests.test_tools import QUESTION, WEATHER_FUNCTION

FEW = {"num_predict": 12, "temperature": 0}


@pytest.fixture(scope="module")
def olla(served):
    return ollama.Client(host=served.base_url, timeout=180)


def test_root_version_tags_and_show(served, olla):
    assert httpx.get(served.base_url + "/").text == "Ollama is running"
    head = httpx.head(served.base_url + "/")
    assert head.status_code == 200
    version = httpx.get(served.base_url + "/api/version").json()["version"]
    assert tuple(int(part) for part in version.split(".")) >= (0, 6, 4)  # what Copilot requires
    listed = {model.model: model for model in olla.list().models}
    chat = listed[f"{CHAT_MODEL}:latest"]
    assert chat.size > 90_000_000 and len(chat.digest) == 64 and chat.modified_at is not None
    assert chat.details.format == "gguf" and chat.details.family == "llama"
    assert chat.details.parameter_size == "135M" and chat.details.quantization_level == "Q4_1"

    shown = olla.show(CHAT_MODEL)  # ":latest" may be left out
    assert shown.modelinfo["llama.context_length"] == 8192 and shown.modelinfo["general.architecture"] == "llama"
    assert "completion" in shown.capabilities and "insert" not in shown.capabilities
    assert "num_ctx" in shown.parameters and "im_start" in shown.template
    coder = olla.show(f"{TOOL_MODEL}:latest")
    assert {"completion", "tools", "insert"} <= set(coder.capabilities)
    assert ".Suffix" in coder.template  # how Continue decides that autocomplete works
    assert olla.show(EMBEDDING_MODEL).capabilities == ["embedding"]


def test_unknown_models_get_ollamas_error_shape(served, olla):
    with pytest.raises(ollama.ResponseError) as missing:
        olla.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404 and missing.value.error == "model 'no-such-model' not found"
    raw = httpx.post(served.base_url + "/api/show", json={"model": "nope:7b"})
    assert raw.status_code == 404 and raw.json() == {"error": "model 'nope:7b' not found"}
    bad = httpx.post(served.base_url + "/api/chat", json={"model": CHAT_MODEL, "messages": [{"role": "x"}]})
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
    bad_keep_alive = httpx.post(served.base_url + "/api/generate", json={"model": CHAT_MODEL, "keep_alive": "soon"})
    assert bad_keep_alive.status_code == 400 and "keep_alive" in bad_keep_alive.json()["error"]


def test_chat_plain_and_streamed(olla):
    reply = olla.chat(model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hello."}], options=FEW)
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.eval_count and reply.prompt_eval_count > 5
    assert reply.total_duration >= reply.eval_duration > 1_000_000  # nanoseconds
    parts = list(olla.chat(model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hello."}], options=FEW,
                           stream=True))
    assert all(not part.done for part in parts[:-1]) and parts[-1].done
    assert "".join(part.message.content for part in parts) == reply.message.content  # greedy: the same text
    assert parts[-1].eval_count == reply.eval_count


def test_ndjson_framing_and_durations_over_raw_http(served):
    body = {"model": CHAT_MODEL, "prompt": "Count: one, two,", "options": FEW}
    with httpx.stream("POST", served.base_url + "/api/generate", json=body, timeout=120) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) > 2 and all(line["done"] is False for line in lines[:-1])
    last = lines[-1]
    assert last["done"] is True and last["done_reason"] in ("stop", "length")
    for field in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                  "eval_duration"):
        assert isinstance(last[field], int), field
    assert last["created_at"].endswith("Z")
    single = httpx.post(served.base_url + "/api/generate", json={**body, "stream": False}, timeout=120).json()
    assert single["done"] is True and single["response"] == "".join(line["response"] for line in lines)


def test_chat_with_tools_gives_argument_objects_and_takes_tool_results(olla):
    tools = [{"type": "function", "function": WEATHER_FUNCTION}]
    messages = [{"role": "user", "content": QUESTION}]
    first = olla.chat(model=TOOL_MODEL, messages=messages, tools=tools, options={"temperature": 0})
    calls = first.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments, dict) and "San Francisco" in calls[0].function.arguments["location"]
    messages += [first.message, {"role": "tool", "tool_name": "get_weather",
                                 "content": json.dumps({"temperature_f": 64, "sky": "fog"})}]
    final = olla.chat(model=TOOL_MODEL, messages=messages, tools=tools, options={"temperature": 0, "num_predict": 60})
    # The result reached the model (a 0.5B model may answer or call again; both are valid turns).
    assert final.done and final.prompt_eval_count > first.prompt_eval_count + 10
    streamed = [part for part in olla.chat(model=TOOL_MODEL, messages=[{"role": "user", "content": QUESTION}],
                                           tools=tools, options={"temperature": 0}, stream=True)
                if part.message.tool_calls]
    assert streamed and streamed[0].message.tool_calls[0].function.name == "get_weather"


def test_format_json_and_schema_are_enforced(olla):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16},
                                               "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    reply = olla.chat(model=CHAT_MODEL, messages=[{"role": "user", "content": "Name a big city and its population."}],
                      format=schema, options={"temperature": 0, "num_predict": 80})
    data = json.loads(reply.message.content)
    assert isinstance(data["city"], str) and isinstance(data["population"], int)
    generated = olla.generate(model=CHAT_MODEL, prompt="Describe a cat as JSON.", format="json",
                              options={"temperature": 0, "num_predict": 24})
    assert generated.response.lstrip().startswith("{")  # a JSON object, cut off by num_predict or not


def test_think_puts_reasoning_in_thinking_and_false_turns_it_off(olla, thinking):
    assert "thinking" in olla.show(thinking).capabilities
    question = [{"role": "user", "content": "What is the capital of France?"}]
    reply = olla.chat(model=thinking, messages=question, think=True, options=FEW)
    assert reply.message.thinking and "<think>" not in (reply.message.content or "")
    parts = list(olla.chat(model=thinking, messages=question, think=True, options=FEW, stream=True))
    assert "".join(part.message.thinking or "" for part in parts) == reply.message.thinking
    off = olla.chat(model=thinking, messages=question, think=False, options=FEW)
    assert off.message.content and not off.message.thinking
    generated = olla.generate(model=thinking, prompt="What is the capital of France?", think="low", options=FEW)
    assert generated.thinking and not generated.response
    plain = olla.chat(model=CHAT_MODEL, messages=question, think=False, options=FEW)  # a model that never thinks
    assert plain.message.content and not plain.message.thinking


def test_images_reach_a_vision_model(olla):
    from tests.conftest import VISION_MODEL
    from tests.test_unit_images import png

    text_only = olla.chat(model=VISION_MODEL, messages=[{"role": "user", "content": "What is this?"}], options=FEW)
    with_image = olla.chat(model=VISION_MODEL, options=FEW, messages=[
        {"role": "user", "content": "What is this?", "images": [png(32, 32)]}])
    assert with_image.prompt_eval_count > text_only.prompt_eval_count  # the image's tokens were evaluated
    generated = olla.generate(model=VISION_MODEL, prompt="Describe it.", images=[png(32, 32)], options=FEW)
    assert generated.done
    with pytest.raises(ollama.ResponseError) as blind:
        olla.chat(model=CHAT_MODEL, messages=[{"role": "user", "content": "x", "images": [png(8, 8)]}])
    assert blind.value.status_code == 400 and "vision" in blind.value.error


def test_generate_raw_system_and_template(served, olla):
    raw = olla.generate(model=CHAT_MODEL, prompt="The capital of France is", raw=True, options=FEW)
    assert raw.response and raw.prompt_eval_count <= 8  # no chat template around it
    streamed = list(olla.generate(model=CHAT_MODEL, prompt="The capital of France is", raw=True, options=FEW,
                                  stream=True))
    assert "".join(part.response for part in streamed) == raw.response and streamed[-1].done
    templated = olla.generate(model=CHAT_MODEL, prompt="The capital of France is", system="Answer briefly.",
                              options=FEW)
    assert templated.prompt_eval_count > raw.prompt_eval_count
    custom = httpx.post(served.base_url + "/api/generate", timeout=120, json={
        "model": CHAT_MODEL, "prompt": "Paris", "system": "Be brief", "stream": False, "options": FEW,
        "template": "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n"
                    "{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"}).json()
    assert custom["done"] and custom["response"]
    refused = httpx.post(served.base_url + "/api/generate", timeout=60, json={
        "model": CHAT_MODEL, "prompt": "x", "template": "{{ range .Messages }}{{ end }}"})
    assert refused.status_code == 400 and "range" in refused.json()["error"]


def test_generate_with_suffix_fills_in_the_middle(olla, client):
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(2, 3))\n"
    filled = olla.generate(model=TOOL_MODEL, prompt=prefix, suffix=suffix, options={"temperature": 0,
                                                                                     "num_predict": 16})
    assert "return" in filled.response and "a + b" in filled.response.replace("a+b", "a + b")
    openai_fill = client.completions.create(model=TOOL_MODEL, prompt=prefix, suffix=suffix, temperature=0,
                                            max_tokens=16)
    assert openai_fill.choices[0].text == filled.response  # /v1/completions takes suffix too
    with pytest.raises(ollama.ResponseError) as no_fim:
        olla.generate(model=CHAT_MODEL, prompt=prefix, suffix=suffix)
    assert no_fim.value.status_code == 400 and "fill-in-the-middle" in no_fim.value.error


def test_embed_and_legacy_embeddings(olla):
    embedded = olla.embed(model=EMBEDDING_MODEL, input=["a cat", "a dog"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 384
    assert embedded.prompt_eval_count > 0
    short = olla.embed(model=EMBEDDING_MODEL, input="a cat", dimensions=64)
    assert len(short.embeddings[0]) == 64 and abs(sum(x * x for x in short.embeddings[0]) - 1) < 1e-3
    long_text = "a cat sat on the mat " * 200  # beyond the model's 512-token context
    cut = olla.embed(model=EMBEDDING_MODEL, input=long_text)  # truncate is Ollama's default
    assert len(cut.embeddings[0]) == 384 and cut.prompt_eval_count <= 512
    with pytest.raises(ollama.ResponseError) as too_long:
        olla.embed(model=EMBEDDING_MODEL, input=long_text, truncate=False)
    assert too_long.value.status_code == 400 and "context length" in too_long.value.error
    legacy = olla.embeddings(model=EMBEDDING_MODEL, prompt="a cat")
    assert legacy.embedding == pytest.approx(embedded.embeddings[0], abs=1e-5)


def test_ps_shows_expiry_and_size(olla):
    olla.generate(model=TOOL_MODEL, prompt="x", options={"num_predict": 1}, keep_alive="10m")
    running = {model.model: model for model in olla.ps().models}
    coder = running[f"{TOOL_MODEL}:latest"]
    assert coder.size > 0 and coder.size_vram == 0 and coder.details.family == "qwen2"
    remaining = coder.expires_at.timestamp() - time.time()
    assert 500 < remaining <= 601
    assert running[f"{CHAT_MODEL}:latest"].expires_at.year > 2100  # loaded with lms load: no TTL


def test_keep_alive_loads_unloads_and_keeps(lms):
    lms.run("server", "start", "-p", str(lms.port))
    base = lms.base_url
    olla = ollama.Client(host=base, timeout=180)

    def loaded() -> list[str]:
        return [model.model for model in olla.ps().models]

    load = httpx.post(base + "/api/generate", json={"model": CHAT_MODEL}, timeout=120).json()  # empty: load only
    assert load["done_reason"] == "load" and loaded() == [f"{CHAT_MODEL}:latest"]
    assert lms.json("ps")[0]["ttlMs"] == 300_000  # Ollama's default five minutes
    unload = httpx.post(base + "/api/chat", json={"model": CHAT_MODEL, "messages": [], "keep_alive": 0},
                        timeout=120).json()
    assert unload["done_reason"] == "unload" and loaded() == []

    olla.generate(model=CHAT_MODEL, prompt="Hi", options=FEW, keep_alive=0)  # answered, then unloaded
    for _ in range(50):
        if not loaded():
            break
        time.sleep(0.1)
    assert loaded() == []

    olla.generate(model=CHAT_MODEL, prompt="Hi", options={**FEW, "num_ctx": 1024}, keep_alive=-1)
    assert lms.json("ps")[0]["ttlMs"] is None
    assert lms.json("ps")[0]["contextLength"] == 1024  # num_ctx sizes a just-in-time load
    olla.generate(model=CHAT_MODEL, prompt="Hi", options=FEW, keep_alive="90s")
    assert lms.json("ps")[0]["ttlMs"] == 90_000


def test_ollama_port_is_a_second_listener(lms):
    from tests.conftest import free_port

    ollama_port = free_port()
    lms.run("server", "start", "-p", str(lms.port), "--ollama-port", str(ollama_port))
    assert lms.json("server", "status")["running"]
    assert httpx.get(f"http://127.0.0.1:{ollama_port}/api/version").status_code == 200
    assert httpx.get(f"http://127.0.0.1:{ollama_port}/api/tags").json()["models"]
    assert httpx.get(f"{lms.base_url}/api/tags").json()["models"]


def test_clients_request_sequences(served):
    """What the popular clients send, in their order."""
    base = served.base_url
    # GitHub Copilot: version, tags, show for each model, then OpenAI-compatible chat
    assert httpx.get(base + "/api/version").status_code == 200
    for model in httpx.get(base + "/api/tags").json()["models"]:
        shown = httpx.post(base + "/api/show", json={"model": model["name"]}).json()
        architecture = shown["model_info"]["general.architecture"]
        assert shown["model_info"][f"{architecture}.context_length"] > 0
        assert "general.basename" in shown["model_info"] and isinstance(shown["capabilities"], list)
    # Continue: show, autocomplete with suffix, chat with tools, non-streamed, keep_alive 1800
    assert httpx.post(base + "/api/show", json={"name": TOOL_MODEL}).status_code == 200
    fim = httpx.post(base + "/api/generate", timeout=120, json={
        "model": TOOL_MODEL, "prompt": "x = [1, 2", "suffix": "]\n", "stream": False,
        "options": {"temperature": 0, "num_predict": 8, "stop": ["\n"]}, "keep_alive": 1800})
    assert fim.status_code == 200 and fim.json()["done"]
    tools_chat = httpx.post(base + "/api/chat", timeout=120, json={
        "model": TOOL_MODEL, "messages": [{"role": "user", "content": QUESTION}], "stream": False,
        "tools": [{"type": "function", "function": WEATHER_FUNCTION}], "keep_alive": 1800,
        "options": {"temperature": 0}}).json()
    assert tools_chat["message"]["tool_calls"][0]["function"]["arguments"]["location"]
    # Open WebUI: version, tags, ps
    assert httpx.get(base + "/api/version").json()["version"]
    assert httpx.get(base + "/api/tags").json()["models"]
    assert all("expires_at" in model for model in httpx.get(base + "/api/ps").json()["models"])


def test_curl_style_bodies_work_but_not_from_a_browser(served):
    body = json.dumps({"model": CHAT_MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}})
    form = {"Content-Type": "application/x-www-form-urlencoded"}  # what `curl -d` declares
    assert httpx.post(served.base_url + "/api/generate", content=body, headers=form, timeout=120).json()["done"]
    same_origin = {**form, "Origin": served.base_url}
    refused = httpx.post(served.base_url + "/api/generate", content=body, headers=same_origin, timeout=60)
    assert refused.status_code == 415 and set(refused.json()) == {"error"}
    foreign = httpx.post(served.base_url + "/api/generate", content=body, timeout=60,
                         headers={**form, "Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "Origin" in foreign.json()["error"]
    openai_form = httpx.post(served.base_url + "/v1/completions", content=body, headers=form, timeout=60)
    assert openai_form.status_code == 415  # the other surfaces take JSON only
