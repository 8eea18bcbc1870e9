"""Daemon, server and model lifecycle through the CLI, as a script would drive it (--json)."""

from __future__ import annotations

import json
import os
import socket
import stat
import time

import httpx
from websockets.sync.client import connect

from lms.config import socket_path
from lms.daemon.http_server import SDK_DISCOVERY_PORTS
from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL


def test_daemon_up_status_down(lms):
    assert lms.json("daemon", "status") == {"status": "not-running"}
    up = lms.json("daemon", "up")
    assert up["status"] == "running" and up["isDaemon"] is True and isinstance(up["pid"], int)
    assert lms.json("daemon", "up")["pid"] == up["pid"]  # idempotent
    assert lms.json("daemon", "status") == {"status": "running", "pid": up["pid"], "isDaemon": True}
    sock = socket_path(lms.home)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert (lms.home / "server-logs").is_dir()
    down = lms.run("daemon", "down")
    assert "Done." in down.stderr
    assert lms.json("daemon", "status") == {"status": "not-running"}
    assert not sock.exists()
    result = lms.run("daemon", "down", check=False)
    assert result.returncode == 1 and "not running" in result.stderr


def test_stale_socket_and_pid_are_recovered(lms):
    internal = lms.home / ".internal"
    internal.mkdir(parents=True)
    (internal / "daemon.pid").write_text("999999")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(socket_path(lms.home)))
    stale.close()  # the file stays, nobody listens
    assert lms.json("daemon", "status") == {"status": "not-running"}
    up = lms.json("daemon", "up")
    assert up["status"] == "running" and up["pid"] != 999999


def test_server_start_status_stop(lms):
    assert lms.json("server", "status") == {"running": False}
    started = lms.run("server", "start", "-p", str(lms.port))
    assert f"Success! Server is now running on port {lms.port}" in started.stderr
    assert started.stdout == ""  # messages go to stderr
    status = lms.json("server", "status")
    assert status.pop("sdkPort", None) in (None, *SDK_DISCOVERY_PORTS)  # LM Studio's SDKs find it there
    assert status == {"running": True, "port": lms.port, "tokenRequired": False, "ui": True}
    assert httpx.get(lms.base_url + "/lmstudio-greeting").json() == {"lmstudio": True}
    assert "access-control-allow-origin" not in httpx.options(
        lms.base_url + "/v1/models", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    ).headers
    stopped = lms.run("server", "stop")
    assert f"Stopped the server on port {lms.port}." in stopped.stderr
    assert lms.json("server", "status") == {"running": False, "port": lms.port}
    lms.run("server", "start", "-p", str(lms.port))
    assert lms.json("server", "stop") == {"running": False, "stopped": True, "port": lms.port}
    assert lms.run("server", "stop", check=False).returncode == 1


def test_server_cors_and_port_in_use(lms):
    lms.run("server", "start", "-p", str(lms.port), "--cors")
    preflight = httpx.options(lms.base_url + "/v1/models", headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "GET"})
    assert preflight.headers.get("access-control-allow-origin") in ("*", "http://app.example")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        result = lms.run("server", "start", "-p", str(busy), check=False)
        assert result.returncode == 1 and "Error:" in result.stderr


def test_a_network_address_is_not_served_without_a_token(lms):
    refused = lms.run("server", "start", "-p", str(lms.port), "--bind", "0.0.0.0", check=False)
    assert refused.returncode == 1 and "without an API token" in refused.stderr and "--no-auth" in refused.stderr
    assert lms.json("server", "status")["running"] is False  # nothing was bound


def test_api_token_is_required_when_set(lms):
    os.environ["LMS_API_TOKEN"] = "sekret-token"
    try:
        lms.run("server", "start", "-p", str(lms.port))
    finally:
        del os.environ["LMS_API_TOKEN"]
    assert httpx.get(lms.base_url + "/v1/models").status_code == 401
    assert httpx.get(lms.base_url + "/v1/models", headers={"Authorization": "Bearer sekret-token"}).status_code == 200
    assert httpx.get(lms.base_url + "/lmstudio-greeting").status_code == 200
    socket_url = lms.base_url.replace("http://", "ws://") + "/v1/responses"
    with connect(socket_url, open_timeout=10) as anonymous:  # refused at its first message, before model work
        anonymous.send(json.dumps({"type": "response.create", "model": "nope"}))
        assert json.loads(anonymous.recv(timeout=30))["error"]["code"] == "invalid_api_key"
    with connect(socket_url, additional_headers={"Authorization": "Bearer sekret-token"}, open_timeout=10) as ok:
        ok.send(json.dumps({"type": "response.create", "model": "nope"}))
        assert json.loads(ok.recv(timeout=30))["error"]["code"] == "model_not_found"


def test_ls_shows_the_bundled_chat_and_embedding_models(lms):
    models = {m["modelKey"]: m for m in lms.json("ls")}
    assert set(models) == {CHAT_MODEL, EMBEDDING_MODEL}
    model = models[CHAT_MODEL]
    assert model["type"] == "llm" and model["format"] == "gguf" and model["architecture"] == "llama"
    assert model["paramsString"] == "135M" and model["quantization"]["name"] == "Q4_1"
    assert model["maxContextLength"] == 8192 and model["sizeBytes"] > 90_000_000
    linked = lms.home / "models" / model["path"]
    assert linked.is_symlink()  # no 98 MB copy
    text = lms.run("ls").stdout
    assert "You have 2 models" in text and CHAT_MODEL in text and EMBEDDING_MODEL in text
    embedding = lms.json("ls", "--embedding")
    assert [m["modelKey"] for m in embedding] == [EMBEDDING_MODEL] and embedding[0]["type"] == "embedding"
    assert (lms.home / "models" / embedding[0]["path"]).is_symlink()


def test_a_fresh_install_embeds_with_the_bundled_model(lms):
    import httpx

    lms.run("server", "start", "-p", str(lms.port))
    answer = httpx.post(f"{lms.base_url}/v1/embeddings", timeout=120,
                        json={"model": EMBEDDING_MODEL, "input": ["the cat sat", "a cat was sitting"]}).json()
    first, second = (item["embedding"] for item in answer["data"])
    assert len(first) == 384 and answer["usage"]["prompt_tokens"] > 0
    assert sum(a * b for a, b in zip(first, second, strict=True)) > 0.5  # close sentences, unit vectors


def test_import_modes_and_dry_run(lms, embedding_gguf, tmp_path):
    copy = tmp_path / "emb.gguf"
    copy.write_bytes(embedding_gguf.read_bytes())
    dry = lms.run("import", str(copy), "--user-repo", "me/emb", "--copy", "--dry-run")
    assert "Would copy the file to" in dry.stderr and "--dry-run" in dry.stderr
    assert not (lms.home / "models" / "me").exists()
    linked = lms.json("import", str(copy), "--user-repo", "me/emb", "--symbolic-link")
    assert linked["mode"] == "symbolic-link" and linked["target"].endswith("models/me/emb/emb.gguf")
    keys = {m["modelKey"]: m for m in lms.json("ls")}
    assert keys["me/emb"]["type"] == "embedding"
    again = lms.run("import", str(copy), "--user-repo", "me/emb", "--copy", check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    lms.run("import", str(copy), "--user-repo", "me/moved", "-y")
    assert not copy.exists() and (lms.home / "models/me/moved/emb.gguf").exists()
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model")
    assert lms.run("import", str(bad), check=False).returncode == 1


def test_load_ps_unload(lms):
    loaded = lms.run("load", CHAT_MODEL, "--identifier", "smol", "-c", "1024", "--ttl", "600", "-y")
    assert "Model loaded successfully in" in loaded.stderr
    assert 'use the identifier "smol"' in loaded.stderr
    [model] = lms.json("ps")
    assert model["identifier"] == "smol" and model["modelKey"] == CHAT_MODEL
    assert model["contextLength"] == 1024 and model["maxContextLength"] == 8192
    assert model["ttlMs"] == 600_000 and model["status"] == "idle" and model["queued"] == 0
    for key in ("path", "sizeBytes", "lastUsedTime", "parallel"):
        assert key in model
    second = lms.json("load", "smollm2", "-y")  # fuzzy key; a second instance gets a new identifier
    assert second["identifier"] == CHAT_MODEL
    third = lms.json("load", CHAT_MODEL, "-y")
    assert third["identifier"] == f"{CHAT_MODEL}:2"
    text = lms.run("ps").stdout
    assert "IDENTIFIER" in text and "smol" in text and "m / 10m" in text
    assert lms.run("unload", "smol").stderr.strip() == 'Model "smol" unloaded.'
    assert lms.run("unload", "nope", check=False).returncode == 1
    assert "Unloaded 2 models." in lms.run("unload", "--all").stderr
    assert lms.json("ps") == []
    missing = lms.run("load", "no-such-model", "-y", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr.lower()


def test_status_and_version(lms):
    assert lms.json("version")["version"]
    status = lms.run("status").stdout
    assert "Server:  OFF" in status and "No Models Loaded" in status


def test_chat_one_shot_with_piped_stdin(lms):
    import re

    def prompt_tokens(result) -> int:
        return int(re.search(r"Prompt Tokens: (\d+)", result.stderr).group(1))

    plain = lms.run("chat", CHAT_MODEL, "-p", "What is the capital of France?", "--stats")
    piped = lms.run("chat", CHAT_MODEL, "-p", "What is the capital of France?", "--stats",
                    input="Context: this is a geography quiz for children.")
    assert plain.stdout.strip() and piped.stdout.strip()
    assert "Prediction Stats:" in plain.stderr and "Tokens/Second" in plain.stderr
    assert prompt_tokens(piped) > prompt_tokens(plain) + 5  # stdin was appended to the prompt
    [model] = lms.json("ps")  # loaded for the chat, with chat's default TTL
    assert model["ttlMs"] == 3_600_000
    missing = lms.run("chat", "no-such-model", "-p", "hi", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_jit_load_on_first_request_and_once_under_concurrency(lms):
    import concurrent.futures

    lms.run("server", "start", "-p", str(lms.port))
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: httpx.post(lms.base_url + "/v1/chat/completions", json=body,
                                                       timeout=120), range(4)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    [model] = lms.json("ps")
    assert model["ttlMs"] == 3_600_000  # JIT default idle TTL: 60 minutes
    assert time.time() * 1000 - model["lastUsedTime"] < 60_000


def test_load_streams_progress_to_the_end(lms):
    events = list(lms.run_control_load(CHAT_MODEL))
    progress = [e["progress"] for e in events if "progress" in e]
    assert progress and progress == sorted(progress) and progress[-1] == 1.0
    assert events[-1]["loaded"]["identifier"] == CHAT_MODEL


def test_interactive_chat_ctrl_c_stops_the_answer_not_the_program(lms):
    import pty
    import select
    import signal
    import subprocess
    import sys

    lms.run("load", CHAT_MODEL, "-y")
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "lms", "chat", CHAT_MODEL], stdin=follower, stdout=follower,
                               stderr=follower, env=lms.env, close_fds=True)
    os.close(follower)
    screen = b""

    def read_until(marker: bytes, timeout: float = 60) -> None:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while marker not in screen:
            assert time.monotonic() < deadline, screen.decode(errors="replace")
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                screen += os.read(leader, 4096)

    try:
        read_until(b"> ")
        os.write(leader, b"Write a very long story about a dragon, with many chapters.\n")
        time.sleep(1.5)  # the answer is streaming now
        process.send_signal(signal.SIGINT)
        read_until(b"Generation interrupted by user with Ctrl^C")
        read_until(b"> ")
        assert process.poll() is None  # still chatting
        os.write(leader, b"/exit\n")
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)


def test_load_without_a_key_picks_from_the_downloaded_models_at_a_terminal(lms):
    refused = lms.run("load", check=False)
    assert refused.returncode == 1 and "Name the model to load" in refused.stderr  # a script must name it
    code, shown = lms.at_terminal("load", answers=["1"])
    assert code == 0, shown
    assert f"1. {CHAT_MODEL}" in shown and "Select a model to load" in shown
    assert [m["identifier"] for m in lms.json("ps")] == [CHAT_MODEL]
    lms.run("unload", "--all")
    code, shown = lms.at_terminal("load", "no-such-model-here", answers=["1"])
    assert code == 0 and "Cannot find a model matching the provided model key (no-such-model-here)" in shown
    assert [m["identifier"] for m in lms.json("ps")] == [CHAT_MODEL]
    assert lms.run("load", "no-such-model-here", "-y", check=False).returncode == 1  # -y never asks
    lms.run("load", CHAT_MODEL, "-y", "--identifier", "second")
    assert lms.run("unload", check=False).returncode == 1  # two loaded: a script must name one
    code, shown = lms.at_terminal("unload", answers=["2"])
    assert code == 0 and "Select a model to unload" in shown
    assert [m["identifier"] for m in lms.json("ps")] == [CHAT_MODEL]
