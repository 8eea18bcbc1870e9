"""Nothing is lost and nothing crashes: disconnects free the worker, a killed worker fails cleanly and recovers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL

LONG = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
        "max_tokens": 3000, "temperature": 0.8, "logit_bias": {"2": -100}}  # token 2 (EOS) banned: it runs long


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _loaded(instance) -> dict:
    return {m["identifier"]: m for m in instance.control().get("/lms/ps")}


def test_client_disconnect_mid_stream_frees_the_worker(served):
    with httpx.stream("POST", served.base_url + "/v1/chat/completions", json={**LONG, "stream": True},
                      timeout=120) as response:
        lines = response.iter_lines()  # kept referenced: dropping it would close the stream early
        received = 0
        while received < 5:
            received += next(lines).startswith("data: ")
        assert _loaded(served)[CHAT_MODEL]["status"] == "generating"
    # 3000 tokens would take ~40 s; a freed worker is idle again at once.
    assert _wait(lambda: _loaded(served)[CHAT_MODEL]["queued"] == 0, timeout=10)
    quick = httpx.post(served.base_url + "/v1/chat/completions", timeout=60, json={
        "model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    assert quick.status_code == 200


def test_client_disconnect_during_non_streaming_request(served):
    def abandon():
        try:
            httpx.post(served.base_url + "/v1/chat/completions", json=LONG, timeout=1.5)
        except httpx.TimeoutException:
            pass

    thread = threading.Thread(target=abandon)
    thread.start()
    thread.join()
    assert _wait(lambda: _loaded(served)[CHAT_MODEL]["queued"] == 0, timeout=10)


def test_killed_worker_fails_cleanly_and_reloads(lms, embedding_gguf):
    lms.link_model(embedding_gguf, "sentence-transformers", "all-MiniLM-L6-v2-GGUF")
    lms.run("server", "start", "-p", str(lms.port))
    lms.run("load", CHAT_MODEL, "-y")
    lms.run("load", EMBEDDING_MODEL, "-y")
    before = _loaded(lms)
    victim = before[CHAT_MODEL]["pid"]

    events = []
    with httpx.stream("POST", lms.base_url + "/v1/chat/completions", json={**LONG, "stream": True},
                      timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 5:
                    os.kill(victim, signal.SIGKILL)
    errors = [json.loads(e)["error"] for e in events if e != "[DONE]" and "error" in json.loads(e)]
    assert len(errors) == 1 and errors[0]["code"] == "worker_died"
    assert events[-1] == "[DONE]"

    after = _loaded(lms)
    assert CHAT_MODEL not in after  # shown as unloaded
    assert after[EMBEDDING_MODEL]["pid"] == before[EMBEDDING_MODEL]["pid"]  # other models untouched

    # Non-streaming requests in flight get a 503.
    lms.run("load", CHAT_MODEL, "-y")
    pid = _loaded(lms)[CHAT_MODEL]["pid"]
    threading.Timer(1.0, os.kill, (pid, signal.SIGKILL)).start()
    failed = httpx.post(lms.base_url + "/v1/chat/completions", json=LONG, timeout=120)
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "worker_died"

    # The next request loads the model again (JIT) and is answered.
    again = httpx.post(lms.base_url + "/v1/chat/completions", timeout=120, json={
        "model": CHAT_MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0})
    assert again.status_code == 200 and "Paris" in again.json()["choices"][0]["message"]["content"]
    assert lms.json("daemon", "status")["status"] == "running"


def test_daemon_down_unloads_every_model(lms):
    lms.run("load", CHAT_MODEL, "-y")
    pid = _loaded(lms)[CHAT_MODEL]["pid"]
    lms.run("daemon", "down")
    assert _wait(lambda: not _alive(pid), timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return False


def test_daemon_never_loads_the_engine_library(served):
    """A crash in llama.cpp can only take a worker down: the daemon process never maps the library."""
    pid = served.json("daemon", "status")["pid"]
    maps = open(f"/proc/{pid}/maps").read()
    assert "libllama" not in maps and "libggml" not in maps
    worker = _loaded(served)[CHAT_MODEL]["pid"]
    assert "libllama" in open(f"/proc/{worker}/maps").read()


STORY = "Write a very long story about the sea."
SURFACES = {  # every surface answers a dead worker the same way: 503 worker_died (Anthropic: its own shape)
    "/v1/completions": {"prompt": STORY, "max_tokens": 3000, "logit_bias": {"2": -100}},
    "/v1/responses": {"input": STORY, "max_output_tokens": 3000},
    "/api/v1/chat": {"input": STORY, "max_output_tokens": 3000},
    "/v1/messages": {"messages": [{"role": "user", "content": STORY}], "max_tokens": 3000},
}


def test_a_dead_worker_is_the_same_503_on_every_surface(lms):
    lms.run("server", "start", "-p", str(lms.port))
    for path, body in SURFACES.items():
        lms.run("load", CHAT_MODEL, "-y")
        pid = _loaded(lms)[CHAT_MODEL]["pid"]

        def kill_when_generating(pid=pid):
            if _wait(lambda: _loaded(lms).get(CHAT_MODEL, {}).get("status") == "generating"):
                os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_when_generating)
        killer.start()
        failed = httpx.post(lms.base_url + path, json={"model": CHAT_MODEL, **body}, timeout=120)
        killer.join()
        assert failed.status_code == 503, (path, failed.text)
        error = failed.json()["error"]
        if path == "/v1/messages":
            assert error["type"] == "overloaded_error" and "worker" in error["message"]
        else:
            assert error["code"] == "worker_died", (path, error)
        assert CHAT_MODEL not in _loaded(lms)
