"""Engine benchmark, side by side in one run: lms, raw llama-cpp-python and llama.cpp's own llama-server, on the same
model, threads and prompts (issue: continuous batching, prefix cache, speculative decoding). Both servers are up at
once and alternate in every round, so that drift in the machine's speed (often 20% within minutes here) falls on
both alike.

Measured:
- single-stream decode tok/s and time to first token (256-token greedy streams, end-of-text banned);
- aggregate decode tok/s and per-request latency (p50/p99) at 1, 2, 4 and 8 concurrent streams, both servers
  with 4 parallel slots (llama-server `-np 4`, lms `--parallel 4`), each slot with the same context; and the CPU
  time the serving processes spend per generated token (lms: the daemon and the worker), which shows what our
  layers add to the same kernels;
- a second request sharing a ~1,000-token prefix with an earlier one: its TTFT against the cold one;
- speculative decoding: a larger same-vocabulary target (the bundled model requantized) alone and with the
  bundled Q4_1 as draft, on lms, with the texts compared.

    python bench/engine.py     # or `make bench`, which runs every benchmark
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from bench import llama_server  # noqa: E402
from lms.store.catalog import BUNDLED_KEY, bundled_model_file  # noqa: E402

TOKENS = 256
CONTEXT = 4096  # per slot, on both servers
SLOTS = 4
ROUNDS = 3
CONCURRENCY = (1, 2, 4, 8)
SPEC_TARGET = "f32"  # the bundled model requantized: same vocabulary, ~3x the decode cost of the Q4_1 draft
SPEC_KEY = "lms-bench/smollm2-135m-instruct-f32"


def stream(port: int, body: dict, model: str | None = None) -> dict:
    """One streamed chat completion: ttft, decode tok/s, token count, latency and text, measured by the client."""
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    if model:
        payload["model"] = model
    started, connection, response = common.post_stream(port, "/v1/chat/completions", json.dumps(payload), timeout=600)
    first = last = None
    tokens, text = 0, []
    for line in response:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                now = time.perf_counter()
                first = first or now
                last = now
                text.append(piece)
    ended = time.perf_counter()
    connection.close()
    if first is None:
        raise RuntimeError(f"no tokens from the server on port {port}")
    return {"ttft": first - started, "decode": (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0,
            "tokens": tokens, "latency": ended - started, "text": "".join(text)}


def cpu_seconds(pids: list[int]) -> float:
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def concurrent(port: int, bodies: list[dict], model: str | None, pids: list[int] = ()) -> dict:
    """Send every body at once; aggregate tok/s over the wall time, each request's latency, and the CPU time the
    serving processes (`pids`) spent per generated token."""
    results: list[dict] = [None] * len(bodies)
    cpu_before = cpu_seconds(pids)

    def one(index: int) -> None:
        results[index] = stream(port, bodies[index], model)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    tokens = sum(r["tokens"] for r in results)
    return {"aggregate": tokens / wall, "latencies": [r["latency"] for r in results],
            "last_ttft": max(r["ttft"] for r in results), "cpu_ms_per_token": (cpu_seconds(pids) - cpu_before)
            / tokens * 1000}


def greedy(messages: list[dict], eos: int, tokens: int = TOKENS) -> dict:
    """The same sampling on every side, spelled out (the servers' defaults differ: LM Studio's repeat penalty is
    1.1, llama-server's 1.0)."""
    return {"messages": messages, "max_tokens": tokens, "temperature": 0, "repeat_penalty": 1.0,
            "logit_bias": {str(eos): -100}}


def raw_single(llm, template: str | None, messages: list[dict], eos: int) -> dict:
    """The same stream on bare llama-cpp-python (its high-level generate loop)."""
    ttft, decode = common.raw_generate(llm, template, messages, eos, TOKENS, repeat_penalty=1.0)
    return {"ttft": ttft, "decode": decode}


def long_prefix(nonce: str) -> str:
    lines = [f"Rule {i}: the keeper of lighthouse {nonce} logs the weather, the ships and the lamp at hour {i}."
             for i in range(40)]
    return "You are the harbour assistant. Follow these rules.\n" + "\n".join(lines)


def prefix_reuse(port: int, model: str | None, eos: int) -> dict:
    """TTFT of a request whose ~1,000-token prefix an earlier request evaluated, against that cold request."""
    ratios, cold_ms, warm_ms = [], [], []
    for round_ in range(ROUNDS):
        system = {"role": "system", "content": long_prefix(f"{time.time_ns()}-{round_}")}
        cold = stream(port, greedy([system, {"role": "user", "content": "Which hour is the lamp logged?"}], eos, 8),
                      model)
        warm = stream(port, greedy([system, {"role": "user", "content": "Name one thing the keeper logs."}], eos, 8),
                      model)
        ratios.append(warm["ttft"] / cold["ttft"])
        cold_ms.append(cold["ttft"] * 1000)
        warm_ms.append(warm["ttft"] * 1000)
    return {"cold_ttft_ms": statistics.median(cold_ms), "warm_ttft_ms": statistics.median(warm_ms),
            "ratio": statistics.median(ratios)}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@dataclass
class Side:
    """One server under measurement: its port, the model name to send (None: its only model) and the processes
    that serve (their CPU time per token)."""
    port: int
    model: str | None
    pids: list[int]


def serve_measure(sides: dict[str, Side], eos: int) -> dict[str, dict]:
    """Everything both servers are measured on, the servers alternated in every round (both are up at once), so
    that the machine's drift, large here, falls on both alike."""
    for side in sides.values():
        stream(side.port, greedy(common.story("warm-up"), eos, 16), side.model)
    singles: dict[str, list[dict]] = {name: [] for name in sides}
    for _ in range(ROUNDS):
        for name, side in sides.items():
            singles[name].append(stream(side.port, greedy(common.story(f"single {time.time_ns()}"), eos),
                                        side.model))
    results = {name: {"decode": statistics.median(s["decode"] for s in runs),
                      "ttft_ms": statistics.median(s["ttft"] for s in runs) * 1000, "streams": {}}
               for name, runs in singles.items()}
    for count in CONCURRENCY:
        rounds: dict[str, list[dict]] = {name: [] for name in sides}
        for _ in range(ROUNDS):
            for name, side in sides.items():
                bodies = [greedy(common.story(f"{count}-{i}-{time.time_ns()}"), eos) for i in range(count)]
                rounds[name].append(concurrent(side.port, bodies, side.model, side.pids))
        for name, runs in rounds.items():
            latencies = [value for r in runs for value in r["latencies"]]
            results[name]["streams"][count] = {
                "aggregate": statistics.median(r["aggregate"] for r in runs),
                "aggregate_runs": [r["aggregate"] for r in runs],
                "p50_s": percentile(latencies, 0.5), "p99_s": percentile(latencies, 0.99),
                "last_ttft_ms": statistics.median(r["last_ttft"] for r in runs) * 1000,
                "cpu_ms_per_token": statistics.median(r["cpu_ms_per_token"] for r in runs)}
    for name, side in sides.items():
        results[name]["prefix"] = prefix_reuse(side.port, side.model, eos)
    return results


def lms(env: dict, *args: str) -> str:
    return common.lms_cli(env, *args, via=common.LMS_SCRIPT)


def measure_servers(model: Path, eos: int) -> dict[str, dict]:
    """lms (daemon and worker) and llama-server, both up, measured alternately; then lms's speculative decoding."""
    home = common.temp_folder("lms-bench-engine-")
    env = common.lms_env(home, LMS_THREADS=str(common.threads()), LMS_JIT_AUTO_EVICT="false")
    port = common.free_port()
    try:
        lms(env, "server", "start", "-p", str(port))
        lms(env, "load", BUNDLED_KEY, "-c", str(CONTEXT), "--parallel", str(SLOTS), "-y")
        control = common.control(home)
        pids = [control.get("/lms/status")["pid"], *(loaded["pid"] for loaded in control.get("/lms/ps"))]
        with llama_server.serving(model, CONTEXT * SLOTS, SLOTS) as (server_port, server_pid):
            results = serve_measure({"lms": Side(port, BUNDLED_KEY, pids),
                                     "llama_server": Side(server_port, None, [server_pid])}, eos)
        results["lms"]["speculative"] = speculative(env, home, port, eos)
        return results
    finally:
        common.daemon_down(env, via=common.LMS_SCRIPT)
        shutil.rmtree(home, ignore_errors=True)


def speculative(env: dict, home: Path, port: int, eos: int) -> dict:
    """The requantized target alone, then with the bundled Q4_1 as draft (per request), same prompts."""
    from tools.requantize import bundled_as

    target = bundled_as(SPEC_TARGET)
    common.link_model(home, SPEC_KEY, target)
    lms(env, "unload", "--all")
    lms(env, "load", SPEC_KEY, "-c", str(CONTEXT), "--parallel", "1", "-y")
    prompts = [common.story(f"speculative {i}") for i in range(ROUNDS)]
    stream(port, greedy(common.story("warm-up"), eos, 16), SPEC_KEY)
    # LM Studio's default sampling (repeat penalty 1.1): the draft guesses as the request's own sampler would
    bodies = [{k: v for k, v in greedy(p, eos).items() if k != "repeat_penalty"} for p in prompts]
    alone = [stream(port, body, SPEC_KEY) for body in bodies]
    drafted = [stream(port, {**body, "draft_model": BUNDLED_KEY}, SPEC_KEY) for body in bodies]
    plain_tps = statistics.median(r["decode"] for r in alone)
    draft_tps = statistics.median(r["decode"] for r in drafted)
    return {"target": target.name, "target_decode": plain_tps, "with_draft_decode": draft_tps,
            "speedup": draft_tps / plain_tps,
            "identical_texts": sum(a["text"] == d["text"] for a, d in zip(alone, drafted)), "rounds": ROUNDS}


def measure_raw(model: Path, eos: int) -> dict:
    llm, template = common.raw_llama(model, CONTEXT)
    raw_single(llm, template, common.story("warm-up"), eos)
    runs = [raw_single(llm, template, common.story(f"raw {i}"), eos) for i in range(ROUNDS)]
    return {"decode": statistics.median(r["decode"] for r in runs),
            "ttft_ms": statistics.median(r["ttft"] for r in runs) * 1000}


def measure() -> dict:
    model = bundled_model_file()
    from llama_cpp import Llama

    eos = Llama(model_path=str(model), n_ctx=64, verbose=False, vocab_only=True).token_eos()
    return {"threads": common.threads(), "slots": SLOTS, "context_per_slot": CONTEXT, "tokens": TOKENS,
            "raw": measure_raw(model, eos), **measure_servers(model, eos)}


def rows(results: dict) -> list[tuple[str, str, str]]:
    ours, server, raw = results["lms"], results["llama_server"], results["raw"]
    table = [
        ("engine: single-stream decode tok/s lms / llama-server / raw",
         f"{ours['decode']:.1f} / {server['decode']:.1f} / {raw['decode']:.1f}", ""),
        ("engine: single-stream decode lms / llama-server", f"{ours['decode'] / server['decode']:.3f}", ">= 0.95"),
        ("engine: TTFT ms lms / llama-server / raw",
         f"{ours['ttft_ms']:.0f} / {server['ttft_ms']:.0f} / {raw['ttft_ms']:.0f}", ""),
    ]
    for count in CONCURRENCY:
        mine, theirs = ours["streams"][count], server["streams"][count]
        table.append((f"engine: {count} streams aggregate tok/s lms / llama-server",
                      f"{mine['aggregate']:.1f} / {theirs['aggregate']:.1f}", ""))
        per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(mine["aggregate_runs"], theirs["aggregate_runs"]))
        table.append((f"engine: {count} streams aggregate ratio (rounds {per_round})",
                      f"{mine['aggregate'] / theirs['aggregate']:.3f}", ">= 1.10" if count in (4, 8) else ""))
        if count > 1:
            table.append((f"engine: {count} streams TTFT of the last to start, ms lms / llama-server",
                          f"{mine['last_ttft_ms']:.0f} / {theirs['last_ttft_ms']:.0f}",
                          "lms <= llama-server" if count == 4 else ""))
        table.append((f"engine: {count} streams CPU ms per token, daemon and worker / llama-server",
                      f"{mine['cpu_ms_per_token']:.1f} / {theirs['cpu_ms_per_token']:.1f}", ""))
        table.append((f"engine: {count} streams latency p50/p99 s lms | llama-server",
                      f"{mine['p50_s']:.1f}/{mine['p99_s']:.1f} | {theirs['p50_s']:.1f}/{theirs['p99_s']:.1f}", ""))
    for name, side in (("lms", ours), ("llama-server", server)):
        prefix = side["prefix"]
        table.append((f"engine: shared 1k-token prefix TTFT warm/cold ms ({name})",
                      f"{prefix['warm_ttft_ms']:.0f}/{prefix['cold_ttft_ms']:.0f}", ""))
        table.append((f"engine: shared-prefix TTFT ratio ({name})", f"{prefix['ratio']:.3f}",
                      "<= 0.20" if name == "lms" else ""))
    spec = ours["speculative"]
    table.append((f"engine: speculative tok/s target alone / with draft ({spec['target']})",
                  f"{spec['target_decode']:.1f} / {spec['with_draft_decode']:.1f}", ""))
    table.append(("engine: speculative speedup", f"{spec['speedup']:.3f}", ">= 1.3"))
    table.append(("engine: speculative identical texts", f"{spec['identical_texts']}/{spec['rounds']}", "all"))
    return table


if __name__ == "__main__":
    measured = measure()
    common.print_rows(rows(measured), 72, 24, gap=" ")
    (common.REPO / "bench" / "engine-results.json").write_text(json.dumps(measured, indent=2))
