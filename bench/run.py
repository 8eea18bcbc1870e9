"""Side-by-side benchmark: lms over HTTP against raw llama-cpp-python, in one run, on the same model.

Prints a table and writes bench/results.json. Targets (from the foundation issue):
- streaming decode tok/s through /v1/chat/completions / raw llama-cpp-python >= 0.95
- time to first token: lms - raw <= 15 ms (median of paired cold runs, same prompt on both sides)
- /v1/responses: a previous_response_id follow-up on a >= 1,500-token conversation, TTFT <= 25% of cold
- `lms ps --json` median wall time <= 250 ms; daemon idle RSS <= 120 MB
- `lms get` download throughput / curl of the same file from the same local Hub server >= 0.8 (bench/download.py)
- `lms load --estimate-only` within ±10% of the worker's measured peak RSS (bench/estimate.py)
- MLX streaming decode through the API / raw mlx_lm.stream_generate >= 0.9 (bench/mlx_stream.py)
- against llama-server built from the same llama.cpp (bench/engine.py): single-stream decode >= 0.95x, aggregate
  with 4 concurrent streams >= 1.0x, shared 1,000-token prefix TTFT <= 20% of cold, speculative decoding >= 1.3x
- a Ray Serve replica against a local worker on this machine (bench/cluster.py): decode ratio >= 0.9
- `lms ps --json` and `lms ls --json` <= 100 ms with 20 models and 3 loaded, `lms load` to first token <=
  llama-server's start to first token (bench/cli_latency.py)
- a stored conversation's follow-up after a daemon restart and after a reload (bench/disk_cache.py): TTFT <= 25%
  of cold, cached tokens >= 90% of the previous turn
- prompt-lookup speculation against none and against llama-server's ngram-simple (bench/ngram.py): edit workload
  >= 1.5x with identical text, free-form chat >= 0.97x
- a running stream while a ~1,000-token prompt arrives (bench/stall.py): its longest gap and p99 gap against
  llama-server's, and the newcomer's TTFT
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from bench import cli_latency as cli_latency_bench  # noqa: E402
from bench import disk_cache as disk_cache_bench  # noqa: E402
from bench import download as download_bench  # noqa: E402
from bench import engine as engine_bench  # noqa: E402
from bench import estimate as estimate_bench  # noqa: E402
from bench import kv_cache as kv_cache_bench  # noqa: E402
from bench import mlx_stream as mlx_bench  # noqa: E402
from bench import ngram as ngram_bench  # noqa: E402
from bench import stall as stall_bench  # noqa: E402
from lms.store.catalog import BUNDLED_KEY, bundled_model_file  # noqa: E402

TOKENS = 256
ROUNDS = 5
TTFT_ROUNDS = 15
CONTEXT = 4096


def raw_run(llm, template: str | None, messages: list[dict], eos: int, tokens: int = TOKENS) -> tuple[float, float]:
    """(ttft seconds, decode tok/s) for one greedy 256-token run on bare llama-cpp-python."""
    return common.raw_generate(llm, template, messages, eos, tokens, top_k=40, top_p=0.95, min_p=0.05,
                               repeat_penalty=1.1)


def conversation(round_: int) -> list[dict]:
    """A new system line each round: both sides start from a cold KV cache, on identical prompts."""
    return common.story(f"run {round_}")


def lms_run(port: int, messages: list[dict], eos: int, tokens: int = TOKENS) -> tuple[float, float]:
    """(ttft seconds, decode tok/s) for the same run streamed through /v1/chat/completions."""
    body = json.dumps({"model": BUNDLED_KEY, "messages": messages, "stream": True, "max_tokens": tokens,
                       "temperature": 0, "logit_bias": {str(eos): -100}})
    started, connection, response = common.post_stream(port, "/v1/chat/completions", body, timeout=300)
    first, count, last = None, 0, None
    for line in response:
        if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
    connection.close()
    return first - started, (count - 1) / (last - first) if count > 1 else 0.0


def cached_follow_up(port: int) -> dict:
    """A >= 1,500-token conversation: TTFT of a previous_response_id follow-up against the same request cold."""
    story = " ".join(f"Day {i}: the keeper climbed the stairs, lit the lamp, and wrote in the log." for i in range(90))
    first_turn = {"model": BUNDLED_KEY, "input": f"Here is my diary.\n{story}\nRemember it.", "temperature": 0,
                  "max_output_tokens": 32}
    _, first = common.responses_ttft(port, first_turn)
    question = [{"type": "message", "role": "user", "content": "On which day did the keeper first light the lamp?"}]
    follow = {"model": BUNDLED_KEY, "previous_response_id": first["id"], "input": question, "temperature": 0,
              "max_output_tokens": 16}
    warm_ttft, warm = common.responses_ttft(port, follow)
    common.responses_ttft(port, {"model": BUNDLED_KEY, "input": "Unrelated: name a colour.", "max_output_tokens": 4})
    full_input = [{"type": "message", "role": "user", "content": first_turn["input"]}, *first["output"], *question]
    cold_ttft, cold = common.responses_ttft(port, {"model": BUNDLED_KEY, "input": full_input, "temperature": 0,
                                            "max_output_tokens": 16})
    return {"conversation_tokens": cold["usage"]["input_tokens"], "cold_ttft_ms": cold_ttft * 1000,
            "follow_up_ttft_ms": warm_ttft * 1000, "follow_up_cached_tokens":
            warm["usage"]["input_tokens_details"]["cached_tokens"], "ratio": warm_ttft / cold_ttft}


def main() -> int:
    model = bundled_model_file()
    home = common.temp_folder("lms-bench-")
    env = common.lms_env(home, LMS_THREADS=str(common.threads()))
    port = common.free_port()
    common.lms_cli(env, "server", "start", "-p", str(port), via=common.LMS_SCRIPT)
    common.lms_cli(env, "load", BUNDLED_KEY, "-c", str(CONTEXT), "-y", via=common.LMS_SCRIPT)
    results: dict = {"model": BUNDLED_KEY, "threads": common.threads(), "tokens": TOKENS, "rounds": ROUNDS}
    try:
        llm, template = common.raw_llama(model, CONTEXT)
        eos = llm.token_eos()
        lms_run(port, conversation(-1), eos)  # warm both sides once
        raw_run(llm, template, conversation(-1), eos)
        raw, served = [], []
        for round_ in range(ROUNDS):  # interleaved, so drift in machine load hits both alike
            raw.append(raw_run(llm, template, conversation(round_), eos))
            served.append(lms_run(port, conversation(round_), eos))
        # Time to first token: many short paired runs (same cold prompt on both sides, back to back); the
        # overhead is the median of the pairwise differences, which cancels the drift between rounds.
        ttft_pairs = []
        for round_ in range(TTFT_ROUNDS):
            bare = raw_run(llm, template, conversation(1000 + round_), eos, tokens=2)[0]
            ttft_pairs.append((bare, lms_run(port, conversation(1000 + round_), eos, tokens=2)[0]))
        del llm
        follow_up = cached_follow_up(port)
        raw_tps, lms_tps = statistics.median(r[1] for r in raw), statistics.median(r[1] for r in served)
        raw_ttft, lms_ttft = statistics.median(p[0] for p in ttft_pairs), statistics.median(p[1] for p in ttft_pairs)
        ttft_overhead = statistics.median(served - bare for bare, served in ttft_pairs)

        timings = [common.timed(common.lms_cli, env, "ps", "--json", via=common.LMS_SCRIPT) for _ in range(15)]
        daemon_pid = int((home / ".internal" / "daemon.pid").read_text())
        common.lms_cli(env, "unload", "--all", via=common.LMS_SCRIPT)
        time.sleep(1.0)
        rss = psutil.Process(daemon_pid).memory_info().rss
    finally:
        common.daemon_down(env, via=common.LMS_SCRIPT)

    rows = [
        ("decode tok/s (raw llama-cpp-python)", f"{raw_tps:.1f}", ""),
        ("decode tok/s (lms /v1/chat/completions)", f"{lms_tps:.1f}", ""),
        ("decode ratio lms / raw", f"{lms_tps / raw_tps:.3f}", ">= 0.95"),
        ("TTFT raw (ms)", f"{raw_ttft * 1000:.1f}", ""),
        ("TTFT lms (ms)", f"{lms_ttft * 1000:.1f}", ""),
        ("TTFT overhead lms - raw, paired median (ms)", f"{ttft_overhead * 1000:.1f}", "<= 15"),
        ("lms ps --json median (ms)", f"{statistics.median(timings) * 1000:.0f}", "<= 250"),
        ("daemon idle RSS (MB)", f"{rss / 1e6:.1f}", "<= 120"),
        (f"/v1/responses cold TTFT, {follow_up['conversation_tokens']} tokens (ms)",
         f"{follow_up['cold_ttft_ms']:.0f}", ""),
        ("/v1/responses follow-up TTFT (ms)", f"{follow_up['follow_up_ttft_ms']:.0f}", ""),
        ("follow-up / cold TTFT", f"{follow_up['ratio']:.3f}", "<= 0.25"),
    ]
    downloads = download_bench.measure_all()
    rows += download_bench.rows(downloads)
    estimates = estimate_bench.measure()
    rows += estimate_bench.rows(estimates)
    mlx = mlx_bench.measure()
    rows += mlx_bench.rows(mlx)
    engine = engine_bench.measure()
    rows += engine_bench.rows(engine)
    for name, module in (("cli_latency", cli_latency_bench), ("disk_cache", disk_cache_bench),
                         ("ngram", ngram_bench), ("kv_cache", kv_cache_bench), ("stall", stall_bench)):
        results[name] = module.measure()
        rows += module.rows(results[name])
    if importlib.util.find_spec("ray") is not None:  # the cluster extra
        from bench import cluster as cluster_bench

        cluster = cluster_bench.measure()
        results["cluster"] = cluster
        rows += cluster_bench.rows(cluster)
    results.update({
        "raw_tokens_per_second": raw_tps, "lms_tokens_per_second": lms_tps, "decode_ratio": lms_tps / raw_tps,
        "raw_ttft_ms": raw_ttft * 1000, "lms_ttft_ms": lms_ttft * 1000,
        "ttft_overhead_ms": ttft_overhead * 1000, "ttft_pairs_ms": [[b * 1000, s * 1000] for b, s in ttft_pairs],
        "ps_json_median_ms": statistics.median(timings) * 1000, "daemon_idle_rss_mb": rss / 1e6,
        "responses_follow_up": follow_up, "downloads": downloads, "memory_estimates": estimates, "mlx": mlx,
        "engine": engine,
    })
    width = max(len(r[0]) for r in rows)
    print(f"{'metric'.ljust(width)}  {'value':>10}  target")
    common.print_rows(rows, width, 10)
    (common.REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
