"""A running stream while a long prompt arrives: how long the running stream stalls (its longest gap between two
tokens, and its gaps' 99th percentile), and the newcomer's time to first token; lms against llama-server with the
same slots, alternated over ROUNDS rounds, medians. lms caps the prompt a step takes while other sequences
generate (runtimes/llama_cpp/scheduler.py, PROMPT_ROWS_WHILE_GENERATING); llama-server takes a whole batch.

    python bench/stall.py        (also part of `make bench`)
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from bench import llama_server  # noqa: E402
from bench.engine import greedy, long_prefix, stream  # noqa: E402
from lms.store.catalog import BUNDLED_KEY, bundled_model_file  # noqa: E402

ROUNDS, SLOTS, CONTEXT, RUNNING_TOKENS, JOIN_AFTER = 3, 2, 4096, 800, 20


def token_times(port: int, body: dict, model: str | None, times: list[float]) -> None:
    """Append the arrival time of each streamed token (perf_counter) to `times` as it comes."""
    payload = {**body, "stream": True} | ({"model": model} if model else {})
    _started, connection, response = common.post_stream(port, "/v1/chat/completions", json.dumps(payload), 600)
    for line in response:
        if line.startswith(b"data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    times.append(time.perf_counter())
    connection.close()


def one_round(port: int, model: str | None, nonce: str, eos: int, ends: set[int]) -> dict:
    # the running stream cannot end early (its ends of text and of turn are banned): it still streams when the
    # newcomer's prompt lands
    running = greedy(common.story(f"stall {nonce}"), eos, RUNNING_TOKENS)
    running["logit_bias"] = {str(token): -100 for token in ends}
    long = greedy([{"role": "system", "content": long_prefix(nonce)},
                   {"role": "user", "content": "Which hour is the lamp logged?"}], eos, 8)
    times: list[float] = []
    runner = threading.Thread(target=token_times, args=(port, running, model, times))
    runner.start()
    while len(times) < JOIN_AFTER and runner.is_alive():
        time.sleep(0.005)
    newcomer = stream(port, long, model)
    answered = time.perf_counter()
    runner.join()
    assert times[-1] > answered, f"the running stream ended ({len(times)} tokens) before the newcomer's first token"
    gaps = [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]
    return {"max_gap_ms": max(gaps), "p99_gap_ms": sorted(gaps)[min(len(gaps) - 1, round(0.99 * (len(gaps) - 1)))],
            "newcomer_ttft_ms": newcomer["ttft"] * 1000, "running_tokens": len(times)}


def median_of(rounds: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def measure() -> dict:
    from llama_cpp import Llama

    vocab = Llama(model_path=str(bundled_model_file()), n_ctx=64, verbose=False, vocab_only=True)
    eos = vocab.token_eos()
    ends = {eos, *(ids[0] for marker in (b"<|im_end|>", b"<|im_start|>")
                   if len(ids := vocab.tokenize(marker, add_bos=False, special=True)) == 1)}
    home = common.temp_folder("lms-bench-stall-")
    env = common.lms_env(home, LMS_THREADS=str(common.threads()))
    lms_port = common.free_port()
    ours, theirs = [], []
    try:
        common.lms_cli(env, "server", "start", "-p", str(lms_port), via=common.LMS_SCRIPT)
        common.lms_cli(env, "load", BUNDLED_KEY, "-c", str(CONTEXT), "--parallel", str(SLOTS), "-y",
                       via=common.LMS_SCRIPT)
        with llama_server.serving(bundled_model_file(), CONTEXT * SLOTS, SLOTS) as (server_port, _):
            for side_port, model in ((lms_port, BUNDLED_KEY), (server_port, None)):
                stream(side_port, greedy(common.story("warm-up"), eos, 8), model)
            for round_ in range(ROUNDS):
                nonce = f"{time.time_ns()}-{round_}"
                ours.append(one_round(lms_port, BUNDLED_KEY, "lms " + nonce, eos, ends))
                theirs.append(one_round(server_port, None, "server " + nonce, eos, ends))
    finally:
        common.daemon_down(env, via=common.LMS_SCRIPT)
        shutil.rmtree(home, ignore_errors=True)
    return {"lms": median_of(ours), "llama_server": median_of(theirs), "rounds": ROUNDS}


def rows(result: dict) -> list[tuple[str, str, str]]:
    ours, theirs = result["lms"], result["llama_server"]
    return [
        ("stall: running stream's longest gap, lms / llama-server (ms)",
         f"{ours['max_gap_ms']:.0f} / {theirs['max_gap_ms']:.0f}", "lms lower"),
        ("stall: running stream's p99 gap, lms / llama-server (ms)",
         f"{ours['p99_gap_ms']:.0f} / {theirs['p99_gap_ms']:.0f}", "lms lower"),
        ("stall: newcomer's TTFT (~1,000-token prompt), lms / llama-server (ms)",
         f"{ours['newcomer_ttft_ms']:.0f} / {theirs['newcomer_ttft_ms']:.0f}", "report"),
    ]


if __name__ == "__main__":
    measured = measure()
    common.print_rows(rows(measured), 72, 14)
    print(json.dumps(measured))
