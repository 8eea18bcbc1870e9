"""What the benchmarks share: the repository, threads and ports, a throwaway LMS_HOME and the CLI run against it,
the local server's streams, bare llama-cpp-python runs, timing, and the printed table.

Each benchmark puts the repository on sys.path first, then imports this as `bench._common`.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
LMS_SCRIPT = (str(REPO / ".venv/bin/lms"),)  # the installed command, as a user runs it (timed by run.py)
LMS_MODULE = (sys.executable, "-m", "lms")
MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the sea."}]


def threads() -> int:
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(function: Callable, *args, **kwargs) -> float:
    """Seconds one call of `function` takes."""
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


# --- a throwaway lms installation ------------------------------------------------------------------------------


def temp_folder(prefix: str) -> Path:
    """A new folder under the system's temporary one (an LMS_HOME, say); the caller removes it, or leaves it."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def lms_env(home: Path, **settings: str) -> dict:
    """This process's environment with LMS_HOME at `home` and the LMS_* (or other) variables given."""
    return {**os.environ, **settings, "LMS_HOME": str(home)}


def lms_cli(env: dict, *args: str, via: tuple[str, ...] = LMS_MODULE, check: bool = True) -> str:
    """Run the CLI against env's LMS_HOME; its stdout."""
    return subprocess.run([*via, *args], env=env, cwd=REPO, capture_output=True, text=True, check=check).stdout


def daemon_down(env: dict, via: tuple[str, ...] = LMS_MODULE) -> None:
    lms_cli(env, "daemon", "down", via=via, check=False)


def server_port(env: dict) -> int:
    """The port the server listens on (it picks one when started with `-p 0`)."""
    return json.loads(lms_cli(env, "server", "status", "--json"))["port"]


def link_model(home: Path, folder: str, source: Path, name: str | None = None) -> Path:
    """A model file or folder linked into home's models/<folder>/, under its own name or `name`."""
    target = home / "models" / folder / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)
    return target


def control(home: Path):
    """The daemon's control API, as the CLI reaches it."""
    from lms.client import DaemonClient
    from lms.config import socket_path

    return DaemonClient(path=str(socket_path(home)))


# --- generation ------------------------------------------------------------------------------------------------


def story(seed: str) -> list[dict]:
    """A new system line per seed: each request starts from a cold KV cache, on prompts identical on every side."""
    return [{"role": "system", "content": f"You are a storyteller ({seed})."}, *MESSAGES]


def post_stream(port: int, path: str, body: str, timeout: float) -> tuple[float, http.client.HTTPConnection,
                                                                           http.client.HTTPResponse]:
    """POST a JSON body to the local server with the standard library's http.client (as light as curl, so that on a
    small machine the measuring client takes few cycles from the engine it measures): (the time it was sent, the
    connection to close, the response to read)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    return started, connection, connection.getresponse()


def streamed_chat(port: int, model: str, messages: list[dict], tokens: int) -> tuple[float, float]:
    """(ttft seconds, decode tok/s) of one greedy answer streamed through /v1/chat/completions, counted by the
    server's own usage."""
    import httpx

    body = {"model": model, "messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    started, first, count = time.perf_counter(), None, 0
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter()
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
    return first - started, (count - 1) / (time.perf_counter() - first)


def responses_ttft(port: int, body: dict) -> tuple[float, dict]:
    """Time to the first output_text delta of a streamed /v1/responses request, and the final response."""
    started, connection, response = post_stream(port, "/v1/responses", json.dumps({**body, "stream": True}),
                                                timeout=300)
    first, final = None, None
    for line in response:
        if line.startswith(b"data: {"):
            event = json.loads(line[6:])
            if event["type"] == "response.output_text.delta" and first is None:
                first = time.perf_counter() - started
            if event["type"] in ("response.completed", "response.incomplete"):
                final = event["response"]
    connection.close()
    return first, final


def raw_llama(model: Path, context: int):
    """Bare llama-cpp-python on `model` with the benchmark's threads, and the model's chat template."""
    from llama_cpp import Llama

    from lms.store.gguf import read_header

    llm = Llama(model_path=str(model), n_ctx=context, n_threads=threads(), n_threads_batch=threads(), verbose=False)
    return llm, read_header(model).metadata.get("tokenizer.chat_template")


def raw_generate(llm, template: str | None, messages: list[dict], eos: int, tokens: int,
                 **sampling) -> tuple[float, float]:
    """(ttft seconds, decode tok/s) of one greedy run of `tokens` tokens, end-of-text banned, on bare
    llama-cpp-python (its high-level generate loop)."""
    import llama_cpp

    from lms.generation.chat_template import render

    started = time.perf_counter()
    prompt = llm.tokenize(render(template, messages).encode(), add_bos=True, special=True)

    def ban_eos(_ids, scores):
        scores[eos] -= 100
        return scores

    first, count = None, 0
    for token in llm.generate(prompt, temp=0.0, logits_processor=llama_cpp.LogitsProcessorList([ban_eos]),
                              **sampling):
        llm.detokenize([token])  # any real consumer turns tokens into text
        first = first or time.perf_counter()
        count += 1
        if count == tokens:
            break
    ended = time.perf_counter()
    return first - started, (count - 1) / (ended - first)


# --- the printed table -----------------------------------------------------------------------------------------


def print_rows(rows: list[tuple[str, str, str]], name_width: int, value_width: int, gap: str = "  ") -> None:
    """One line per (metric, value, target) row."""
    for name, value, target in rows:
        print(f"{name:<{name_width}}{gap}{value:>{value_width}}  {target}")
