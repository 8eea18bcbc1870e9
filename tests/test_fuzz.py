"""No input may produce a 500 (real daemon, real models): a seeded mutation fuzz of every public JSON endpoint.

Each case takes a valid body and breaks one thing in it (a value of the wrong type, a huge or negative number, a
lone surrogate, deep nesting, a very long string or list, a missing or unknown key), or breaks the body itself
(truncated, not UTF-8, not an object, nested beyond reason). Every answer must be below 500, and the daemon and its
models must still answer afterwards. Generations stop at once: the chat bodies force the end-of-text token."""

from __future__ import annotations

import json
import os
import random
import zlib

import httpx
import pytest

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL

CASES_PER_ENDPOINT = int(os.environ.get("LMS_FUZZ_CASES", "40"))  # more for a longer hunt
EOS_NOW = {"2": 100}  # SmolLM2's end-of-text token, forced: every generation is one token
USER = [{"role": "user", "content": "Say yes."}]
BODIES = {
    "/v1/chat/completions": {"model": CHAT_MODEL, "messages": USER, "max_tokens": 4, "logit_bias": EOS_NOW,
                             "temperature": 0.5, "stop": ["\n"], "tools": [
                                 {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                             "response_format": {"type": "text"}, "stream": False},
    "/v1/chat/completions#forced": {"model": CHAT_MODEL, "messages": USER, "max_tokens": 8, "tool_choice": "required",
                                    "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                                        "type": "object", "properties": {"x": {"type": "integer"}}}}}]},
    "/v1/chat/completions#schema": {"model": CHAT_MODEL, "messages": USER, "max_tokens": 8, "response_format": {
        "type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object", "properties": {
            "ok": {"type": "boolean"}}, "required": ["ok"]}}}},
    "/v1/responses#tools": {"model": CHAT_MODEL, "input": "Say yes.", "max_output_tokens": 8, "store": False,
                            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                            "tool_choice": {"type": "function", "name": "f"}},
    "/v1/responses#allowed": {"model": CHAT_MODEL, "input": "Say yes.", "max_output_tokens": 8, "store": False,
                              "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
                              "tool_choice": {"type": "allowed_tools", "mode": "required",
                                              "tools": [{"type": "function", "name": "f"}]}},
    "/api/v0/chat/completions": {"model": CHAT_MODEL, "messages": USER, "max_tokens": 4, "logit_bias": EOS_NOW},
    "/v1/completions": {"model": CHAT_MODEL, "prompt": "Yes", "max_tokens": 4, "logit_bias": EOS_NOW, "echo": False},
    "/v1/embeddings": {"model": EMBEDDING_MODEL, "input": ["hello", "world"], "encoding_format": "float"},
    "/v1/responses": {"model": CHAT_MODEL, "input": [{"type": "message", "role": "user", "content": "Say yes."}],
                      "max_output_tokens": 2, "instructions": "Be brief.", "text": {"format": {"type": "text"}},
                      "store": False},
    "/v1/responses/compact": {"model": CHAT_MODEL, "input": "Say yes."},
    "/v1/messages": {"model": CHAT_MODEL, "max_tokens": 2, "system": "Be brief.",
                     "messages": [{"role": "user", "content": [{"type": "text", "text": "Say yes."}]}]},
    "/api/v1/chat": {"model": CHAT_MODEL, "input": "Say yes.", "max_output_tokens": 2, "store": False},
}
LIMITS = ("max_tokens", "max_output_tokens")  # without them a valid request may run to the end of the context
DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE = [None, True, False, -1, 0, 2**63, -(2**63) - 1, 2**70, 1e308, -1e308, 0.5, "", "x" * 200_000,
           "\ud800", "a\udfffb", [], {}, [None] * 5_000, {"nested": {"deeper": [1, {"x": "\udc00"}]}}, "NaN",
           json.loads("[" * 40 + "1" + "]" * 40), {"type": "unknown"}, "../../etc/passwd"]


def _paths(value, path=()):
    """Every place in a body a mutation can hit."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _replace(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = new if len(path) == 1 else _replace(value[path[0]], path[1:], new)
    return copy


def _delete(value, path):
    copy = dict(value) if isinstance(value, dict) else list(value)
    if len(path) == 1:
        del copy[path[0]]
    else:
        copy[path[0]] = _delete(value[path[0]], path[1:])
    return copy


def cases(endpoint: str, seed: int) -> list[tuple[str, bytes]]:
    """(what was done, the raw body) for one endpoint, the same every run."""
    rng, body = random.Random(seed), BODIES[endpoint]
    paths = [p for p in _paths(body) if p]
    made = [("truncated", json.dumps(body).encode()[:-7]), ("not utf-8", b'{"model": "\xff\xfe"}'),
            ("top-level list", b"[1, 2]"), ("deep", DEEP.encode()), ("NaN", b'{"model": NaN, "x": Infinity}'),
            ("empty", b""), ("lone surrogate key", b'{"\\ud800": 1, "model": "m"}')]
    while len(made) < CASES_PER_ENDPOINT:
        path = rng.choice(paths)
        roll = rng.random()
        if roll < 0.1 and path[-1] not in LIMITS:
            made.append((f"delete {path}", json.dumps(_delete(body, path)).encode()))
        elif roll < 0.15:
            made.append((f"unknown key at {path[:-1]}", json.dumps(_replace(body, (*path[:-1], "zz"), 1)
                                                                   if isinstance(path[-1], str) else body).encode()))
        else:
            value = rng.choice(HOSTILE)
            made.append((f"{path} = {str(value)[:40]!r}", json.dumps(_replace(body, path, value)).encode()))
    return made


@pytest.mark.parametrize("endpoint", BODIES)
def test_no_input_is_a_server_error(served, endpoint):
    failures = []
    with httpx.Client(base_url=served.base_url, timeout=120) as client:
        for seed_offset, (what, raw) in enumerate(cases(endpoint, seed=zlib.crc32(endpoint.encode()))):
            try:
                response = client.post(endpoint.split("#")[0], content=raw,
                                       headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:  # a dropped connection is as bad as a 500
                failures.append((seed_offset, what, f"{type(exc).__name__}: {exc}"))
                continue
            if response.status_code >= 500:
                failures.append((seed_offset, what, response.status_code, response.text[:300]))
        assert client.get("/v1/models").status_code == 200
        alive = client.post("/v1/chat/completions", json=BODIES["/v1/chat/completions"])  # the model still answers
        assert alive.status_code == 200, alive.text
    assert not failures, "\n".join(map(str, failures))


@pytest.mark.parametrize("path", ["/v1/responses/%00", "/v1/responses/" + "x" * 5000, "/v1/models/%ff%fe",
                                  "/v1/responses/resp_x/input_items?limit=abc&order=up", "/api/v0/models/..%2f.."])
def test_odd_paths_are_client_errors(served, path):
    assert httpx.get(served.base_url + path, timeout=30).status_code < 500


def test_grammars_beyond_the_engine_are_refused_and_the_worker_lives(served):
    """llama.cpp's grammar parser recurses once per nested group: 20,000 groups overflow the worker's stack. Such
    grammars (written by hand, or by the schema converter for a long maxLength) are refused as bad requests; so is
    one that allows no token at some point (llama.cpp throws through its C API there, which aborts the process)."""
    def worker_pid() -> int:
        return next(m["pid"] for m in served.control().get("/lms/ps") if m["identifier"] == CHAT_MODEL)

    def nested(depth: int) -> str:
        return "root ::= " + "(" * depth + '"yes"' + ")" * depth

    body = {"model": CHAT_MODEL, "messages": USER, "max_tokens": 4}
    with httpx.Client(base_url=served.base_url, timeout=120) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        pid = worker_pid()
        for refused in ({"grammar": nested(30_000)},
                        {"grammar": 'root ::= "\\x00"'},  # no token holds NUL: llama.cpp would abort on it
                        {"grammar": 'root ::= "a" [\\U0010FFFF-\\U00000000]'},  # a range of nothing, after "a"
                        {"response_format": {"type": "json_schema", "json_schema": {
                            "name": "long", "schema": {"type": "string", "maxLength": 30_000}}}},
                        {"response_format": {"type": "json_schema", "json_schema": {
                            "name": "huge", "schema": {"type": "string", "minLength": 10**12}}}}):
            answer = client.post("/v1/chat/completions", json={**body, **refused})
            assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_format", answer.text
        deep_enough = client.post("/v1/chat/completions", json={**body, "grammar": nested(4_000)})
        assert deep_enough.status_code == 200 and deep_enough.json()["choices"][0]["message"]["content"] == "yes"
        assert worker_pid() == pid  # the same worker served them all
