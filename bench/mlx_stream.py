"""MLX streaming decode through the API against raw `mlx_lm.stream_generate`, same model, prompt and length, in
one run. Target (the MLX issue): API / raw >= 0.9.

    python bench/mlx_stream.py       (also part of `make bench`)
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from tools.mlx_from_gguf import ensure_mlx_smollm2  # noqa: E402

KEY = "lmstudio-community/smollm2-135m-instruct-mlx-4bit"
TOKENS = 128
ROUNDS = 3


def _raw_tokens_per_second(folder: Path) -> list[float]:
    """In a child process, so the server's worker and the raw run never share memory or threads."""
    script = f"""
import json, time
from mlx_lm import load, stream_generate
from mlx_lm.sample_utils import make_sampler
model, tokenizer = load({str(folder)!r})
prompt = tokenizer.apply_chat_template({common.MESSAGES!r}, add_generation_prompt=True)
speeds = []
for _ in range({ROUNDS + 1}):
    first = None
    for response in stream_generate(model, tokenizer, prompt, max_tokens={TOKENS}, sampler=make_sampler(temp=0.0)):
        first = first or time.perf_counter()
        count = response.generation_tokens
    speeds.append((count - 1) / (time.perf_counter() - first))
print(json.dumps(speeds[1:]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _api_tokens_per_second(port: int) -> float:
    return common.streamed_chat(port, KEY, common.MESSAGES, TOKENS)[1]


def measure() -> dict:
    folder = ensure_mlx_smollm2()
    home = common.temp_folder("lms-bench-mlx-")
    common.link_model(home, "lmstudio-community", folder, "SmolLM2-135M-Instruct-MLX-4bit")
    env = common.lms_env(home)

    def lms(*args: str) -> str:
        return common.lms_cli(env, *args)

    lms("server", "start", "-p", "0")
    port = common.server_port(env)
    try:
        lms("load", KEY, "-y")
        _api_tokens_per_second(port)  # warm
        api = [_api_tokens_per_second(port) for _ in range(ROUNDS)]
    finally:
        lms("daemon", "down")
    raw = _raw_tokens_per_second(folder)
    return {"tokens": TOKENS, "raw_tokens_per_second": statistics.median(raw),
            "api_tokens_per_second": statistics.median(api), "raw": raw, "api": api,
            "ratio": statistics.median(api) / statistics.median(raw)}


def rows(result: dict) -> list[tuple[str, str, str]]:
    return [("MLX decode tok/s, raw mlx_lm.stream_generate", f"{result['raw_tokens_per_second']:.1f}", ""),
            ("MLX decode tok/s, lms /v1/chat/completions stream", f"{result['api_tokens_per_second']:.1f}", ""),
            ("MLX decode ratio lms / raw", f"{result['ratio']:.3f}", ">= 0.9")]


if __name__ == "__main__":
    common.print_rows(rows(measure()), 60, 10)
