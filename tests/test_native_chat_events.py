"""LM Studio's /api/v1/chat end to end with real models: a per-request context_length for the model the request
loads, model_load and prompt_processing events with their progress, and what a loaded model answers."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import CHAT_MODEL


@pytest.fixture(scope="module")
def api(served):
    with httpx.Client(base_url=served.base_url, timeout=300) as client:
        yield client


def named_events(response: httpx.Response) -> list[dict]:
    events, kind = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            assert data["type"] == kind
            events.append(data)
    return events


def test_jit_load_with_context_length_streams_load_and_prompt_progress(api, served, thinking):
    served.run("unload", thinking, check=False)
    long_input = "Count the words in this text. " + "alpha beta gamma delta " * 1500  # about 6000 tokens
    with api.stream("POST", "/api/v1/chat", json={
            "model": thinking, "input": long_input, "context_length": 8192, "max_output_tokens": 2,
            "reasoning": "off", "temperature": 0, "stream": True, "store": False}) as response:
        assert response.status_code == 200, response.read()
        events = named_events(response)
    kinds = [event["type"] for event in events]
    assert kinds[0] == "chat.start" and kinds[-1] == "chat.end", kinds
    assert kinds.index("model_load.start") < kinds.index("model_load.end") < kinds.index("prompt_processing.start")
    end = next(e for e in events if e["type"] == "model_load.end")
    assert end["load_time_seconds"] > 0
    progress = [e["progress"] for e in events if e["type"] == "prompt_processing.progress"]
    assert progress and all(0 <= p < 1 for p in progress) and progress == sorted(progress)
    start, finish = kinds.index("prompt_processing.start"), kinds.index("prompt_processing.end")
    assert all(start < i < finish for i, k in enumerate(kinds) if k == "prompt_processing.progress")
    result = events[-1]["result"]
    assert result["stats"]["input_tokens"] > 5000 and result["stats"]["model_load_time_seconds"] > 0
    model = api.get(f"/api/v0/models/{thinking}").json()
    assert model["state"] == "loaded" and model["loaded_context_length"] == 8192
    loads = [e["progress"] for e in events if e["type"] == "model_load.progress"]
    assert loads and loads == sorted(loads) and 0 <= loads[0] and loads[-1] <= 1
    # loaded now: no load events, and its context stays what it was
    again = api.post("/api/v1/chat", json={"model": thinking, "input": "Hi", "context_length": 2048,
                                           "max_output_tokens": 2, "reasoning": "off", "stream": True})
    kinds = [line[7:] for line in again.text.splitlines() if line.startswith("event: ")]
    assert "model_load.start" not in kinds and kinds[0] == "chat.start" and kinds[-1] == "chat.end"
    assert api.get(f"/api/v0/models/{thinking}").json()["loaded_context_length"] == 8192
    served.run("unload", thinking, check=False)


def test_model_load_progress_is_reported(api, served, thinking):
    served.run("unload", thinking, check=False)
    with api.stream("POST", "/api/v1/chat", json={"model": thinking, "input": "Hi", "max_output_tokens": 1,
                                                  "stream": True, "store": False}) as response:
        events = named_events(response)
    served.run("unload", thinking, check=False)
    loads = [e for e in events if e["type"] == "model_load.progress"]
    assert loads and all(e["model_instance_id"] == thinking for e in loads)


def test_non_streamed_jit_load_uses_context_length(api, served, thinking):
    served.run("unload", thinking, check=False)
    answer = api.post("/api/v1/chat", json={"model": thinking, "input": "Hi", "context_length": 3072,
                                            "max_output_tokens": 2, "reasoning": "off", "store": False})
    assert answer.status_code == 200, answer.text
    assert answer.json()["stats"]["model_load_time_seconds"] > 0
    assert api.get(f"/api/v0/models/{thinking}").json()["loaded_context_length"] == 3072
    served.run("unload", thinking, check=False)


def test_bad_context_length_and_unknown_model_are_plain_errors(api):
    bad = api.post("/api/v1/chat", json={"model": CHAT_MODEL, "input": "Hi", "context_length": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "context_length"
    missing = api.post("/api/v1/chat", json={"model": "nobody/nothing", "input": "Hi", "stream": True})
    assert missing.status_code == 404


def test_loaded_model_streams_prompt_processing_without_load_events(api):
    with api.stream("POST", "/api/v1/chat", json={"model": CHAT_MODEL, "input": "Say hi.", "max_output_tokens": 3,
                                                  "temperature": 0, "stream": True, "store": False}) as response:
        kinds = [event["type"] for event in named_events(response)]
    assert "model_load.start" not in kinds
    assert kinds[:2] == ["chat.start", "prompt_processing.start"] and "prompt_processing.end" in kinds
    assert kinds[-1] == "chat.end"
