"""The memory estimate of `lms load --estimate-only` against the measured peak RSS (VmHWM) of real workers,
after a load and one short generation. Target (the lifecycle issue): within ±10% for SmolLM2 at 4k and 8k and
Gemma 3 270M at 4k, 8k and 32k context. Two more rows load SmolLM2 with a 2048-token batch, flash attention on
and off, and send a prompt long enough to fill that batch: the compute buffers grow with it.

    python bench/estimate.py        (also part of `make bench`)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from lms.store.catalog import BUNDLED_KEY  # noqa: E402
from tools.gemma_gguf import ensure_gemma_gguf  # noqa: E402

GEMMA_KEY = "google/gemma-3-270m"
SHORT_PROMPT = "The lighthouse keeper looked at the sea and"
# ~3,800 tokens: a 4k context nearly full
LONG_PROMPT = "The lighthouse keeper counted the ships that passed the rocks at night. " * 270
BIG_BATCH = ("--batch-size", "2048")
# (model, context, load flags, prompt)
CASES = [(BUNDLED_KEY, 4096, (), SHORT_PROMPT), (BUNDLED_KEY, 8192, (), SHORT_PROMPT),
         (GEMMA_KEY, 4096, (), SHORT_PROMPT), (GEMMA_KEY, 8192, (), SHORT_PROMPT), (GEMMA_KEY, 32768, (), SHORT_PROMPT),
         (BUNDLED_KEY, 4096, BIG_BATCH, LONG_PROMPT),
         (BUNDLED_KEY, 4096, (*BIG_BATCH, "--flash-attention", "off"), LONG_PROMPT)]


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def measure() -> list[dict]:
    home = common.temp_folder("lms-bench-estimate-")
    common.link_model(home, "google/gemma-3-270m-GGUF", ensure_gemma_gguf(), "gemma-3-270m-q4_k_m.gguf")
    port = 0
    env = common.lms_env(home)
    common.lms_cli(env, "server", "start", "-p", str(port))
    port = common.server_port(env)
    rows = []
    try:
        for key, context, flags, prompt in CASES:
            plan = json.loads(common.lms_cli(env, "load", key, "--estimate-only", "-c", str(context), *flags,
                                             "--json"))
            common.lms_cli(env, "load", key, "-c", str(context), *flags, "-y", "--identifier", "measured")
            httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=300,
                       json={"model": "measured", "prompt": prompt, "max_tokens": 8}).raise_for_status()
            [model] = common.control(home).get("/lms/ps")  # with the worker's pid
            peak = _peak_rss(model["pid"])
            common.lms_cli(env, "unload", "measured")
            # The host prefix cache is empty right after a load: its capacity is compared only once it fills.
            estimate = plan["memory"]["totalBytes"] - plan["parts"].get("prefixCache", 0)
            rows.append({"model": key, "context": context, "parallel": plan.get("parallel", 1),
                         "flags": " ".join(flags),
                         "estimate_bytes": estimate, "peak_rss_bytes": peak, "error": estimate / peak - 1,
                         "prefix_cache_capacity_bytes": plan["parts"].get("prefixCache", 0)})
    finally:
        common.daemon_down(env)
    return rows


def rows(results: list[dict]) -> list[tuple[str, str, str]]:
    return [(f"estimate vs peak RSS, {r['model'].split('/')[1]} @ {r['context']} x{r.get('parallel', 1)} slots "
             f"{r.get('flags', '')} ({r['estimate_bytes'] / 2**20:.0f} / {r['peak_rss_bytes'] / 2**20:.0f} MiB)",
             f"{r['error'] * 100:+.1f}%", "within ±10%") for r in results]


if __name__ == "__main__":
    common.print_rows(rows(measure()), 70, 8)
