"""LM Studio's native REST API (/api/v0, /api/v1), end to end with real models over httpx.

Anthropic's /v1/messages is in test_anthropic_api.py."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, TOOL_MODEL, VISION_MODEL

GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def api(served):
    with httpx.Client(base_url=served.base_url, timeout=120) as client:
        yield client


def sse_events(response: httpx.Response) -> list[dict]:
    lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def test_v0_models(api):
    models = {m["id"]: m for m in api.get("/api/v0/models").json()["data"]}
    chat, tools = models[CHAT_MODEL], models[TOOL_MODEL]
    assert chat["state"] == "loaded" and chat["loaded_context_length"] > 0 and chat["compatibility_type"] == "gguf"
    assert chat["arch"] == "llama" and chat["quantization"] == "Q4_1" and chat["type"] == "llm"
    assert tools["capabilities"] == ["tool_use"] and chat["capabilities"] == []
    assert models[EMBEDDING_MODEL]["type"] == "embeddings" and models[VISION_MODEL]["type"] == "vlm"
    assert api.get(f"/api/v0/models/{CHAT_MODEL}").json()["id"] == CHAT_MODEL
    missing = api.get("/api/v0/models/nobody/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_v0_generation_has_stats_model_info_and_runtime(api):
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, **GREEDY}
    chat = api.post("/api/v0/chat/completions", json=body).json()
    assert chat["choices"][0]["message"]["content"]
    assert chat["stats"]["stop_reason"] in ("eosFound", "maxPredictedTokensReached")
    assert chat["stats"]["time_to_first_token"] > 0 and chat["stats"]["generation_time"] > 0
    assert chat["model_info"] == {"arch": "llama", "quant": "Q4_1", "format": "gguf",
                                  "context_length": chat["model_info"]["context_length"]}
    assert chat["runtime"]["supported_formats"] == ["gguf"] and chat["runtime"]["version"]
    with api.stream("POST", "/api/v0/chat/completions", json={**body, "stream": True}) as response:
        chunks = [c for c in sse_events(response) if "choices" in c]
    assert chunks[-1]["choices"][0]["finish_reason"] and chunks[-1]["stats"]["stop_reason"]
    completion = api.post("/api/v0/completions", json={"model": CHAT_MODEL, "prompt": "1, 2, 3,", "max_tokens": 4,
                                                       **GREEDY}).json()
    assert completion["choices"][0]["text"] and completion["stats"]["stop_reason"] == "maxPredictedTokensReached"
    embedding = api.post("/api/v0/embeddings", json={"model": EMBEDDING_MODEL, "input": "a cat"}).json()
    assert len(embedding["data"][0]["embedding"]) == 384 and embedding["model_info"]["arch"] == "bert"


def test_v1_models_load_and_unload(api):
    models = {m["key"]: m for m in api.get("/api/v1/models").json()["models"]}
    chat = models[CHAT_MODEL]
    assert chat["loaded_instances"] and chat["loaded_instances"][0]["config"]["context_length"] > 0
    assert chat["capabilities"] == {"vision": False, "trained_for_tool_use": False}
    assert models[TOOL_MODEL]["capabilities"]["trained_for_tool_use"] is True
    assert "capabilities" not in models[EMBEDDING_MODEL] and models[EMBEDDING_MODEL]["type"] == "embedding"
    loaded = api.post("/api/v1/models/load", json={"model": CHAT_MODEL, "context_length": 512,
                                                   "echo_load_config": True}).json()
    assert loaded["status"] == "loaded" and loaded["instance_id"].startswith(f"{CHAT_MODEL}:")
    assert loaded["load_config"] == {"context_length": 512} and loaded["load_time_seconds"] > 0
    assert api.post("/api/v1/models/unload", json={"instance_id": loaded["instance_id"]}).json() == {
        "instance_id": loaded["instance_id"]}
    gone = api.post("/api/v1/models/unload", json={"instance_id": loaded["instance_id"]})
    assert gone.status_code == 404


def test_v1_chat_is_stateful_and_streams_native_events(api):
    first = api.post("/api/v1/chat", json={"model": CHAT_MODEL, "input": "My name is Ada.", "max_output_tokens": 16,
                                           "system_prompt": "You are a friendly assistant.", **GREEDY}).json()
    assert first["model_instance_id"] == CHAT_MODEL and first["output"][0]["type"] == "message"
    assert first["response_id"].startswith("resp_") and first["stats"]["input_tokens"] > 0
    assert first["stats"]["total_output_tokens"] > 0 and first["stats"]["tokens_per_second"] > 0
    body = {"model": CHAT_MODEL, "input": [{"type": "text", "content": "What is my name?"}], "max_output_tokens": 16,
            "previous_response_id": first["response_id"], "stream": True, **GREEDY}
    with api.stream("POST", "/api/v1/chat", json=body) as response:
        events = sse_events(response)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "chat.start" and kinds[-1] == "chat.end"
    assert kinds.index("prompt_processing.start") < kinds.index("prompt_processing.end") < kinds.index("message.start")
    streamed = "".join(e["content"] for e in events if e["type"] == "message.delta")
    result = events[-1]["result"]
    assert result["output"][0]["content"] == streamed and streamed
    # the earlier turn was in the prompt: the conversation is longer than the question alone
    assert result["stats"]["input_tokens"] > first["stats"]["input_tokens"]
    unstored = api.post("/api/v1/chat", json={"model": CHAT_MODEL, "input": "Hi", "store": False,
                                              "max_output_tokens": 4}).json()
    assert "response_id" not in unstored


def test_v1_chat_errors(api):
    assert api.post("/api/v1/chat", json={"input": "hi"}).json()["error"]["code"] == "missing_required_parameter"
    bad = api.post("/api/v1/chat", json={"model": CHAT_MODEL, "input": "hi", "previous_response_id": "abc"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "previous_response_id"
    refused = api.post("/api/v1/chat", json={"model": CHAT_MODEL, "input": "hi", "integrations": [
        {"type": "ephemeral_mcp", "server_label": "x", "server_url": "http://127.0.0.1:9/mcp"}]})
    assert refused.status_code == 403 and "--allow-remote-mcp" in refused.json()["error"]["message"]
    local = api.post("/api/v1/chat", json={"model": CHAT_MODEL, "input": "hi", "integrations": ["mcp/playwright"]})
    assert local.status_code in (400, 403)  # no such server in mcp.json, and mcp.json needs a token over HTTP
