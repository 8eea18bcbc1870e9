"""The spare worker (lms/manager/spare.py) and a script's `lms load` without Typer (lms/cli/fast.py), with the real
engine: a load is served by the worker started ahead of it, a new spare follows, none is left behind; the fast
load prints what the Typer command prints."""

from __future__ import annotations

import os

import psutil

from tests.conftest import CHAT_MODEL, wait_for


def _spare(lms) -> int | None:
    return lms.control().get("/lms/status").get("spareWorkerPid")


def _loaded_pid(lms, identifier: str) -> int:
    return next(m["pid"] for m in lms.control().get("/lms/ps") if m["identifier"] == identifier)


def test_a_load_takes_the_spare_worker_and_a_new_one_follows(lms):
    lms.run("daemon", "up")
    first = wait_for(lambda: _spare(lms), timeout=60)
    assert "runtimes.worker" in " ".join(psutil.Process(first).cmdline())
    loaded = lms.json("load", CHAT_MODEL, "-c", "1024", "--identifier", "one", "-y")
    assert loaded["identifier"] == "one" and loaded["contextLength"] == 1024
    assert _loaded_pid(lms, "one") == first  # the load ran in the worker started ahead of it
    second = wait_for(lambda: _spare(lms), timeout=60)
    assert second != first and psutil.pid_exists(second)
    assert [m["identifier"] for m in lms.json("ps")] == ["one"]  # a spare is not a loaded model
    answer = lms.run("chat", "one", "-p", "Say hi.").stdout
    assert answer.strip()

    lms.run("config", "set", "spare_worker", "false")
    lms.run("load", CHAT_MODEL, "--identifier", "two", "-c", "1024", "-y")
    assert _loaded_pid(lms, "two") == second
    lms.run("unload", "--all")
    assert _spare(lms) is None  # turned off: none follows

    lms.run("config", "set", "spare_worker", "true")
    lms.run("load", CHAT_MODEL, "--identifier", "three", "-c", "1024", "-y")  # started anew, then a spare follows
    third = wait_for(lambda: _spare(lms), timeout=60)
    lms.run("daemon", "down")
    wait_for(lambda: not psutil.pid_exists(third) or psutil.Process(third).status() == psutil.STATUS_ZOMBIE,
             timeout=30)


def test_a_spare_killed_while_waiting_is_replaced_by_a_fresh_start(lms):
    lms.run("daemon", "up")
    spare = wait_for(lambda: _spare(lms), timeout=60)
    os.kill(spare, 9)
    loaded = lms.json("load", CHAT_MODEL, "-c", "1024", "-y")
    assert _loaded_pid(lms, loaded["identifier"]) != spare
    assert lms.run("chat", loaded["identifier"], "-p", "Say hi.").stdout.strip()


def test_a_scripts_load_prints_what_the_typer_command_prints(lms):
    lms.run("daemon", "up")
    fast = lms.run("load", CHAT_MODEL, "-c", "1024", "--identifier", "fast", "-y")
    lines = fast.stderr.splitlines()
    assert lines[0].startswith("Model loaded successfully in ") and lines[-1].endswith('identifier "fast".')
    as_json = lms.json("load", CHAT_MODEL, "--context-length=1024", "--ttl", "60", "--parallel", "2", "-y")
    assert as_json["contextLength"] == 1024 and as_json["ttlMs"] == 60_000 and as_json["parallel"] == 2
    assert "pid" not in as_json
    missing = lms.run("load", "no-such-model", "-y", check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("Error: Model 'no-such-model' not found")
    # what the fast path does not take goes to Typer, which checks it as before
    refused = lms.run("load", CHAT_MODEL, "--ttl", "0", "-y", check=False)
    assert refused.returncode == 2 and "--ttl" in refused.stderr
    assert lms.json("load", CHAT_MODEL, "--estimate-only", "-c", "1024")["memory"]["totalBytes"] > 0  # Typer
    # the Typer command, run at a terminal, loads the same way
    code, shown = lms.at_terminal("load", CHAT_MODEL, "-c", "1024", "--identifier", "typer", "-y", answers=[])
    assert code == 0 and 'identifier "typer"' in shown
    assert {m["identifier"] for m in lms.json("ps")} >= {"fast", "typer"}
