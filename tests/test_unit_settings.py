"""Settings: defaults < LMS_HOME/settings.json < LMS_* variables, and a bad value stops the daemon with a message
that names the file or the variable and the field."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest

from lms.settings import Settings, SettingsError


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty LMS_HOME and no LMS_* variable but LMS_HOME, whatever the machine running the tests has set."""
    for name in list(os.environ):
        if name.upper().startswith("LMS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LMS_HOME", str(tmp_path))
    return tmp_path


def write_settings(home, values) -> str:
    path = home / "settings.json"
    path.write_text(values if isinstance(values, str) else json.dumps(values))
    return f"settings.json ({path})"


def test_defaults(home):
    settings = Settings.load()
    assert settings == Settings()
    assert (settings.jit_loading, settings.jit_ttl_seconds, settings.guardrails, settings.default_port,
            settings.default_bind, settings.max_body_bytes, settings.reasoning_field, settings.api_token,
            settings.allow_remote_mcp, settings.mcp_call_timeout_seconds) == (
        True, 3600, "relaxed", 1234, "127.0.0.1", 32 * 1024 * 1024, "reasoning", "", False, 60.0)


def test_file_values_are_read(home):
    write_settings(home, {"threads": 3, "guardrails": "strict", "jit_loading": False, "api_token": "s3cret",
                          "reasoning_field": "reasoning_content", "mcp_call_timeout_seconds": 5})
    settings = Settings.load()
    assert (settings.threads, settings.guardrails, settings.jit_loading, settings.api_token) == (
        3, "strict", False, "s3cret")
    assert settings.reasoning_field == "reasoning_content" and settings.mcp_call_timeout_seconds == 5.0


def test_environment_overrides_the_file_and_ignores_case(home, monkeypatch):
    write_settings(home, {"threads": 3, "default_port": 4000, "api_token": "from-file"})
    monkeypatch.setenv("LMS_THREADS", "8")
    monkeypatch.setenv("lms_default_port", "5000")
    settings = Settings.load()
    assert (settings.threads, settings.default_port, settings.api_token) == (8, 5000, "from-file")


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("YES", True), ("on", True),
                                                 ("0", False), ("false", False), ("No", False), ("off", False)])
def test_boolean_variables(home, monkeypatch, value, expected):
    monkeypatch.setenv("LMS_ALLOW_REMOTE_MCP", value)
    monkeypatch.setenv("LMS_JIT_LOADING", value)
    settings = Settings.load()
    assert settings.allow_remote_mcp is expected and settings.jit_loading is expected


def test_a_boolean_variable_that_is_neither_is_an_error(home, monkeypatch):
    monkeypatch.setenv("LMS_JIT_LOADING", "maybe")
    with pytest.raises(SettingsError, match=r"^LMS_JIT_LOADING: 'jit_loading' must be true or false .*got \"maybe\""):
        Settings.load()


def test_malformed_json_names_the_file(home):
    where = write_settings(home, '{"threads": 2,')
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    assert str(caught.value).startswith(f"{where}: not valid JSON")


def test_a_file_that_is_not_an_object_is_an_error(home):
    where = write_settings(home, "[1, 2]")
    with pytest.raises(SettingsError, match="must be a JSON object"):
        Settings.load()
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    assert str(caught.value).startswith(where)


def test_a_wrong_type_in_the_file_names_the_file_and_the_field(home):
    where = write_settings(home, {"threads": "abc"})
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    assert str(caught.value) == f"{where}: 'threads' must be an integer, got \"abc\""


def test_a_bad_variable_names_the_variable_and_the_field(home, monkeypatch):
    monkeypatch.setenv("LMS_THREADS", "abc")
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    assert str(caught.value) == "LMS_THREADS: 'threads' must be an integer, got \"abc\""


def test_a_bad_file_value_is_an_error_even_while_a_variable_overrides_it(home, monkeypatch):
    where = write_settings(home, {"threads": "abc"})
    monkeypatch.setenv("LMS_THREADS", "4")
    with pytest.raises(SettingsError, match=f"^{re.escape(where)}: 'threads'"):
        Settings.load()


def test_api_token_in_a_valid_file_is_read(home):
    write_settings(home, {"api_token": "tok-123", "allow_mcp_json": True})
    settings = Settings.load()
    assert settings.api_token == "tok-123" and settings.allow_mcp_json is True


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("guardrails", "loose", "must be one of 'off', 'relaxed' or 'strict'"),
    ("reasoning_field", "thinking", "must be one of 'reasoning' or 'reasoning_content'"),
    ("default_port", 0, "must be at least 1"),
    ("default_port", 70000, "must be at most 65535"),
    ("threads", -1, "must be at least 0"),
    ("responses_max_count", -5, "must be at least 0"),
    ("default_parallel", 0, "must be at least 1"),
    ("mcp_connect_timeout_seconds", 0, "must be greater than 0"),
    ("jit_ttl_seconds", 1.5, "must be an integer"),
    ("api_token", None, "must be a string"),
])
def test_invalid_values_are_rejected(home, monkeypatch, field, value, problem):
    where = write_settings(home, {field: value})
    with pytest.raises(SettingsError) as caught:
        Settings.load()
    assert str(caught.value) == f"{where}: '{field}' {problem}, got {json.dumps(value)}"
    (home / "settings.json").unlink()
    if value is not None:
        monkeypatch.setenv(f"LMS_{field.upper()}", str(value))
        with pytest.raises(SettingsError, match=f"^LMS_{field.upper()}: '{field}' {problem}"):
            Settings.load()


def test_unknown_keys_are_ignored_with_a_warning(home, caplog):
    where = write_settings(home, {"threads": 2, "downloadsFolder": "/x", "treads": 4})
    with caplog.at_level(logging.WARNING, logger="lms.config"):
        settings = Settings.load()
    assert settings.threads == 2
    assert f"{where}: ignoring unknown keys: downloadsFolder, treads" in caplog.text


def test_constructing_settings_reads_neither_the_environment_nor_the_file(home, monkeypatch):
    write_settings(home, {"threads": 3})
    monkeypatch.setenv("LMS_GUARDRAILS", "strict")
    settings = Settings(jit_ttl_seconds=900)
    assert (settings.jit_ttl_seconds, settings.threads, settings.guardrails) == (900, 0, "relaxed")
    with pytest.raises(ValueError):
        Settings(no_such_setting=1)


def test_the_daemon_stops_with_the_message_and_the_cli_shows_it(lms):
    """End to end: `lms daemon up` and a command that starts the daemon on its own fail fast, saying why."""
    path = lms.home / "settings.json"
    path.write_text('{"threads": "abc"}')
    result = lms.run("daemon", "up", check=False, timeout=60)
    assert result.returncode != 0
    assert f"settings.json ({path}): 'threads' must be an integer, got \"abc\"" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout

    path.write_text("{}")
    lms.settings["LMS_GUARDRAILS"] = "loose"
    result = lms.run("ps", "--json", check=False, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "LMS_GUARDRAILS: 'guardrails' must be one of 'off', 'relaxed' or 'strict', got \"loose\"" in result.stderr
    assert not (lms.home / ".internal" / "daemon.pid").exists()
