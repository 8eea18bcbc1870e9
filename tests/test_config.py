"""`lms config`: settings changed from the terminal, checked, kept in settings.json and applied to the running daemon
where they can be (else it says what restart they need); per-model load defaults honoured by JIT loads; and
`max_jit_models`, which keeps N JIT-loaded models and evicts the least recently used."""

from __future__ import annotations

import json

import httpx

from tests.conftest import CHAT_MODEL

COPY, OTHER = "lms-test/smollm2-copy", "lms-test/smollm2-other"


def ask(lms, model: str, max_tokens: int = 2) -> dict:
    response = httpx.post(f"{lms.base_url}/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens})
    assert response.status_code == 200, response.text
    return response.json()


def loaded(lms) -> dict[str, dict]:
    return {m["identifier"]: m for m in lms.json("ps")}


def settings_file(lms) -> dict:
    return json.loads((lms.home / "settings.json").read_text())


def test_a_setting_changed_live_applies_without_restart_and_persists(lms):
    changed = lms.run("config", "set", "jit_ttl_seconds", "60")
    assert "Applied to the running daemon now" in changed.stderr
    lms.run("server", "start", "-p", str(lms.port))
    ask(lms, CHAT_MODEL)  # a JIT load: its TTL is the new one, with no restart in between
    assert loaded(lms)[CHAT_MODEL]["ttlMs"] == 60_000
    assert settings_file(lms) == {"jit_ttl_seconds": 60}
    lms.run("daemon", "down")
    row = lms.json("config", "get", "jit_ttl_seconds")  # a new daemon reads settings.json
    assert (row["value"], row["source"], row["applies"]) == (60, "settings.json", "live")
    back = lms.json("config", "unset", "jit_ttl_seconds")
    assert (back["value"], back["source"], back["applied"]) == (3600, "default", True)
    assert settings_file(lms) == {}


def test_a_setting_that_needs_a_restart_says_so_and_takes_effect_after_it(lms):
    answer = lms.json("config", "set", "responses_max_count", "5")
    assert answer["applied"] is False and "restarting the daemon" in answer["note"]
    assert (answer["value"], answer["pending"]) == (10_000, 5)  # saved, not yet in effect
    text = lms.run("config", "set", "cors_origins", "http://localhost:3000").stderr
    assert "takes effect after restarting the server" in text
    lms.run("daemon", "down")
    rows = {r["key"]: r for r in lms.json("config", "ls")}
    assert rows["responses_max_count"]["value"] == 5 and "pending" not in rows["responses_max_count"]
    assert rows["cors_origins"]["value"] == "http://localhost:3000"
    assert rows["guardrails"] == {"key": "guardrails", "value": "relaxed", "default": "relaxed", "source": "default",
                                  "applies": "live"}


def test_a_bad_value_or_key_is_refused_and_nothing_is_written(lms):
    bad = lms.run("config", "set", "max_jit_models", "0", check=False)
    assert bad.returncode == 1 and "'max_jit_models' must be at least 1" in bad.stderr
    bad = lms.run("config", "set", "guardrails", "loose", check=False)
    assert bad.returncode == 1 and "must be one of" in bad.stderr
    unknown = lms.run("config", "get", "no_such_setting", check=False)
    assert unknown.returncode == 1 and "is not a setting" in unknown.stderr
    assert not (lms.home / "settings.json").exists()


def test_an_environment_variable_wins_and_config_says_so(lms):
    lms.settings["LMS_THREADS"] = "2"
    lms.settings["LMS_API_TOKEN"] = "sk-secret-value"
    rows = {r["key"]: r for r in lms.json("config", "ls")}
    assert (rows["threads"]["value"], rows["threads"]["source"]) == (2, "env (LMS_THREADS)")
    assert rows["api_token"]["value"] == "***"  # never shown
    answer = lms.json("config", "set", "threads", "3")
    assert answer["applied"] is False and "LMS_THREADS" in answer["note"] and answer["value"] == 2


def test_model_load_defaults_are_honoured_by_a_jit_load_and_listed(lms):
    shown = lms.json("config", "model", "smollm2", "--context-length", "1024", "--parallel", "2", "--ttl", "90")
    assert shown == {"modelKey": CHAT_MODEL, "loadDefaults": {"context_length": 1024, "parallel": 2, "ttl": 90}}
    listed = {m["modelKey"]: m for m in lms.json("ls")}
    assert listed[CHAT_MODEL]["loadDefaults"] == {"context_length": 1024, "parallel": 2, "ttl": 90}
    lms.run("server", "start", "-p", str(lms.port))
    ask(lms, CHAT_MODEL)
    model = loaded(lms)[CHAT_MODEL]
    assert (model["contextLength"], model["parallel"], model["ttlMs"]) == (1024, 2, 90_000)
    # an explicit load uses them too, unless it says otherwise
    lms.run("load", CHAT_MODEL, "--identifier", "mine", "--parallel", "1", "-y")
    mine = loaded(lms)["mine"]
    assert (mine["contextLength"], mine["parallel"]) == (1024, 1)
    bad = lms.run("config", "model", CHAT_MODEL, "--kv-cache-type", "q2", check=False)
    assert bad.returncode == 1 and "kv_cache_type" in bad.stderr
    assert lms.json("config", "model", CHAT_MODEL, "--reset")["loadDefaults"] == {}
    assert lms.json("config", "model", CHAT_MODEL, "--show")["loadDefaults"] == {}


def test_max_jit_models_keeps_two_and_evicts_the_least_recently_used_at_the_third(lms3):
    lms3.run("config", "set", "max_jit_models", "2")
    lms3.run("load", OTHER, "--identifier", "pinned", "-c", "512", "-y")  # explicit: never evicted
    ask(lms3, CHAT_MODEL)
    ask(lms3, COPY)
    assert set(loaded(lms3)) == {"pinned", CHAT_MODEL, COPY}  # two JIT models stay
    ask(lms3, CHAT_MODEL)  # now COPY is the least recently used
    ask(lms3, OTHER)  # pinned serves it: no JIT load
    assert set(loaded(lms3)) == {"pinned", CHAT_MODEL, COPY}
    lms3.run("unload", "pinned")
    ask(lms3, OTHER)  # a third JIT model: COPY goes
    assert set(loaded(lms3)) == {CHAT_MODEL, OTHER}
