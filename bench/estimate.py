"""The memory estimate of `lms load --estimate-only` against the measured peak RSS (VmHWM) of real workers,
after a load and one short generation. Target (the lifecycle issue): within ±10% for SmolLM2 at 4k and 8k and
Gemma 3 270M at 4k, 8k and 32k context.

    python bench/estimate.py        (also part of `make bench`)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lms.client import DaemonClient  # noqa: E402
from lms.config import socket_path  # noqa: E402
from lms.store.catalog import BUNDLED_KEY  # noqa: E402
from tools.gemma_gguf import ensure_gemma_gguf  # noqa: E402

GEMMA_KEY = "google/gemma-3-270m"
CASES = [(BUNDLED_KEY, 4096), (BUNDLED_KEY, 8192), (GEMMA_KEY, 4096), (GEMMA_KEY, 8192), (GEMMA_KEY, 32768)]


def _lms(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "lms", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def measure() -> list[dict]:
    home = Path(tempfile.mkdtemp(prefix="lms-bench-estimate-"))
    gemma = home / "models" / "google" / "gemma-3-270m-GGUF" / "gemma-3-270m-q4_k_m.gguf"
    gemma.parent.mkdir(parents=True)
    gemma.symlink_to(ensure_gemma_gguf())
    port = 0
    env = {**os.environ, "LMS_HOME": str(home)}
    _lms(env, "server", "start", "-p", str(port))
    port = json.loads(_lms(env, "server", "status", "--json"))["port"]
    rows = []
    try:
        for key, context in CASES:
            plan = json.loads(_lms(env, "load", key, "--estimate-only", "-c", str(context), "--json"))
            _lms(env, "load", key, "-c", str(context), "-y", "--identifier", "measured")
            httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=120,
                       json={"model": "measured", "prompt": "The lighthouse keeper looked at the sea and",
                             "max_tokens": 8})
            [model] = DaemonClient(path=str(socket_path(home))).get("/lms/ps")  # with the worker's pid
            peak = _peak_rss(model["pid"])
            _lms(env, "unload", "measured")
            # The host prefix cache is empty right after a load: its capacity is compared only once it fills.
            estimate = plan["memory"]["totalBytes"] - plan["parts"].get("prefixCache", 0)
            rows.append({"model": key, "context": context, "parallel": plan.get("parallel", 1),
                         "estimate_bytes": estimate, "peak_rss_bytes": peak, "error": estimate / peak - 1,
                         "prefix_cache_capacity_bytes": plan["parts"].get("prefixCache", 0)})
    finally:
        subprocess.run([sys.executable, "-m", "lms", "daemon", "down"], env=env, cwd=REPO, capture_output=True)
    return rows


def rows(results: list[dict]) -> list[tuple[str, str, str]]:
    return [(f"estimate vs peak RSS, {r['model'].split('/')[1]} @ {r['context']} x{r.get('parallel', 1)} slots "
             f"({r['estimate_bytes'] / 2**20:.0f} / {r['peak_rss_bytes'] / 2**20:.0f} MiB)",
             f"{r['error'] * 100:+.1f}%", "within ±10%") for r in results]


if __name__ == "__main__":
    for name, value, target in rows(measure()):
        print(f"{name:70}  {value:>8}  {target}")
