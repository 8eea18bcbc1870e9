"""Token endpoints end to end with real models: llama-server's /tokenize and /detokenize, Anthropic's
/v1/messages/count_tokens and OpenAI's /v1/responses/input_tokens (counts equal to the usage the same request then
reports), and /health during a real load."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import CHAT_MODEL, REPO, TOOL_MODEL, VISION_MODEL
from tests.test_unit_images import png

WEATHER_TOOL = {"name": "get_weather", "description": "The weather in a city.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def api(served):
    with httpx.Client(base_url=served.base_url, timeout=180) as client:
        yield client


# --- /tokenize and /detokenize -----------------------------------------------------------------------------------


def test_tokenize_round_trip_and_pieces(api, chat_model):
    text = "Hello world, it's 2025! 🦙 <|im_start|>"
    plain = api.post("/tokenize", json={"model": chat_model, "content": text})
    assert plain.status_code == 200, plain.text
    tokens = plain.json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert api.post("/detokenize", json={"model": chat_model, "tokens": tokens}).json() == {"content": text}
    with_bos = api.post("/tokenize", json={"model": chat_model, "content": text, "add_special": True}).json()
    assert len(with_bos["tokens"]) >= len(tokens) and with_bos["tokens"][-len(tokens):] == tokens
    pieces = api.post("/tokenize", json={"model": chat_model, "content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == tokens
    joined = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces)
    assert joined.decode() == text
    assert any(isinstance(p["piece"], list) for p in pieces)  # the llama's 4 bytes are not one token's text
    assert any(p["piece"] == "<|im_start|>" for p in pieces)  # a special token, parsed as such


def test_tokenize_errors(api):
    bad = api.post("/detokenize", json={"model": CHAT_MODEL, "tokens": [1, 10**9]})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_token"
    assert api.post("/tokenize", json={"model": CHAT_MODEL}).status_code == 400
    assert api.post("/detokenize", json={"model": CHAT_MODEL, "tokens": "12"}).status_code == 400
    missing = api.post("/tokenize", json={"model": "nobody/nothing", "content": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


# --- exact counts --------------------------------------------------------------------------------------------------


def test_anthropic_count_tokens_equals_usage_with_tools_and_system(api):
    body = {"model": TOOL_MODEL, "system": "You are terse.", "tools": [WEATHER_TOOL],
            "messages": [{"role": "user", "content": "What is the weather in Paris?"},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                            "input": {"city": "Paris"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                       "content": "Sunny, 21 C"}]}]}
    counted = api.post("/v1/messages/count_tokens", json=body)
    assert counted.status_code == 200, counted.text
    count = counted.json()["input_tokens"]
    without_tools = api.post("/v1/messages/count_tokens", json={**body, "tools": []}).json()["input_tokens"]
    assert count > without_tools  # the tools are in the prompt
    usage = api.post("/v1/messages", json={**body, "max_tokens": 1, "temperature": 0}).json()["usage"]
    assert count == usage["input_tokens"] + usage["cache_read_input_tokens"]


def test_anthropic_count_tokens_with_an_image(api):
    image = base64.b64encode(png(32, 32)).decode()
    body = {"model": VISION_MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in the picture?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}}]}]}
    count = api.post("/v1/messages/count_tokens", json=body).json()["input_tokens"]
    text_only = api.post("/v1/messages/count_tokens", json={"model": VISION_MODEL, "messages": [
        {"role": "user", "content": "What is in the picture?"}]}).json()["input_tokens"]
    assert count > text_only
    usage = api.post("/v1/messages", json={**body, "max_tokens": 1}).json()["usage"]
    assert count == usage["input_tokens"] + usage["cache_read_input_tokens"]


def test_anthropic_count_tokens_errors_in_anthropic_shape(api):
    answer = api.post("/v1/messages/count_tokens", json={"model": CHAT_MODEL, "messages": []})
    assert answer.status_code == 400 and answer.json()["type"] == "error"


def test_responses_input_tokens_equals_usage(api):
    tools = [{"type": "function", "name": "get_weather", "description": "The weather in a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    first = api.post("/v1/responses", json={"model": TOOL_MODEL, "input": "Say hello.", "max_output_tokens": 4,
                                            "temperature": 0}).json()
    body = {"model": TOOL_MODEL, "instructions": "Answer briefly.", "tools": tools,
            "previous_response_id": first["id"], "input": "And what is the weather in Oslo?"}
    counted = api.post("/v1/responses/input_tokens", json=body)
    assert counted.status_code == 200, counted.text
    assert counted.json()["object"] == "response.input_tokens"
    count = counted.json()["input_tokens"]
    alone = api.post("/v1/responses/input_tokens", json={**body, "tools": [], "previous_response_id": None})
    assert count > alone.json()["input_tokens"]
    usage = api.post("/v1/responses", json={**body, "max_output_tokens": 1, "tool_choice": "none",
                                            "temperature": 0}).json()["usage"]
    # tool_choice none keeps the tools in the prompt where the template shows them; count it with the same choice
    same = api.post("/v1/responses/input_tokens", json={**body, "tool_choice": "none"}).json()["input_tokens"]
    assert same == usage["input_tokens"]
    missing = api.post("/v1/responses/input_tokens", json={**body, "previous_response_id": "resp_nothing"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "previous_response_id"


# --- /health during a real load, and the one loaded model by default -------------------------------------------------


def test_health_is_503_while_a_model_loads(lms):
    lms.run("server", "start", "-p", str(lms.port))
    url = lms.base_url
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    seen: list[tuple[int, dict]] = []
    stop = threading.Event()

    def poll():
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                answer = client.get(url + "/health")
                seen.append((answer.status_code, answer.json()))
                time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    load = subprocess.run([sys.executable, "-m", "lms", "load", CHAT_MODEL, "-y"], env=lms.env, cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    stop.set()
    poller.join(10)
    assert load.returncode == 0, load.stderr
    loading = [body for status, body in seen if status == 503]
    assert loading, f"no 503 among {len(seen)} answers"
    assert loading[0]["status"] == "loading" and CHAT_MODEL in loading[0]["loading"][0]
    assert "reason" in loading[0]
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    assert httpx.get(url + "/health", params={"model": CHAT_MODEL}).status_code == 200
    # with no model named, the one loaded model answers
    tokens = httpx.post(url + "/tokenize", json={"content": "Hello"}).json()["tokens"]
    assert httpx.post(url + "/detokenize", json={"tokens": tokens}).json() == {"content": "Hello"}
    count = httpx.post(url + "/v1/messages/count_tokens", json={"messages": [{"role": "user", "content": "Hi"}]})
    assert count.status_code == 200 and count.json()["input_tokens"] > 0
