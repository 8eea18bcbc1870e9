"""Prompt-lookup speculation and the disk cache of stored conversations, end to end with the bundled model: the
load flag, the per-request field on every surface that has `draft_model`, the acceptance stats, and a stored
conversation's KV state surviving `lms daemon down`/`up` and an unload/reload (cached_tokens of the follow-up)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import CHAT_MODEL

CODE = "\n".join(f"def step_{i}(value):\n    return value * {i} + {i * 3}\n" for i in range(12))
EDIT = [{"role": "user", "content": "Copy this code exactly, renaming step_0 to first_step:\n\n" + CODE}]


def chat(base_url: str, **fields) -> dict:
    answer = httpx.post(base_url + "/v1/chat/completions", timeout=300, json={
        "model": CHAT_MODEL, "messages": EDIT, "max_tokens": 120, "temperature": 0, **fields})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_ngram_speculation_at_load_and_per_request(lms):
    lms.run("server", "start", "-p", str(lms.port))
    lms.run("load", CHAT_MODEL, "--speculative", "ngram", "--parallel", "1", "-c", "2048", "-y")
    [model] = lms.json("ps")
    assert model["speculative"] == "ngram"
    assert model["flashAttention"] == "off"  # chosen for exact checks of drafts, the load having left it to lms

    drafted = chat(lms.base_url)
    stats = drafted["stats"]
    assert stats["speculative"] == "ngram" and "draft_model" not in stats
    assert stats["accepted_draft_tokens_count"] > 0  # the answer copies the prompt: drafts are taken
    assert stats["total_draft_tokens_count"] == stats["accepted_draft_tokens_count"] + \
        stats["rejected_draft_tokens_count"] + stats["ignored_draft_tokens_count"]
    plain = chat(lms.base_url, speculative="off")  # a request turns it off
    assert "speculative" not in (plain.get("stats") or {})
    assert plain["choices"][0]["message"]["content"] == drafted["choices"][0]["message"]["content"]

    bad = httpx.post(lms.base_url + "/v1/chat/completions", timeout=60, json={
        "model": CHAT_MODEL, "messages": EDIT, "speculative": "lookahead"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "speculative"


def test_every_surface_with_draft_model_takes_speculative(lms):
    lms.run("server", "start", "-p", str(lms.port))
    lms.run("load", CHAT_MODEL, "--parallel", "1", "-c", "2048", "-y")  # no speculation at load
    assert chat(lms.base_url, speculative="ngram")["stats"]["speculative"] == "ngram"
    completion = httpx.post(lms.base_url + "/v1/completions", timeout=300, json={
        "model": CHAT_MODEL, "prompt": CODE + "\n" + CODE[:200], "max_tokens": 60, "temperature": 0,
        "speculative": "ngram"}).json()
    assert completion["stats"]["speculative"] == "ngram" and completion["stats"]["accepted_draft_tokens_count"] > 0
    native = httpx.post(lms.base_url + "/api/v0/chat/completions", timeout=300, json={
        "model": CHAT_MODEL, "messages": EDIT, "max_tokens": 60, "temperature": 0, "speculative": "ngram"}).json()
    assert native["stats"]["speculative"] == "ngram"
    client = openai.OpenAI(base_url=lms.base_url + "/v1", api_key="x", max_retries=0, timeout=300)
    response = client.responses.create(model=CHAT_MODEL, input=EDIT[0]["content"], max_output_tokens=60,
                                       temperature=0, extra_body={"speculative": "ngram"})
    assert response.output_text
    chat_v1 = httpx.post(lms.base_url + "/api/v1/chat", timeout=300, json={
        "model": CHAT_MODEL, "input": EDIT[0]["content"], "max_output_tokens": 40, "speculative": "ngram"})
    assert chat_v1.status_code == 200, chat_v1.text


def test_speculative_load_defaults_and_the_rest_load_route(lms):
    lms.run("server", "start", "-p", str(lms.port))
    lms.run("config", "model", CHAT_MODEL, "--speculative", "ngram")
    assert lms.json("config", "model", CHAT_MODEL, "--show")["loadDefaults"]["speculative"] == "ngram"
    loaded = httpx.post(lms.base_url + "/api/v1/models/load", timeout=300, json={
        "model": CHAT_MODEL, "context_length": 2048, "echo_load_config": True}).json()
    assert loaded["status"] == "loaded"
    [model] = lms.json("ps")
    assert model["speculative"] == "ngram"  # from the model's load defaults
    lms.run("unload", "--all")
    refused = httpx.post(lms.base_url + "/api/v1/models/load", timeout=60, json={
        "model": CHAT_MODEL, "speculative": "sometimes"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "speculative"


LONG_INPUT = "Here are the harbour rules.\n" + "\n".join(
    f"Rule {i}: the keeper of the lighthouse logs the wind, the ships and the lamp at hour {i}." for i in range(60))


def cached_follow_up(lms, client, first_id: str) -> tuple[int, int]:
    """(cached tokens, input tokens) of a follow-up to a stored response."""
    follow = client.responses.create(model=CHAT_MODEL, previous_response_id=first_id, input="Which hour is first?",
                                     max_output_tokens=8, temperature=0)
    return follow.usage.input_tokens_details.cached_tokens, follow.usage.input_tokens


def test_a_stored_conversation_keeps_its_prefix_across_a_restart_and_a_reload(lms):
    lms.run("server", "start", "-p", str(lms.port))
    lms.run("load", CHAT_MODEL, "-c", "4096", "--parallel", "1", "-y")
    client = openai.OpenAI(base_url=lms.base_url + "/v1", api_key="x", max_retries=0, timeout=300)
    started = time.perf_counter()
    first = client.responses.create(model=CHAT_MODEL, input=LONG_INPUT, max_output_tokens=16, temperature=0)
    cold = time.perf_counter() - started
    turn = first.usage.input_tokens + first.usage.output_tokens
    assert turn > 1000
    lms.run("daemon", "down")
    files = list((lms.home / "kv-cache").glob("*/*.kv"))
    assert len(files) == 1 and files[0].stat().st_size > 1_000_000  # written before the worker stopped

    lms.run("server", "start", "-p", str(lms.port))
    lms.run("load", CHAT_MODEL, "-c", "4096", "--parallel", "1", "-y")
    started = time.perf_counter()
    cached, total = cached_follow_up(lms, client, first.id)
    warm = time.perf_counter() - started
    assert cached >= 0.9 * turn - 2, (cached, turn)  # the whole first turn, from disk
    assert warm < cold  # (the timing target itself lives in `make bench`)

    lms.run("unload", "--all")
    lms.run("load", CHAT_MODEL, "-c", "4096", "--parallel", "1", "-y")
    cached, _ = cached_follow_up(lms, client, first.id)
    assert cached >= 0.9 * turn - 2

    lms.run("unload", "--all")  # other load settings read the state differently: it is never used for them
    lms.run("load", CHAT_MODEL, "-c", "2048", "--parallel", "1", "-y")
    cached, _ = cached_follow_up(lms, client, first.id)
    assert cached == 0


def test_unstored_requests_leave_nothing_on_disk_and_the_cap_holds(lms):
    lms.run("config", "set", "kv_disk_cache_bytes", "0")
    lms.run("server", "start", "-p", str(lms.port))
    lms.run("load", CHAT_MODEL, "-c", "4096", "--parallel", "1", "-y")
    client = openai.OpenAI(base_url=lms.base_url + "/v1", api_key="x", max_retries=0, timeout=300)
    client.responses.create(model=CHAT_MODEL, input=LONG_INPUT, max_output_tokens=4, temperature=0)
    lms.run("unload", "--all")
    assert not list((lms.home / "kv-cache").glob("*/*.kv"))  # the cache is off
    lms.run("config", "set", "kv_disk_cache_bytes", str(60 * 1024 * 1024))  # room for one ~1,000-token state
    lms.run("load", CHAT_MODEL, "-c", "4096", "--parallel", "1", "-y")
    client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": LONG_INPUT}], max_tokens=4)
    client.responses.create(model=CHAT_MODEL, input=LONG_INPUT, max_output_tokens=4, temperature=0, store=False)
    lms.run("unload", "--all")
    assert not list((lms.home / "kv-cache").glob("*/*.kv"))  # nothing stored, nothing kept
    lms.run("load", CHAT_MODEL, "-c", "4096", "--parallel", "1", "-y")
    for n in range(3):
        client.responses.create(model=CHAT_MODEL, input=f"Conversation {n}.\n" + LONG_INPUT, max_output_tokens=4)
    lms.run("unload", "--all")
    sizes = [f.stat().st_size for f in (lms.home / "kv-cache").glob("*/*.kv")]
    assert sizes and sum(sizes) <= 60 * 1024 * 1024


@pytest.mark.parametrize("value", ["sometimes", 3])
def test_bad_speculative_values_are_400(lms, value):
    lms.run("server", "start", "-p", str(lms.port))
    answer = httpx.post(lms.base_url + "/v1/completions", timeout=60, json={
        "model": CHAT_MODEL, "prompt": "Hi", "speculative": value})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "speculative"
