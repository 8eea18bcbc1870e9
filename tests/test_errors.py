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
