"""Continuous batching, the prefix cache and speculative decoding on the llama.cpp engine, end to end through the
daemon and the HTTP API with real models."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.conftest import CHAT_MODEL, REPO

TARGET = "lms-test/smollm2-135m-instruct-q8_0"  # the bundled model requantized: a larger same-vocabulary target


def chat(lms, content: str | list[dict], model: str = CHAT_MODEL, **extra) -> dict:
    messages = [{"role": "user", "content": content}] if isinstance(content, str) else content
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": 48, **extra}
    response = httpx.post(f"{lms.base_url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def text_of(answer: dict) -> str:
    return answer["choices"][0]["message"]["content"]


@pytest.fixture(scope="module")
def batching(tmp_path_factory):
    """A daemon serving the bundled model with 3 slots, and the Q8_0 target for speculative decoding."""
    import sys

    from tests.conftest import _new_lms

    sys.path.insert(0, str(REPO))
    from tools.requantize import bundled_as

    instance = _new_lms(tmp_path_factory.mktemp("batching") / "home")
    instance.settings["LMS_JIT_AUTO_EVICT"] = "false"
    instance.link_model(bundled_as("q8_0"), "lms-test", "smollm2-135m-instruct-q8_0")
    instance.run("server", "start", "-p", str(instance.port))
    instance.run("load", CHAT_MODEL, "--parallel", "3", "-c", "2048", "-y")
    yield instance
    instance.stop()


def test_parallel_streams_are_batched_and_each_matches_its_answer_alone(batching):
    questions = [f"Write two sentences about the number {n}." for n in range(5)]  # 5 requests for 3 slots
    alone = [text_of(chat(batching, q, max_tokens=64)) for q in questions]
    answers: list[str | None] = [None] * len(questions)

    def ask(index: int) -> None:
        answers[index] = text_of(chat(batching, questions[index], max_tokens=64))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    seen: list[dict] = []
    control = batching.control()  # what `lms ps --json` shows, without a CLI process per look
    while any(t.is_alive() for t in threads):
        seen.append(control.get("/lms/ps")[0])
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert answers == alone  # same text, token for token, whatever ran beside it
    assert all(s["parallel"] == 3 for s in seen)
    assert max(s["queued"] for s in seen) >= 1  # requests beyond the slots waited in the queue
    assert batching.json("ps")[0]["queued"] == 0


def test_a_long_prompt_is_evaluated_in_chunks_while_other_streams_flow(batching):
    """A stream keeps getting tokens while a ~1,500-token prompt is evaluated beside it: prompts go in 512-token
    chunks, each step also decoding the running streams."""
    arrivals: list[float] = []

    def long_stream() -> None:
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}],
                "temperature": 0, "max_tokens": 400, "stream": True}
        with httpx.stream("POST", f"{batching.base_url}/v1/chat/completions", json=body, timeout=300) as response:
            for line in response.iter_lines():
                if line.startswith("data: {") and '"content":"' in line:
                    arrivals.append(time.monotonic())

    streamer = threading.Thread(target=long_stream)
    streamer.start()
    while len(arrivals) < 5:
        time.sleep(0.01)
    facts = " ".join(f"Fact {i}: the tide at the harbour rose {i} centimetres on day {i}." for i in range(90))
    sent = time.monotonic()
    answer = {}

    def long_prompt() -> None:
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": facts + "\nSummarise."}],
                "temperature": 0, "max_tokens": 1, "stream": True}
        with httpx.stream("POST", f"{batching.base_url}/v1/chat/completions", json=body, timeout=300) as response:
            for line in response.iter_lines():
                if line.startswith("data: {") and '"content":"' in line and "first" not in answer:
                    answer["first"] = time.monotonic()

    prompt_thread = threading.Thread(target=long_prompt)
    prompt_thread.start()
    prompt_thread.join()
    streamer.join()
    assert "first" in answer
    during = [t for t in arrivals if sent < t < answer["first"]]
    # ~1,500 prompt tokens are three 512-token steps: the stream gets a token in each of them
    assert len(during) >= 2, f"{len(during)} tokens of the running stream while the long prompt was evaluated"


def test_a_shared_prefix_is_reused_across_requests_and_from_the_host_cache(batching):
    rules = "\n".join(f"Rule {i}: the keeper logs the weather and the ships at hour {i}." for i in range(60))
    system = {"role": "system", "content": f"You are the harbour assistant.\n{rules}"}
    first = chat(batching, [system, {"role": "user", "content": "When is the weather logged?"}], max_tokens=4)
    prompt_tokens = first["usage"]["prompt_tokens"]
    assert prompt_tokens > 900
    second = chat(batching, [system, {"role": "user", "content": "What does the keeper log?"}], max_tokens=4)
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= prompt_tokens - 20
    # Unrelated long prompts take every slot over: the harbour conversation moves to the host cache ...
    for n in range(3):
        other = "\n".join(f"Line {i} of poem {n}: the gulls {n} wheel above the pier {i}." for i in range(50))
        chat(batching, [{"role": "system", "content": other}, {"role": "user", "content": "Go on."}], max_tokens=2)
    assert batching.json("ps")[0]["prefixCacheBytes"] > 0
    # ... and comes back from it
    third = chat(batching, [system, {"role": "user", "content": "Which hour is the last rule?"}], max_tokens=4)
    assert third["usage"]["prompt_tokens_details"]["cached_tokens"] >= prompt_tokens - 20


def test_speculative_decoding_gives_the_same_text_with_draft_stats(batching):
    batching.run("load", TARGET, "--parallel", "1", "-c", "2048", "-y")
    question = "Write a short story about a lighthouse keeper."
    alone = chat(batching, question, model=TARGET, max_tokens=96)
    assert "stats" not in alone
    drafted = chat(batching, question, model=TARGET, max_tokens=96, draft_model=CHAT_MODEL)
    assert text_of(drafted) == text_of(alone)
    stats = drafted["stats"]
    assert stats["draft_model"] == CHAT_MODEL
    assert stats["accepted_draft_tokens_count"] > 0
    assert stats["total_draft_tokens_count"] == stats["accepted_draft_tokens_count"] + \
        stats["rejected_draft_tokens_count"] + stats["ignored_draft_tokens_count"]
    # LM Studio's native API reports the same counters
    native = httpx.post(f"{batching.base_url}/api/v0/chat/completions", timeout=300, json={
        "model": TARGET, "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 96,
        "draft_model": CHAT_MODEL}).json()
    assert native["choices"][0]["message"]["content"] == text_of(alone)
    assert native["stats"]["accepted_draft_tokens_count"] > 0
    # streamed, with the draft given at load time
    batching.run("load", TARGET, "--identifier", "drafted", "--parallel", "1", "-c", "2048",
                 "--speculative-draft-model", CHAT_MODEL, "--speculative-draft-max-tokens", "4", "-y")
    assert {m["identifier"]: m["draftModel"] for m in batching.json("ps")}["drafted"] == CHAT_MODEL
    body = {"model": "drafted", "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": 96, "stream": True}
    pieces, last = [], None
    with httpx.stream("POST", f"{batching.base_url}/v1/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    pieces.append(chunk["choices"][0]["delta"]["content"])
                if chunk["choices"] and chunk["choices"][0]["finish_reason"]:
                    last = chunk
    # A speculative load runs the kernels that check drafts exactly (engine.md): its text with drafts is its own
    # text without them.
    assert {m["identifier"]: m["flashAttention"] for m in batching.json("ps")}["drafted"] == "off"
    undrafted = httpx.post(f"{batching.base_url}/v1/chat/completions", timeout=300,
                           json={**body, "stream": False, "speculative": "off"}).json()
    assert "stats" not in undrafted
    assert "".join(pieces) == text_of(undrafted)
    assert last["stats"]["draft_model"] == CHAT_MODEL and last["stats"]["accepted_draft_tokens_count"] > 0
    batching.run("unload", "drafted")
    batching.run("unload", TARGET)


def test_a_draft_that_cannot_serve_is_refused_clearly(batching, tool_model_gguf):
    batching.link_model(tool_model_gguf, "Qwen", "Qwen2.5-Coder-0.5B-Instruct-GGUF")
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
            "draft_model": "qwen/qwen2.5-coder-0.5b-instruct"}
    response = httpx.post(f"{batching.base_url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "incompatible_draft_model" and "vocabulary" in error["message"]
    response = httpx.post(f"{batching.base_url}/v1/chat/completions", json={**body, "draft_model": "no/such-model"},
                          timeout=60)
    assert response.status_code == 404 and response.json()["error"]["param"] == "draft_model"
    # the model still serves
    assert text_of(chat(batching, "What is the capital of France?"))


def test_estimate_counts_every_slot_and_the_prefix_cache(batching):
    one = batching.json("load", CHAT_MODEL, "--estimate-only", "-c", "2048", "--parallel", "1")
    four = batching.json("load", CHAT_MODEL, "--estimate-only", "-c", "2048", "--parallel", "4")
    assert four["parallel"] == 4
    assert four["parts"]["kvCache"] == 4 * one["parts"]["kvCache"]
    assert four["parts"]["prefixCache"] == one["parts"]["kvCache"] > 0
    assert four["memory"]["totalBytes"] - one["memory"]["totalBytes"] == 3 * one["parts"]["kvCache"]
