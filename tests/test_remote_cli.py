"""The CLI against a daemon on another machine: `lms --host H --port P <command>` (or LMS_HOST), authenticated
with an admin token from LMS_API_TOKEN or --api-token-file, over that daemon's HTTP server. Here the "other
machine" is a second installation on the same host: its own LMS_HOME, no daemon of its own."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading

import httpx
import pytest

from tests.conftest import CHAT_MODEL, REPO, _new_lms


@pytest.fixture
def server(lms):
    lms.run("server", "start", "-p", str(lms.port))
    return lms


@pytest.fixture
def remote(tmp_path, server):
    """A CLI on 'another machine': every command goes to `server` over HTTP."""
    instance = _new_lms(tmp_path / "elsewhere")
    instance.settings.update({"LMS_HOST": "127.0.0.1", "LMS_PORT": str(server.port)})
    return instance


def _token(server, scope: str) -> str:
    return json.loads(server.run("server", "token", "create", f"cli-{scope}", "--scope", scope, "--json").stdout)[
        "token"]


def test_without_an_admin_token_the_control_api_is_closed(server, remote):
    # The server has no token at all: what the public API allows anyone anyway (listing, loading) is open, as it
    # is for the dashboard; settings and tokens are not.
    assert remote.json("ps") == []
    assert httpx.get(f"{server.base_url}/lms/ps").status_code == 200
    refused = remote.run("config", "set", "jit_ttl_seconds", "60", check=False)
    assert refused.returncode == 1 and "admin API token" in refused.stderr
    assert httpx.get(f"{server.base_url}/lms/tokens").json()["error"]["code"] == "admin_token_required"
    inference = _token(server, "inference")
    remote.settings["LMS_API_TOKEN"] = inference
    refused = remote.run("ps", "--json", check=False)
    assert refused.returncode == 1 and "admin" in refused.stderr
    remote.settings["LMS_API_TOKEN"] = "sk-lm-wrong:wrongwrongwrongwrong"
    assert "not valid" in remote.run("ls", "--json", check=False).stderr
    # the control API is only for the CLI: a web page cannot reach it even with a token
    headers = {"Authorization": f"Bearer {_token(server, 'admin')}", "Origin": "http://evil.example"}
    assert httpx.get(f"{server.base_url}/lms/ps", headers=headers).status_code == 403
    assert not (remote.home / ".internal" / "daemon.pid").exists()  # nothing started on this side


def test_an_admin_token_drives_ls_ps_load_unload_and_status(server, remote, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(_token(server, "admin") + "\n")
    flags = ["--host", "127.0.0.1", "--port", str(server.port), "--api-token-file", str(token_file)]
    bare = _new_lms(tmp_path / "flags-only")  # no LMS_HOST: the flags alone say where
    listed = [m["modelKey"] for m in bare.json(*flags, "ls")]
    assert CHAT_MODEL in listed
    bare.run(*flags, "load", CHAT_MODEL, "-y", "--identifier", "remote-loaded")
    assert [m["identifier"] for m in server.json("ps")] == ["remote-loaded"]  # loaded over there
    remote.settings["LMS_API_TOKEN"] = token_file.read_text().strip()
    assert [m["identifier"] for m in remote.json("ps")] == ["remote-loaded"]
    assert remote.json("server", "status")["running"] is True
    assert remote.run("chat", "remote-loaded", "-p", "Say hi").stdout.strip()  # chats over the same connection
    remote.run("unload", "remote-loaded")
    assert server.json("ps") == []
    assert not (remote.home / ".internal" / "daemon.pid").exists()
    assert not (bare.home / ".internal" / "daemon.pid").exists()
    stop = remote.run("server", "stop", check=False)
    assert stop.returncode == 1 and "this machine only" in stop.stderr
    assert httpx.get(f"{server.base_url}/health").status_code == 200  # still serving


def test_log_stream_follows_the_remote_daemon(server, remote):
    remote.settings["LMS_API_TOKEN"] = _token(server, "admin")
    follower = subprocess.Popen([sys.executable, "-m", "lms", "log", "stream", "--json"], env=remote.env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
    try:
        assert "Streaming logs" in follower.stderr.readline()  # subscribed over HTTP
        server.run("load", CHAT_MODEL, "-y")
        answer = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=120, headers={
            "Authorization": f"Bearer {remote.settings['LMS_API_TOKEN']}"}, json={
            "model": CHAT_MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
        event = json.loads(lines.get(timeout=120))["data"]
        assert event["type"] == "llm.prediction.input" and "hi" in event["input"]
        assert json.loads(lines.get(timeout=120))["data"]["type"] == "llm.prediction.output"
    finally:
        follower.kill()
        follower.wait()
