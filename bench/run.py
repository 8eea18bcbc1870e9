"""Side-by-side benchmark: lms over HTTP against raw llama-cpp-python, in one run, on the same model.

Prints a table and writes bench/results.json. Targets (from the foundation issue):
- streaming decode tok/s through /v1/chat/completions / raw llama-cpp-python >= 0.95
- time to first token: lms - raw <= 15 ms (median of paired cold runs, same prompt on both sides)
- /v1/responses: a previous_response_id follow-up on a >= 1,500-token conversation, TTFT <= 25% of cold
- `lms ps --json` median wall time <= 250 ms; daemon idle RSS <= 120 MB
- `lms get` download throughput / curl of the same file from the same local Hub server >= 0.8 (bench/download.py)
- `lms load --estimate-only` within ±10% of the worker's measured peak RSS (bench/estimate.py)
- MLX streaming decode through the API / raw mlx_lm.stream_generate >= 0.9 (bench/mlx.py)
- against llama-server built from the same llama.cpp (bench/engine.py): single-stream decode >= 0.95x, aggregate
  with 4 concurrent streams >= 1.0x, shared 1,000-token prefix TTFT <= 20% of cold, speculative decoding >= 1.3x
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import download as download_bench  # noqa: E402
from bench import engine as engine_bench  # noqa: E402
from bench import estimate as estimate_bench  # noqa: E402
from bench import mlx as mlx_bench  # noqa: E402
from lms.generation.chat_template import render  # noqa: E402
from lms.store.catalog import BUNDLED_KEY, bundled_model_file, read_header  # noqa: E402

TOKENS = 256
ROUNDS = 5
TTFT_ROUNDS = 15
CONTEXT = 4096
MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]


def threads() -> int:
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def raw_run(llm, template: str | None, messages: list[dict], eos: int, tokens: int = TOKENS) -> tuple[float, float]:
    """(ttft seconds, decode tok/s) for one greedy 256-token run on bare llama-cpp-python."""
    import llama_cpp

    started = time.perf_counter()
    text = render(template, messages)
    prompt_tokens = llm.tokenize(text.encode(), add_bos=True, special=True)

    def ban_eos(_ids, scores):
        scores[eos] -= 100
        return scores

    first = None
    count = 0
    for token in llm.generate(prompt_tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1,
                               logits_processor=llama_cpp.LogitsProcessorList([ban_eos])):
        llm.detokenize([token])  # any real consumer turns tokens into text
        now = time.perf_counter()
        first = first or now
        count += 1
        if count == tokens:
            break
    ended = time.perf_counter()
    return first - started, (count - 1) / (ended - first)


def conversation(round_: int) -> list[dict]:
    """A new system line each round: both sides start from a cold KV cache, on identical prompts."""
    return [{"role": "system", "content": f"You are a storyteller (run {round_})."}, *MESSAGES]


def lms_run(port: int, messages: list[dict], eos: int, tokens: int = TOKENS) -> tuple[float, float]:
    """(ttft seconds, decode tok/s) for the same run streamed through /v1/chat/completions.

    The client is the standard library's http.client, as light as curl, so that on a small machine the
    measuring client takes as few cycles as possible from the engine it measures."""
    body = json.dumps({"model": BUNDLED_KEY, "messages": messages, "stream": True, "max_tokens": tokens,
                       "temperature": 0, "logit_bias": {str(eos): -100}})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    started = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    first, count, last = None, 0, None
    for line in response:
        if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
    connection.close()
    return first - started, (count - 1) / (last - first) if count > 1 else 0.0


def responses_ttft(port: int, body: dict) -> tuple[float, dict]:
    """Time to the first output_text delta of a streamed /v1/responses request, and the final response."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    started = time.perf_counter()
    connection.request("POST", "/v1/responses", body=json.dumps({**body, "stream": True}),
                       headers={"Content-Type": "application/json"})
    first, final = None, None
    for line in connection.getresponse():
        if line.startswith(b"data: {"):
            event = json.loads(line[6:])
            if event["type"] == "response.output_text.delta" and first is None:
                first = time.perf_counter() - started
            if event["type"] in ("response.completed", "response.incomplete"):
                final = event["response"]
    connection.close()
    return first, final


def cached_follow_up(port: int) -> dict:
    """A >= 1,500-token conversation: TTFT of a previous_response_id follow-up against the same request cold."""
    story = " ".join(f"Day {i}: the keeper climbed the stairs, lit the lamp, and wrote in the log." for i in range(90))
    first_turn = {"model": BUNDLED_KEY, "input": f"Here is my diary.\n{story}\nRemember it.", "temperature": 0,
                  "max_output_tokens": 32}
    _, first = responses_ttft(port, first_turn)
    question = [{"type": "message", "role": "user", "content": "On which day did the keeper first light the lamp?"}]
    follow = {"model": BUNDLED_KEY, "previous_response_id": first["id"], "input": question, "temperature": 0,
              "max_output_tokens": 16}
    warm_ttft, warm = responses_ttft(port, follow)
    responses_ttft(port, {"model": BUNDLED_KEY, "input": "Unrelated: name a colour.", "max_output_tokens": 4})
    full_input = [{"type": "message", "role": "user", "content": first_turn["input"]}, *first["output"], *question]
    cold_ttft, cold = responses_ttft(port, {"model": BUNDLED_KEY, "input": full_input, "temperature": 0,
                                            "max_output_tokens": 16})
    return {"conversation_tokens": cold["usage"]["input_tokens"], "cold_ttft_ms": cold_ttft * 1000,
            "follow_up_ttft_ms": warm_ttft * 1000, "follow_up_cached_tokens":
            warm["usage"]["input_tokens_details"]["cached_tokens"], "ratio": warm_ttft / cold_ttft}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lms_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv/bin/lms"), *args], env=env, capture_output=True, text=True, check=True)


def main() -> int:
    from llama_cpp import Llama

    model = bundled_model_file()
    header = read_header(model)
    home = Path(tempfile.mkdtemp(prefix="lms-bench-"))
    env = dict(os.environ, LMS_HOME=str(home), LMS_THREADS=str(threads()))
    port = free_port()
    lms_cli(env, "server", "start", "-p", str(port))
    lms_cli(env, "load", BUNDLED_KEY, "-c", str(CONTEXT), "-y")
    results: dict = {"model": BUNDLED_KEY, "threads": threads(), "tokens": TOKENS, "rounds": ROUNDS}
    try:
        llm = Llama(model_path=str(model), n_ctx=CONTEXT, n_threads=threads(), n_threads_batch=threads(),
                    verbose=False)
        eos = llm.token_eos()
        template = header.metadata.get("tokenizer.chat_template")
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

        timings = []
        for _ in range(15):
            started = time.perf_counter()
            lms_cli(env, "ps", "--json")
            timings.append(time.perf_counter() - started)
        daemon_pid = int((home / ".internal" / "daemon.pid").read_text())
        lms_cli(env, "unload", "--all")
        time.sleep(1.0)
        rss = psutil.Process(daemon_pid).memory_info().rss
    finally:
        subprocess.run([str(REPO / ".venv/bin/lms"), "daemon", "down"], env=env, capture_output=True)

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
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value:>10}  {target}")
    (REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
