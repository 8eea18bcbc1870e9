"""A stored conversation's follow-up after the daemon restarts, and after the model is unloaded and loaded again:
its TTFT against the same request cold, and its cached tokens. Targets (the speed issue): cached_tokens >= 90% of
the previous turn, TTFT <= 25% of cold.

    python bench/disk_cache.py        (also part of `make bench`)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from lms.store.catalog import BUNDLED_KEY  # noqa: E402

CONTEXT = 4096
DIARY = " ".join(f"Day {i}: the keeper climbed the stairs, lit the lamp, and wrote in the log." for i in range(90))
QUESTION = [{"type": "message", "role": "user", "content": "On which day did the keeper first light the lamp?"}]


def lms(env: dict, *args: str) -> str:
    return common.lms_cli(env, *args, via=common.LMS_SCRIPT)


def follow_up(port: int, first_id: str) -> tuple[float, dict]:
    return common.responses_ttft(port, {"model": BUNDLED_KEY, "previous_response_id": first_id, "input": QUESTION,
                                 "temperature": 0, "max_output_tokens": 16})


def measure() -> dict:
    home = common.temp_folder("lms-bench-disk-cache-")
    env = common.lms_env(home, LMS_THREADS=str(common.threads()))
    port = common.free_port()
    try:
        lms(env, "server", "start", "-p", str(port))
        lms(env, "load", BUNDLED_KEY, "-c", str(CONTEXT), "--parallel", "1", "-y")
        first_turn = {"model": BUNDLED_KEY, "input": f"Here is my diary.\n{DIARY}\nRemember it.", "temperature": 0,
                      "max_output_tokens": 32}
        cold_ttft, first = common.responses_ttft(port, first_turn)  # nothing cached yet: the cold time
        turn = first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
        lms(env, "daemon", "down")
        lms(env, "server", "start", "-p", str(port))
        lms(env, "load", BUNDLED_KEY, "-c", str(CONTEXT), "--parallel", "1", "-y")
        restart_ttft, restarted = follow_up(port, first["id"])
        lms(env, "unload", "--all")
        lms(env, "load", BUNDLED_KEY, "-c", str(CONTEXT), "--parallel", "1", "-y")
        reload_ttft, reloaded = follow_up(port, first["id"])
    finally:
        common.daemon_down(env, via=common.LMS_SCRIPT)
        shutil.rmtree(home, ignore_errors=True)

    def cached(response: dict) -> int:
        return response["usage"]["input_tokens_details"]["cached_tokens"]

    return {"turn_tokens": turn, "cold_ttft_ms": cold_ttft * 1000, "cold_input_tokens": first["usage"]["input_tokens"],
            "restart_ttft_ms": restart_ttft * 1000, "restart_cached_tokens": cached(restarted),
            "reload_ttft_ms": reload_ttft * 1000, "reload_cached_tokens": cached(reloaded)}


def rows(result: dict) -> list[tuple[str, str, str]]:
    table = [(f"disk cache: cold TTFT of the {result['cold_input_tokens']}-token first turn (ms)",
              f"{result['cold_ttft_ms']:.0f}", "")]
    for when in ("restart", "reload"):
        table.append((f"disk cache: follow-up after a {when}, TTFT ms (cached / previous turn tokens)",
                      f"{result[f'{when}_ttft_ms']:.0f} ({result[f'{when}_cached_tokens']}/{result['turn_tokens']})",
                      ""))
        table.append((f"disk cache: follow-up after a {when} / cold TTFT",
                      f"{result[f'{when}_ttft_ms'] / result['cold_ttft_ms']:.3f}", "<= 0.25"))
        table.append((f"disk cache: cached share of the previous turn after a {when}",
                      f"{result[f'{when}_cached_tokens'] / result['turn_tokens']:.2f}", ">= 0.90"))
    return table


if __name__ == "__main__":
    common.print_rows(rows(measure()), 78, 14)
