"""Load settings on every route, with the real engine: a quantized KV cache (estimate, load, chat), flash attention,
batch size, `--context-length max`, the draft's min probability, and `/api/v1/models/load`."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import CHAT_MODEL

PROMPT = "Name three colors of the rainbow and explain why the sky is blue."


def greedy(lms, model: str, max_tokens: int = 32, **extra) -> dict:
    response = httpx.post(f"{lms.base_url}/v1/chat/completions", timeout=180, json={
        "model": model, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0,
        "max_tokens": max_tokens, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def loaded(lms) -> dict[str, dict]:
    return {m["identifier"]: m for m in lms.json("ps")}


def test_a_q8_0_kv_cache_halves_the_kv_part_of_the_estimate(lms):
    def parts(kind: str) -> dict:
        plan = lms.json("load", CHAT_MODEL, "--estimate-only", "-c", "4096", "--parallel", "2",
                        "--kv-cache-type", kind)
        assert plan["kvCacheType"] == kind and plan["contextLength"] == 4096
        return plan["parts"]

    f16, q8, q4 = parts("f16"), parts("q8_0"), parts("q4_0")
    assert q8["kvCache"] == pytest.approx(f16["kvCache"] / 2, rel=0.07)  # half, plus a scale per 32 values
    assert q4["kvCache"] == pytest.approx(f16["kvCache"] / 4, rel=0.13)
    assert q8["weights"] == f16["weights"] and q8["prefixCache"] < f16["prefixCache"]


def test_the_estimate_counts_the_batch_size_and_flash_attention(lms):
    def compute(*flags: str) -> int:
        return lms.json("load", CHAT_MODEL, "--estimate-only", "-c", "4096", *flags)["parts"]["computeBuffers"]

    default, big = compute(), compute("--batch-size", "2048")
    assert big > default > compute("--batch-size", "64")
    assert compute("--batch-size", "2048", "--flash-attention", "off") > big
    lms.run("config", "model", CHAT_MODEL, "--batch-size", "2048")  # a per-model default counts too
    try:
        assert compute() == big
    finally:
        lms.run("config", "model", CHAT_MODEL, "--reset")


def test_a_model_loads_and_chats_with_q8_0_and_q4_0_kv_caches(lms):
    lms.run("server", "start", "-p", str(lms.port))
    for identifier, kind in (("f16", "f16"), ("q8", "q8_0"), ("q4", "q4_0")):
        lms.run("load", CHAT_MODEL, "--identifier", identifier, "-c", "1024", "--parallel", "1",
                "--kv-cache-type", kind, "-y")
    models = loaded(lms)
    assert (models["q8"]["kvCacheType"], models["q8"]["flashAttention"]) == ("q8_0", "on")
    assert models["q4"]["kvCacheType"] == "q4_0" and models["f16"]["kvCacheType"] == "f16"
    texts = {name: greedy(lms, name)["choices"][0]["message"]["content"] for name in ("f16", "q8", "q4")}
    assert texts["q8"] == texts["f16"]  # greedy output of the first 32 tokens unchanged by a q8_0 cache
    assert len(texts["q4"].split()) >= 5  # q4_0 still writes text (it may word it differently)


def test_a_quantized_kv_cache_without_flash_attention_is_refused_clearly(lms):
    refused = lms.run("load", CHAT_MODEL, "--kv-cache-type", "q4_0", "--flash-attention", "off", "-y", check=False)
    assert refused.returncode == 1 and "needs flash attention" in refused.stderr
    bad = lms.run("load", CHAT_MODEL, "--kv-cache-type", "q3", "-y", check=False)
    assert bad.returncode == 1 and "--kv-cache-type must be" in bad.stderr
    assert lms.json("ps") == []


def test_flash_attention_and_batch_size_reach_the_engine(lms):
    lms.run("server", "start", "-p", str(lms.port))
    lms.run("load", CHAT_MODEL, "--identifier", "fa", "-c", "1024", "--parallel", "1", "--flash-attention", "off",
            "--batch-size", "64", "-y")
    model = loaded(lms)["fa"]
    assert (model["flashAttention"], model["batchSize"], model["kvCacheType"]) == ("off", 64, "f16")
    long_prompt = " ".join(f"word{i}" for i in range(100))  # several 64-token batches
    answer = httpx.post(f"{lms.base_url}/v1/chat/completions", timeout=120, json={
        "model": "fa", "messages": [{"role": "user", "content": long_prompt}], "max_tokens": 4}).json()
    assert answer["usage"]["prompt_tokens"] > 128 and answer["usage"]["completion_tokens"] >= 1


def test_context_length_max_picks_the_largest_context_that_fits_and_says_so(lms):
    full = lms.json("load", CHAT_MODEL, "--estimate-only", "-c", "2048", "--parallel", "2")
    limit = full["memory"]["totalBytes"]  # room for about 2048 tokens at 2 slots
    lms.run("config", "set", "memory_limit_bytes", str(limit))  # live: the next estimate counts it
    plan = lms.json("load", CHAT_MODEL, "--estimate-only", "-c", "max", "--parallel", "2")
    assert plan["passesGuardrails"] and 1792 <= plan["contextLength"] <= 2048
    assert "largest that fits the memory guardrails" in plan["contextLengthChosen"]
    more = lms.json("load", CHAT_MODEL, "--estimate-only", "-c", str(plan["contextLength"] + 256), "--parallel", "2")
    assert not more["passesGuardrails"]
    # a smaller cache fits a longer context in the same memory
    q8 = lms.json("load", CHAT_MODEL, "--estimate-only", "-c", "max", "--parallel", "2", "--kv-cache-type", "q8_0")
    assert q8["contextLength"] > plan["contextLength"] or q8["contextLength"] == 8192
    result = lms.run("load", CHAT_MODEL, "-c", "max", "--parallel", "2", "-y")
    assert f"Context length max: {plan['contextLength']} tokens" in result.stderr
    assert lms.json("ps")[0]["contextLength"] == plan["contextLength"]


def test_the_draft_min_probability_cuts_drafts_short_and_keeps_the_text(lms):
    lms.run("server", "start", "-p", str(lms.port))
    for identifier, cut in (("all", "0"), ("sure", "0.95")):
        lms.run("load", CHAT_MODEL, "--identifier", identifier, "-c", "1024", "--parallel", "1",
                "--speculative-draft-model", CHAT_MODEL, "--speculative-draft-max-tokens", "4",
                "--speculative-draft-min-probability", cut, "-y")
    every, sure = greedy(lms, "all", max_tokens=24), greedy(lms, "sure", max_tokens=24)
    assert every["choices"][0]["message"]["content"] == sure["choices"][0]["message"]["content"]
    assert 0 < sure["stats"]["total_draft_tokens_count"] < every["stats"]["total_draft_tokens_count"]
    bad = lms.run("load", CHAT_MODEL, "--speculative-draft-min-probability", "1.5", "-y", check=False)
    assert bad.returncode != 0


def test_the_rest_load_route_takes_every_load_setting(lms):
    lms.run("server", "start", "-p", str(lms.port))
    response = httpx.post(f"{lms.base_url}/api/v1/models/load", timeout=180, json={
        "model": CHAT_MODEL, "context_length": 1024, "parallel": 2, "ttl": 300, "identifier": "rest",
        "kv_cache_type": "q8_0", "flash_attention": True, "eval_batch_size": 128, "draft_min_probability": 0.5,
        "echo_load_config": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["instance_id"] == "rest"
    assert body["load_config"] == {"context_length": 1024, "parallel": 2, "eval_batch_size": 128,
                                   "flash_attention": True, "kv_cache_type": "q8_0", "ttl": 300, "identifier": "rest",
                                   "draft_min_probability": 0.5}
    model = loaded(lms)["rest"]
    assert (model["parallel"], model["ttlMs"], model["kvCacheType"]) == (2, 300_000, "q8_0")
    bad = httpx.post(f"{lms.base_url}/api/v1/models/load", timeout=60,
                     json={"model": CHAT_MODEL, "kv_cache_type": "q5"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "kv_cache_type"
    refused = httpx.post(f"{lms.base_url}/api/v1/models/load", timeout=60,
                         json={"model": CHAT_MODEL, "kv_cache_type": "q4_0", "flash_attention": False})
    assert refused.status_code == 400 and "flash attention" in refused.json()["error"]["message"]


def test_the_lm_studio_sdk_load_takes_the_kv_cache_flash_attention_and_batch_size(lms):
    import lmstudio

    lms.run("server", "start", "-p", str(lms.port))
    lms.run("config", "model", CHAT_MODEL, "--parallel", "2")  # a load default the SDK's config leaves alone
    with lmstudio.Client(f"127.0.0.1:{lms.port}") as client:
        model = client.llm.load_new_instance(CHAT_MODEL, "sdk-q8", config={
            "contextLength": 1024, "llamaKCacheQuantizationType": "q8_0", "llamaVCacheQuantizationType": "q8_0",
            "flashAttention": True, "evalBatchSize": 128})
        assert model.get_context_length() == 1024
        config = model.get_load_config()
        assert (config.llama_k_cache_quantization_type, config.flash_attention, config.eval_batch_size) == \
            ("q8_0", True, 128)
        assert model.respond("Hi", config={"maxTokens": 4}).stats.predicted_tokens_count >= 1
    info = loaded(lms)["sdk-q8"]
    assert (info["kvCacheType"], info["flashAttention"], info["batchSize"], info["parallel"]) == ("q8_0", "on", 128, 2)


def test_the_lm_studio_sdk_get_or_load_takes_the_kv_cache_too(lms):
    import lmstudio

    lms.run("server", "start", "-p", str(lms.port))
    with lmstudio.Client(f"127.0.0.1:{lms.port}") as client:  # model(key, config): getOrLoad, a JIT load
        model = client.llm.model(CHAT_MODEL, config={"contextLength": 1024, "llamaKCacheQuantizationType": "q4_0",
                                                     "llamaVCacheQuantizationType": "q4_0", "evalBatchSize": 64})
        assert model.respond("Hi", config={"maxTokens": 4}).stats.predicted_tokens_count >= 1
    info = lms.json("ps")[0]
    assert (info["contextLength"], info["kvCacheType"], info["batchSize"]) == (1024, "q4_0", 64)


def test_an_ollama_load_uses_the_model_load_defaults(lms):
    lms.run("server", "start", "-p", str(lms.port))
    lms.run("config", "model", CHAT_MODEL, "-c", "1536", "--parallel", "1", "--kv-cache-type", "q4_0")
    response = httpx.post(f"{lms.base_url}/api/generate", timeout=180, json={"model": CHAT_MODEL})  # Ollama's load
    assert response.status_code == 200, response.text
    info = lms.json("ps")[0]
    assert (info["contextLength"], info["parallel"], info["kvCacheType"]) == (1536, 1, "q4_0")


def test_an_mlx_model_refuses_llama_cpp_load_settings_clearly(lms):
    pytest.importorskip("mlx_lm")
    import sys

    from tests.conftest import MLX_MODEL, REPO

    sys.path.insert(0, str(REPO))
    from tools.mlx_from_gguf import ensure_mlx_smollm2

    target = lms.home / "models" / "lmstudio-community" / "SmolLM2-135M-Instruct-MLX-4bit"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(ensure_mlx_smollm2())
    for flags, said in ((["--kv-cache-type", "q8_0"], "KV cache is for llama.cpp (GGUF) chat models"),
                        (["--flash-attention", "on"], "'flash_attention' is for llama.cpp (GGUF) chat models"),
                        (["--batch-size", "64"], "'batch_size' is for llama.cpp (GGUF) chat models")):
        refused = lms.run("load", MLX_MODEL, *flags, "-y", check=False)
        assert refused.returncode == 1 and said in refused.stderr and "MLX" in refused.stderr
    assert lms.json("ps") == []
