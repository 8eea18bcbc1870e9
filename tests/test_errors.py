"""Bad input gets an OpenAI-shaped error with the right status, and the daemon survives all of it."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def _post(served, path: str, **kwargs) -> httpx.Response:
    return httpx.post(served.base_url + path, timeout=120, **kwargs)


def test_unknown_route_is_404(served):
    error = _error(httpx.get(served.base_url + "/v1/nothing-here"), 404)
    assert "/v1/nothing-here" in error["message"]
    _error(httpx.post(served.base_url + "/chat/completions", json={}), 404)


def test_wrong_method_is_405(served):
    _error(httpx.get(served.base_url + "/v1/chat/completions"), 405)


def test_unknown_model_is_404_listing_available(served):
    error = _error(_post(served, "/v1/chat/completions", json={
        "model": "no-such-model-anywhere", "messages": [{"role": "user", "content": "hi"}]}), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert CHAT_MODEL in error["message"] and EMBEDDING_MODEL in error["message"]


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": -1}, "top_p"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -7}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
    ({"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"abc": 1}}, "logit_bias"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}, "response_format.type"),
    ({"messages": [{"role": "assistant", "tool_calls": 1}]}, "messages.0.tool_calls"),
    ({"messages": [{"role": "assistant", "tool_calls": [{}]}]}, "messages.0.tool_calls.0.function"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]},
     "messages.0.tool_calls.0.function.name"),
])
def test_invalid_chat_parameters_are_400_naming_the_parameter(served, body, param):
    error = _error(_post(served, "/v1/chat/completions", json={"model": CHAT_MODEL, **body}), 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_invalid_json_is_400(served):
    error = _error(_post(served, "/v1/chat/completions", content=b"{not json",
                         headers={"Content-Type": "application/json"}), 400)
    assert error["code"] == "invalid_json"


def test_oversized_body_is_413(served):
    big = "x" * (2 * 1024 * 1024)  # the shared daemon's limit is 1 MiB
    error = _error(_post(served, "/v1/chat/completions", json={
        "model": CHAT_MODEL, "messages": [{"role": "user", "content": big}]}), 413)
    assert error["code"] == "request_too_large"


def test_context_length_exceeded_is_400_with_counts(served):
    served.run("load", CHAT_MODEL, "--identifier", "small-context", "-c", "256", "-y")
    try:
        long_text = "The quick brown fox jumps over the lazy dog. " * 100
        error = _error(_post(served, "/v1/chat/completions", json={
            "model": "small-context", "messages": [{"role": "user", "content": long_text}]}), 400)
        assert error["code"] == "context_length_exceeded"
        assert "256" in error["message"] and "input tokens" in error["message"]
        stream_error = _error(_post(served, "/v1/chat/completions", json={
            "model": "small-context", "stream": True, "messages": [{"role": "user", "content": long_text}]}), 400)
        assert stream_error["code"] == "context_length_exceeded"
    finally:
        served.run("unload", "small-context")


def test_embedding_model_cannot_chat_and_chat_model_cannot_embed(served):
    _error(_post(served, "/v1/chat/completions", json={
        "model": EMBEDDING_MODEL, "messages": [{"role": "user", "content": "hi"}]}), 400)
    _error(_post(served, "/v1/embeddings", json={"model": CHAT_MODEL, "input": "hi"}), 400)
    _error(_post(served, "/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": []}), 400)


@pytest.mark.parametrize("body,param", [
    ({"input": "hi", "integrations": 5}, "integrations"),
    ({"input": "hi", "reasoning": ["high"]}, "reasoning"),
])
def test_wrongly_typed_fields_of_native_chat_are_400(served, body, param):
    error = _error(_post(served, "/api/v1/chat", json={"model": CHAT_MODEL, **body}), 400)
    assert error["param"] == param


@pytest.mark.parametrize("extra,field", [({"tools": 5}, "tools"), ({"tools": [1]}, "tools"),
                                         ({"thinking": "on"}, "thinking")])
def test_wrongly_typed_fields_of_anthropic_messages_are_400_in_its_shape(served, extra, field):
    response = _post(served, "/v1/messages", json={"model": CHAT_MODEL, "max_tokens": 3, **extra,
                                                   "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error" and field in response.json()["error"]["message"]


BROKEN_SCHEMA = {"$ref": "#/$defs/missing"}  # neither grammar builder can follow a reference to nothing


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": BROKEN_SCHEMA}}}, "response_format"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required", "tools": [
        {"type": "function", "function": {"name": "f", "parameters": BROKEN_SCHEMA}}]}, "tools"),
    ("/v1/responses", {"input": "hi", "text": {"format": {"type": "json_schema", "name": "x",
                                                          "schema": BROKEN_SCHEMA}}}, "text.format"),
    ("/v1/responses", {"input": "hi", "tool_choice": "required",
                       "tools": [{"type": "function", "name": "f", "parameters": BROKEN_SCHEMA}]}, "tools"),
])
def test_a_schema_no_grammar_can_follow_is_400_naming_where_it_came_from(served, chat_model, path, body, param):
    error = _error(_post(served, path, json={"model": chat_model, "max_tokens": 4, **body}), 400)
    assert error["param"] == param


def test_an_empty_completion_prompt_starts_from_the_beginning_of_text(served, chat_model):
    response = _post(served, "/v1/completions", json={"model": chat_model, "prompt": "", "max_tokens": 4})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 1
    assert response.json()["usage"]["completion_tokens"] >= 1


def test_daemon_survives_all_of_the_above(served):
    before = served.json("daemon", "status")
    for _ in range(3):
        _post(served, "/v1/chat/completions", content=b"\xff\xfe garbage")
        _post(served, "/v1/completions", json={"model": CHAT_MODEL, "prompt": 42})
    after = served.json("daemon", "status")
    assert before["pid"] == after["pid"] and after["status"] == "running"
    ok = _post(served, "/v1/chat/completions", json={
        "model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert ok.status_code == 200


@pytest.mark.parametrize("ttl", ["soon", -5, 0, 1.5, True])
def test_a_bad_ttl_is_400_on_compaction_too(served, ttl):
    error = _error(_post(served, "/v1/responses/compact", json={"model": CHAT_MODEL, "input": "hi", "ttl": ttl}), 400)
    assert error["param"] == "ttl"


@pytest.mark.parametrize("preset", ["/etc/passwd", "../../settings"])
def test_a_preset_name_is_a_file_name_in_config_presets(served, preset):
    error = _error(_post(served, "/v1/chat/completions", json={
        "model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "preset": preset}), 400)
    assert (error["param"], error["code"]) == ("preset", "invalid_preset")
