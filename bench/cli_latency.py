"""The CLI's own latency, as scripts see it: `lms ps --json` and `lms ls --json` with 20 models on disk and 3
loaded (median of RUNS, the installed `lms` command); and `lms load` of the bundled model to its first token
against llama-server's start to first token, the daemon already running. Targets (the speed issue): <= 100 ms
for each listing, lms load to first token <= llama-server's.

    python bench/cli_latency.py        (also part of `make bench`)
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from bench import llama_server  # noqa: E402
from bench.engine import stream  # noqa: E402
from lms.store.catalog import BUNDLED_KEY, bundled_model_file  # noqa: E402

MODELS, LOADED, RUNS, LOAD_RUNS = 20, 3, 15, 3
FIRST_TOKEN = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}


def lms(env: dict, *args: str) -> str:
    return common.lms_cli(env, *args, via=common.LMS_SCRIPT)


def load_to_first_token(env: dict, port: int) -> float:
    started = time.perf_counter()
    lms(env, "load", BUNDLED_KEY, "-c", "2048", "--identifier", "timed", "-y")
    stream(port, FIRST_TOKEN, "timed")
    elapsed = time.perf_counter() - started
    lms(env, "unload", "timed")
    return elapsed


def server_to_first_token(model: Path) -> float:
    llama_server.binary()  # built before the clock starts
    started = time.perf_counter()
    process, port = llama_server.launch(model, 2048, 4)
    try:
        while True:
            try:
                llama_server.wait_ready(port, process, 60)
                break
            except RuntimeError:
                if process.poll() is not None:
                    raise
        stream(port, FIRST_TOKEN)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(30)


def settle(home, seconds: float = 30) -> None:
    """Wait until the spare worker that the last load replaced has started and gone idle (it imports llama.cpp,
    a second or two of CPU here): the listings are timed on a machine at rest, as a user between commands sees."""
    deadline = time.time() + seconds
    control = common.control(home)
    while time.time() < deadline:
        pid = control.get("/lms/status").get("spareWorkerPid")
        if pid:
            spare = psutil.Process(pid)
            before = sum(spare.cpu_times()[:2])
            time.sleep(0.5)
            if sum(spare.cpu_times()[:2]) - before < 0.01:
                return
        else:
            time.sleep(0.2)


def measure() -> dict:
    home = common.temp_folder("lms-bench-cli-")
    env = common.lms_env(home, LMS_THREADS=str(common.threads()))
    port = common.free_port()
    model = bundled_model_file()
    for n in range(MODELS - 2):  # with the bundled chat and embedding models: MODELS
        common.link_model(home, f"lms-bench/model-{n:02d}-GGUF", model)
    try:
        lms(env, "server", "start", "-p", str(port))
        listed = json.loads(lms(env, "ls", "--json"))
        for n in range(LOADED):
            lms(env, "load", f"lms-bench/model-{n:02d}", "-c", "512", "--parallel", "1", "-y")
        settle(home)
        timings = {}
        for command in (("ps", "--json"), ("ls", "--json")):
            lms(env, *command)  # warm the file cache
            timings[" ".join(command)] = statistics.median(
                common.timed(lms, env, *command) for _ in range(RUNS)) * 1000
        loads = [load_to_first_token(env, port) for _ in range(LOAD_RUNS)]
    finally:
        common.daemon_down(env, via=common.LMS_SCRIPT)
        shutil.rmtree(home, ignore_errors=True)
    servers = [server_to_first_token(model) for _ in range(LOAD_RUNS)]
    return {"models": len(listed), "loaded": LOADED, "ms": timings,
            "load_to_first_token_s": statistics.median(loads), "llama_server_to_first_token_s":
            statistics.median(servers)}


def rows(result: dict) -> list[tuple[str, str, str]]:
    table = [(f"cli: lms {command} median ms ({result['models']} models, {result['loaded']} loaded)", f"{ms:.0f}",
              "<= 100") for command, ms in result["ms"].items()]
    ours, theirs = result["load_to_first_token_s"], result["llama_server_to_first_token_s"]
    table.append(("cli: lms load to first token / llama-server start to first token (ms)",
                  f"{ours * 1000:.0f} / {theirs * 1000:.0f}", ""))
    table.append(("cli: load to first token ratio lms / llama-server", f"{ours / theirs:.2f}", "<= 1.0"))
    return table


if __name__ == "__main__":
    common.print_rows(rows(measure()), 72, 12)
