"""KV cache types: the worker's measured peak RSS (VmHWM) with an f16, q8_0 and q4_0 KV cache at a long context,
against the estimate of `lms load --estimate-only --kv-cache-type`. Target: the measured memory follows the
estimate (q8_0 saves about half of the f16 KV cache; each total within ±10% of its estimate). Also, per type:
the greedy answers to the test prompts (the first 64 tokens must match f16's at q8_0), single-stream decode
speed (q8_0 >= 0.95x f16), and the context the f16 KV cache's memory holds in that type (q8_0: about twice).

    python bench/kv_cache.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from bench.engine import stream  # noqa: E402
from bench.estimate import _peak_rss  # noqa: E402
from lms.store.catalog import BUNDLED_KEY  # noqa: E402

CONTEXT, PARALLEL = 8192, 4
TYPES = ("f16", "q8_0", "q4_0")
PROMPTS = ["Explain how a lighthouse works.", "Write a short poem about the sea.",
           "List three uses of a compass and say why each matters."]
MATCH_TOKENS, DECODE_TOKENS = 64, 256


def answers(port: int) -> tuple[list[str], float]:
    """The greedy first MATCH_TOKENS tokens for each test prompt, and single-stream decode tok/s (median)."""
    texts = [stream(port, {"messages": [{"role": "user", "content": p}], "max_tokens": MATCH_TOKENS,
                           "temperature": 0}, "measured")["text"] for p in PROMPTS]
    decodes = sorted(stream(port, {"messages": common.story(f"kv {i}"), "max_tokens": DECODE_TOKENS,
                                   "temperature": 0}, "measured")["decode"] for i in range(3))
    return texts, decodes[1]


def measure() -> list[dict]:
    home = common.temp_folder("lms-bench-kv-")
    env = common.lms_env(home)
    common.lms_cli(env, "server", "start", "-p", "0")
    port = common.server_port(env)
    results = []
    try:
        for kind in TYPES:
            flags = ["-c", str(CONTEXT), "--parallel", str(PARALLEL), "--kv-cache-type", kind]
            plan = json.loads(common.lms_cli(env, "load", BUNDLED_KEY, "--estimate-only", *flags, "--json"))
            common.lms_cli(env, "load", BUNDLED_KEY, *flags, "-y", "--identifier", "measured")
            httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=300,
                       json={"model": "measured", "prompt": "The lighthouse keeper looked at the sea and",
                             "max_tokens": 8})
            [model] = common.control(home).get("/lms/ps")
            peak = _peak_rss(model["pid"])
            texts, decode = answers(port)
            common.lms_cli(env, "unload", "measured")
            estimate = plan["memory"]["totalBytes"] - plan["parts"].get("prefixCache", 0)  # host cache still empty
            results.append({"kv_cache_type": kind, "context": CONTEXT, "parallel": PARALLEL,
                            "kv_estimate_bytes": plan["parts"]["kvCache"], "estimate_bytes": estimate,
                            "peak_rss_bytes": peak, "error": estimate / peak - 1, "texts": texts,
                            "decode": decode})
    finally:
        common.daemon_down(env)
    return results


def rows(results: list[dict]) -> list[tuple[str, str, str]]:
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
            out.append((f"  decode tok/s {r['decode']:.1f} vs f16 {base['decode']:.1f}",
                        f"{r['decode'] / base['decode']:.3f}", ">= 0.95" if r["kv_cache_type"] == "q8_0" else ""))
            out.append(("  context held by the f16 KV cache's memory, vs f16",
                        f"{base['kv_estimate_bytes'] / r['kv_estimate_bytes']:.2f}x",
                        ">= 1.85x" if r["kv_cache_type"] == "q8_0" else ""))  # 64/34 by the format
    return out


if __name__ == "__main__":
    common.print_rows(rows(measure()), 78, 8)
