"""Model lifecycle rules, with real models and short TTLs: JIT-loaded models get an idle TTL, auto-evict keeps
one JIT-loaded model and never an explicitly loaded one, and a model serving a request is never unloaded by a
TTL or an evict."""

from __future__ import annotations

import threading
import time

import httpx

from tests.conftest import CHAT_MODEL, wait_for

COPY, OTHER = "lms-test/smollm2-copy", "lms-test/smollm2-other"


def ask(lms, model: str, max_tokens: int = 4, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": max_tokens, **extra}
    response = httpx.post(f"{lms.base_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response


def loaded(lms) -> dict[str, dict]:
    return {m["identifier"]: m for m in lms.json("ps")}


def test_auto_evict_keeps_one_jit_model_and_spares_explicit_loads(lms3):
    lms3.run("load", CHAT_MODEL, "--identifier", "pinned", "-c", "512", "-y")  # explicit: no TTL, never evicted
    ask(lms3, COPY)
    assert set(loaded(lms3)) == {"pinned", COPY} and loaded(lms3)[COPY]["ttlMs"] == 3_600_000
    ask(lms3, OTHER)  # the new JIT load evicts the older JIT one
    models = loaded(lms3)
    assert set(models) == {"pinned", OTHER} and models["pinned"]["ttlMs"] is None


def test_a_model_serving_a_request_is_evicted_only_after_it(lms3):
    ask(lms3, COPY)
    streamed: list[str] = []

    def long_stream():
        body = {"model": COPY, "messages": [{"role": "user", "content": "Tell me a long story."}],
                "max_tokens": 250, "stream": True, "temperature": 0}
        with httpx.stream("POST", f"{lms3.base_url}/v1/chat/completions", json=body, timeout=120) as response:
            streamed.extend(response.iter_lines())

    worker = threading.Thread(target=long_stream)
    worker.start()
    busy = wait_for(lambda: (m := loaded(lms3).get(COPY)) and m["status"] == "generating" and m)
    assert busy["queued"] == 0 and busy["parallel"] == 4  # running in one of its slots, nothing waiting
    ask(lms3, OTHER)  # asks for auto-evict of COPY, which is still generating
    assert COPY in loaded(lms3) and worker.is_alive()
    worker.join(timeout=120)
    assert '"finish_reason":"length"' in "".join(streamed).replace(" ", "")  # the stream ran to its end
    wait_for(lambda: COPY not in loaded(lms3))
    assert set(loaded(lms3)) == {OTHER}


def test_request_ttl_unloads_when_idle_but_never_mid_request(lms3):
    ask(lms3, COPY, ttl=2)
    model = loaded(lms3)[COPY]
    assert model["ttlMs"] == 2000 and 0 <= model["ttlRemainingMs"] <= 2000
    wait_for(lambda: COPY not in loaded(lms3), timeout=15)
    # A TTL shorter than the request: the model stays until the answer is complete.
    started = time.monotonic()
    response = ask(lms3, COPY, max_tokens=200, ttl=1, temperature=0)
    assert response.json()["choices"][0]["finish_reason"] == "length" and time.monotonic() - started > 1
    wait_for(lambda: COPY not in loaded(lms3), timeout=15)


def test_estimate_only_and_guardrails(tmp_path):
    from tests.conftest import Lms, free_port

    lms = Lms(home=tmp_path / "guarded", port=free_port(),
              settings={"LMS_GUARDRAILS": "strict", "LMS_MEMORY_LIMIT_BYTES": str(200 * 2**20)})
    try:
        small = lms.json("load", CHAT_MODEL, "--estimate-only", "-c", "512", "--parallel", "1")
        large = lms.json("load", CHAT_MODEL, "--estimate-only", "-c", "4096", "--gpu", "max")  # 4 slots by default
        kv_per_token = 2 * 30 * 3 * 64 * 2  # SmolLM2: layers, KV heads, head size, f16
        assert small["parts"]["kvCache"] == kv_per_token * 512 and large["parallel"] == 4
        assert large["parts"]["kvCache"] == 4 * kv_per_token * 4096
        assert large["parts"]["prefixCache"] == kv_per_token * 4096
        assert small["memory"]["totalBytes"] == sum(small["parts"].values())
        assert small["passesGuardrails"] and not large["passesGuardrails"]
        assert large["gpu"] == "none (CPU only)" and large["memory"]["totalVramBytes"] == 0
        human = lms.run("load", CHAT_MODEL, "--estimate-only", "-c", "4096")
        assert "Estimated Total Memory:" in human.stderr and "will fail to load" in human.stderr
        assert lms.json("ps") == []  # an estimate loads nothing
        refused = lms.run("load", CHAT_MODEL, "-c", "4096", "-y", check=False)
        assert refused.returncode == 1 and "short" in refused.stderr and "guardrails" in refused.stderr
        assert lms.json("ps") == []  # refused before any memory was spent
        lms.run("load", CHAT_MODEL, "-c", "512", "-y", "--parallel", "2")
        [model] = lms.json("ps")
        assert model["contextLength"] == 512 and model["parallel"] == 2
    finally:
        lms.stop()
