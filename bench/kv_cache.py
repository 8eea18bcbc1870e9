"""KV cache types: the worker's measured peak RSS (VmHWM) with an f16, q8_0 and q4_0 KV cache at a long context,
against the estimate of `lms load --estimate-only --kv-cache-type`. Target: the measured memory follows the
estimate (q8_0 saves about half of the f16 KV cache; each total within ±10% of its estimate). Also, per type:
the greedy answers to the test prompts (the first 64 tokens must match f16's at q8_0) and, because one near tie
decides everything after it, the teacher-forced next-token agreement with f16 along f16's answers, beside that of
the f16 cache through the other attention kernel (the numerics' own noise); single-stream decode
speed (q8_0 >= 0.95x f16, with llama-server's own ratio beside it: the same kernels without our layers), and the
context the f16 KV cache's memory holds in that type (q8_0: about twice).

    python bench/kv_cache.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from bench import llama_server  # noqa: E402
from bench.engine import stream  # noqa: E402
from bench.estimate import _peak_rss  # noqa: E402
from lms.store.catalog import BUNDLED_KEY, bundled_model_file  # noqa: E402

CONTEXT, PARALLEL = 8192, 4
TYPES = ("f16", "q8_0", "q4_0")
PROMPTS = ["Explain how a lighthouse works.", "Write a short poem about the sea.",
           "List three uses of a compass and say why each matters."]
MATCH_TOKENS, DECODE_TOKENS = 64, 256
CHAT_FORMAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"  # the bundled model's (ChatML)
# The f16 cache through the other attention kernel: how often the numerics alone decide a near tie otherwise.
NOISE = "f16-flash-off"


ROUNDS = 3


def decode_rounds(ports: dict[str, tuple[int, str | None]]) -> dict[str, float]:
    """Single-stream decode tok/s (median of ROUNDS) for every KV type, the types alternated in each round so that
    the machine's drift (large here) falls on all of them alike. `ports`: type -> (port, model)."""
    runs: dict[str, list[float]] = {kind: [] for kind in ports}
    for round_ in range(ROUNDS):
        for kind, (port, model) in ports.items():
            runs[kind].append(stream(port, {"messages": common.story(f"kv {round_}"), "max_tokens": DECODE_TOKENS,
                                            "temperature": 0}, model)["decode"])
    return {kind: statistics.median(values) for kind, values in runs.items()}


def llama_server_decodes() -> dict[str, float]:
    """Single-stream decode tok/s of llama-server (same llama.cpp) with an f16 and a q8_0 KV cache, flash attention
    as lms sets it, both up at once: what the kernels themselves give, beside what lms measures."""
    q8 = ["-ctk", "q8_0", "-ctv", "q8_0", "-fa", "on"]
    with llama_server.serving(bundled_model_file(), CONTEXT, 1) as (f16_port, _), \
            llama_server.serving(bundled_model_file(), CONTEXT, 1, *q8) as (q8_port, _):
        for port in (f16_port, q8_port):
            stream(port, {"messages": common.story("warm-up"), "max_tokens": 8, "temperature": 0})
        return decode_rounds({"f16": (f16_port, None), "q8_0": (q8_port, None)})


def next_token(port: int, model: str, text: str) -> str:
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=300,
                        json={"model": model, "prompt": text, "max_tokens": 1, "temperature": 0,
                              "repeat_penalty": 1.0}).json()
    return answer["choices"][0]["text"]


def agreement(port: int, models: list[str]) -> dict[str, float]:
    """Teacher-forced top-1 agreement with f16: along f16's greedy answer to each test prompt, the share of positions
    where a model's greedy next token is f16's own after the same text. Unlike comparing answers that run freely,
    one near tie decided otherwise does not count against every token after it."""
    prefixes = []
    for prompt in PROMPTS:
        text = CHAT_FORMAT.format(prompt)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=300,
                            json={"model": "f16", "prompt": text, "max_tokens": MATCH_TOKENS, "temperature": 0,
                                  "repeat_penalty": 1.0}).json()["choices"][0]["text"]
        pieces = httpx.post(f"http://127.0.0.1:{port}/tokenize", timeout=300,
                            json={"model": "f16", "content": answer, "with_pieces": True}).json()["tokens"]
        written = text
        for piece in pieces:
            prefixes.append(written)
            if not isinstance(piece["piece"], str):  # part of a character: the text cannot be cut here
                break
            written += piece["piece"]
    reference = [next_token(port, "f16", prefix) for prefix in prefixes]
    return {model: sum(next_token(port, model, prefix) == token for prefix, token in zip(prefixes, reference))
            / len(prefixes) for model in models}


def measure() -> dict:
    """Every type loaded side by side (one worker each): peak RSS after a first request, the greedy answers, then
    decode speed alternated over the types."""
    home = common.temp_folder("lms-bench-kv-")
    env = common.lms_env(home)
    common.lms_cli(env, "server", "start", "-p", "0")
    port = common.server_port(env)
    results = []
    try:
        for kind in TYPES:
            flags = ["-c", str(CONTEXT), "--parallel", str(PARALLEL), "--kv-cache-type", kind]
            plan = json.loads(common.lms_cli(env, "load", BUNDLED_KEY, "--estimate-only", *flags, "--json"))
            common.lms_cli(env, "load", BUNDLED_KEY, *flags, "-y", "--identifier", kind)
            httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=300,
                       json={"model": kind, "prompt": "The lighthouse keeper looked at the sea and", "max_tokens": 8})
            [model] = [m for m in common.control(home).get("/lms/ps") if m["identifier"] == kind]
            estimate = plan["memory"]["totalBytes"] - plan["parts"].get("prefixCache", 0)  # host cache still empty
            peak = _peak_rss(model["pid"])
            texts = [stream(port, {"messages": [{"role": "user", "content": p}], "max_tokens": MATCH_TOKENS,
                                   "temperature": 0}, kind)["text"] for p in PROMPTS]
            results.append({"kv_cache_type": kind, "context": CONTEXT, "parallel": PARALLEL,
                            "kv_estimate_bytes": plan["parts"]["kvCache"], "estimate_bytes": estimate,
                            "peak_rss_bytes": peak, "error": estimate / peak - 1, "texts": texts})
        decodes = decode_rounds({kind: (port, kind) for kind in TYPES})
        common.lms_cli(env, "load", BUNDLED_KEY, "-c", str(CONTEXT), "--flash-attention", "off", "-y",
                       "--identifier", NOISE)
        agreed = agreement(port, [*TYPES[1:], NOISE])
        for result in results:
            result["decode"] = decodes[result["kv_cache_type"]]
            result["agreement"] = agreed.get(result["kv_cache_type"], 1.0)
    finally:
        common.daemon_down(env)
    return {"lms": results, "noise_agreement": agreed[NOISE], "llama_server": llama_server_decodes()}


def rows(measured: dict) -> list[tuple[str, str, str]]:
    results, server = measured["lms"], measured["llama_server"]
    base = next(r for r in results if r["kv_cache_type"] == "f16")
    out = []
    for r in results:
        saved = base["peak_rss_bytes"] - r["peak_rss_bytes"]
        expected = base["kv_estimate_bytes"] - r["kv_estimate_bytes"]
        out.append((f"worker peak RSS, KV {r['kv_cache_type']}, smollm2 @ {r['context']} x{r['parallel']} "
                    f"(estimate {r['estimate_bytes'] / 2**20:.0f} / measured {r['peak_rss_bytes'] / 2**20:.0f} MiB)",
                    f"{r['error'] * 100:+.1f}%", "within ±10%"))
        if r is not base:
            out.append((f"  saved vs f16: measured {saved / 2**20:.0f} MiB, estimated {expected / 2**20:.0f} MiB",
                        f"{(saved / expected - 1) * 100 if expected else 0:+.1f}%", "follows the estimate"))
            same = sum(a == b for a, b in zip(r["texts"], base["texts"]))
            out.append((f"  greedy first {MATCH_TOKENS} tokens equal to f16's", f"{same}/{len(PROMPTS)}",
                        "all" if r["kv_cache_type"] == "q8_0" else ""))
            out.append((f"  next-token agreement with f16 along its answers (f16, other attention kernel: "
                        f"{measured['noise_agreement'] * 100:.1f}%)", f"{r['agreement'] * 100:.1f}%", ""))
            out.append((f"  decode tok/s {r['decode']:.1f} vs f16 {base['decode']:.1f}",
                        f"{r['decode'] / base['decode']:.3f}", ">= 0.95" if r["kv_cache_type"] == "q8_0" else ""))
            if r["kv_cache_type"] in server:
                out.append((f"  llama-server, same kernels: decode tok/s {server[r['kv_cache_type']]:.1f} vs f16 "
                            f"{server['f16']:.1f}", f"{server[r['kv_cache_type']] / server['f16']:.3f}", ""))
            out.append(("  context held by the f16 KV cache's memory, vs f16",
                        f"{base['kv_estimate_bytes'] / r['kv_estimate_bytes']:.2f}x",
                        ">= 1.85x" if r["kv_cache_type"] == "q8_0" else ""))  # 64/34 by the format
    return out


if __name__ == "__main__":
    common.print_rows(rows(measure()), 78, 8)
