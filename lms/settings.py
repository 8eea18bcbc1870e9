"""The settings that shape the daemon: one typed schema, read from defaults < `LMS_HOME/settings.json` <
`LMS_<FIELD>` environment variables (any case). Each field is documented, with its variable and CLI flag, in
docs/configuration.md. A value that is not valid stops the daemon with a SettingsError naming the file or the
variable and the field: it never falls back to a default silently.

Importing pydantic-settings costs ~150 ms, so the CLI's fast paths import lms.config (paths) and not this module.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from lms import config
from lms.config import home
from lms.errors import LmsError

log = logging.getLogger("lms.config")


class SettingsError(Exception):
    """settings.json or an `LMS_*` variable holds something that is not a valid setting; the message names the
    file or the variable and the field, so the daemon can stop with it instead of running on defaults."""


count = Annotated[int, Field(ge=0)]
positive = Annotated[int, Field(ge=1)]
port = Annotated[int, Field(ge=1, le=65535)]
seconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """The daemon's settings. `Settings.load()` reads defaults < settings.json < `LMS_<FIELD>` (any case);
    `Settings(field=value)` is the defaults and those values only: no surprise from the machine in tests."""

    model_config = SettingsConfigDict(env_prefix="LMS_", case_sensitive=False, extra="forbid")

    jit_loading: bool = True
    jit_ttl_seconds: count = 3600  # 0: JIT-loaded models never unload for being idle
    jit_auto_evict: bool = True  # keep at most max_jit_models JIT-loaded models; explicit loads are never evicted
    max_jit_models: positive = 1  # JIT-loaded models kept at once under auto-evict; the least recently used goes
    # off, relaxed (fits this machine's memory) or strict (fits what is free now)
    guardrails: Literal["off", "relaxed", "strict"] = "relaxed"
    memory_limit_bytes: count = 0  # memory lms may use for models; 0: the machine's
    default_context_length: positive = 4096
    # predictions a llama.cpp model runs at once (continuous batching), unless load says
    default_parallel: positive = 4
    # requests that may wait for a busy model beyond its parallel slots; more are answered 503 with Retry-After
    max_queued_requests: count = 64
    max_body_bytes: count = 32 * 1024 * 1024
    # KV states of stored conversations kept on disk (LMS_HOME/kv-cache) across restarts and reloads, at most this
    # many bytes for every model together, least recently used out; 0: none
    kv_disk_cache_bytes: count = 2 * 1024 ** 3
    # one worker process kept started, its llama.cpp engine imported, so the next load skips that (~0.3 s; ~45 MB)
    spare_worker: bool = True
    threads: count = 0  # 0: one per physical core
    default_port: port = 1234
    default_bind: str = "127.0.0.1"
    # Host names the HTTP API answers besides loopback ones and the bound address (comma-separated): a name this
    # machine is reached by on the network. Other Host headers get 403 (DNS rebinding).
    allowed_hosts: str = ""
    # Hosts that image URLs and remote MCP servers may be at although their addresses are not public (loopback,
    # private networks), comma-separated: e.g. localhost for an MCP server on this machine.
    allowed_fetch_hosts: str = ""
    # Web origins allowed to call the HTTP API (comma-separated, e.g. http://localhost:3000); `--cors` allows all.
    cors_origins: str = ""
    responses_max_age_days: count = 30  # stored /v1/responses older than this are dropped
    responses_max_count: count = 10_000  # and beyond this many, the oldest go
    # and beyond this many bytes of stored JSON, the oldest go (the newest response always stays)
    responses_max_bytes: count = 256 * 1024 * 1024
    reasoning_field: Literal["reasoning", "reasoning_content"] = "reasoning"  # or DeepSeek's reasoning_content
    api_token: str = ""  # an admin API token (besides `lms server token create`): every surface then requires one
    allow_remote_mcp: bool = False  # /v1/responses may call MCP servers a request names (tools of type "mcp")
    allow_mcp_json: bool = False  # HTTP requests with an admin token may use the servers of mcp.json
    download_reserve_bytes: count = 64 * 1024 * 1024  # free disk space a download must leave
    # The Ray cluster `lms load --replicas` places models on (`lms cluster connect`; env LMS_CLUSTER): a Ray address
    # such as host:6379, ray://host:10001, or auto for a `ray start` head on this machine. Empty: no cluster.
    cluster_address: str = ""
    mcp_connect_timeout_seconds: seconds = 10.0
    mcp_call_timeout_seconds: seconds = 60.0
    # postgresql://user:password@host:port/db: responses, API tokens and the download journal live in that database,
    # shared by every daemon pointed at it (lms/db.py); empty: SQLite and JSON files in LMS_HOME
    database_url: str = ""

    def fetch_hosts(self) -> set[str]:
        return {host.strip().lower() for host in self.allowed_fetch_hosts.split(",") if host.strip()}

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings,)  # load() reads the file and the environment itself, to name them in errors

    @classmethod
    def load(cls) -> Settings:
        """The settings the daemon runs with; raises SettingsError rather than ignoring a bad value."""
        file = home() / "settings.json"
        in_file = f"settings.json ({file})"
        from_file = _read_settings_file(file, in_file, set(cls.model_fields))
        from_env = EnvSettingsSource(cls)()  # LMS_<FIELD>, matched case-insensitively (model_config)
        if os.environ.get("LMS_CLUSTER") and "cluster_address" not in from_env:  # the documented short name
            from_env["cluster_address"] = os.environ["LMS_CLUSTER"]
        variables = {name.lower(): name for name in os.environ}

        def origin(field: str) -> str:
            return variables.get(f"lms_{field}", in_file) if field in from_env else in_file

        # The file on its own first: a bad value there is an error even while a variable overrides it.
        cls._validated(from_file, lambda field: in_file)
        return cls._validated({**from_file, **from_env}, origin)

    @classmethod
    def _validated(cls, values: dict, origin) -> Settings:
        try:
            return cls(**values)
        except ValidationError as exc:
            problems: dict[str, list[str]] = {}
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else ""
                problems.setdefault(origin(field), []).append(_problem(field, error))
            raise SettingsError("; ".join(f"{where}: {'; '.join(each)}" for where, each in problems.items())) \
                from None


def _read_settings_file(file: Path, where: str, known: set[str]) -> dict:
    try:
        text = file.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{where}: cannot be read: {exc}") from None
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise SettingsError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise SettingsError(f"{where}: must be a JSON object of settings, got {type(values).__name__}")
    unknown = sorted(set(values) - known)
    if unknown:  # LM Studio's own keys may share the file: not an error, but a typo should be visible
        log.warning("%s: ignoring unknown keys: %s", where, ", ".join(unknown))
    return {key: value for key, value in values.items() if key in known}


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false (or 1/0, yes/no, on/off)",
          "string": "a string"}
_BOUNDS = {"greater_than_equal": "at least", "greater_than": "greater than", "less_than_equal": "at most"}


def _problem(field: str, error: dict) -> str:
    """One validation error in words: `'threads' must be an integer, got "abc"`."""
    kind, ctx = error["type"], error.get("ctx") or {}
    base = kind.split("_")[0]
    if base in _KINDS and kind.endswith(("_parsing", "_type", "_from_float")):
        need = f"must be {_KINDS[base]}"
    elif kind == "literal_error":
        need = f"must be one of {ctx['expected']}"
    elif kind in _BOUNDS:
        need = f"must be {_BOUNDS[kind]} {next(iter(ctx.values())):g}"
    elif kind == "extra_forbidden":
        need = "is not a setting"
    else:
        need = error["msg"][0].lower() + error["msg"][1:]
    try:
        got = json.dumps(error["input"])
    except (TypeError, ValueError):
        got = repr(error["input"])
    return f"'{field}' {need}, got {got}"




# When a changed setting takes effect in a running daemon (`lms config set`): "live" settings are read where they
# are used, from the daemon's one Settings object, so changing that object is enough; "server" ones are read when
# the HTTP server starts (`lms server stop`, then `lms server start`); "daemon" ones when the daemon starts.
LIVE, SERVER, DAEMON = "live", "server", "daemon"
APPLIES: dict[str, str] = {
    "jit_loading": LIVE, "jit_ttl_seconds": LIVE, "jit_auto_evict": LIVE, "max_jit_models": LIVE,
    "guardrails": LIVE, "memory_limit_bytes": LIVE, "default_context_length": LIVE, "default_parallel": LIVE,
    "max_queued_requests": LIVE, "max_body_bytes": LIVE, "threads": LIVE, "reasoning_field": LIVE,
    "allowed_fetch_hosts": LIVE, "cluster_address": LIVE, "kv_disk_cache_bytes": LIVE,
    "spare_worker": LIVE,
    # `lms server start` reads these itself each time it runs
    "default_port": SERVER, "default_bind": SERVER, "allowed_hosts": SERVER, "cors_origins": SERVER,
    "allow_remote_mcp": SERVER, "allow_mcp_json": SERVER,
    "responses_max_age_days": DAEMON, "responses_max_count": DAEMON, "responses_max_bytes": DAEMON,
    "api_token": DAEMON, "download_reserve_bytes": DAEMON, "mcp_connect_timeout_seconds": DAEMON,
    "mcp_call_timeout_seconds": DAEMON, "database_url": DAEMON,
}
SECRET = {"api_token", "database_url"}  # never shown whole


def restart_note(key: str) -> str | None:
    """What a changed setting still needs before it takes effect, in words; None when it applies at once."""
    return {SERVER: "takes effect after restarting the server (lms server stop, then lms server start)",
            DAEMON: "takes effect after restarting the daemon (lms daemon down, then any command)"}.get(
        APPLIES.get(key, DAEMON))


def validated_value(key: str, value: object) -> object:
    """`value` (a JSON value, or the text a command line gave) as setting `key` holds it, checked by the schema;
    LmsError (invalid) naming the key and the problem otherwise."""
    if key not in Settings.model_fields:
        raise LmsError.invalid(f"'{key}' is not a setting. Settings: {', '.join(Settings.model_fields)}.", "key",
                               code="unknown_setting")
    try:
        return getattr(Settings(**{key: value}), key)
    except ValidationError as exc:
        raise LmsError.invalid("; ".join(_problem(key, error) for error in exc.errors()), key,
                               code="invalid_setting") from None


def persist_setting(key: str, value: object | None) -> None:
    """Set (or, with None, remove) one key of settings.json, keeping the others; written whole, then renamed."""
    path = config.settings_path()
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        values = {}
    except ValueError as exc:
        raise LmsError.invalid(f"{path} is not valid JSON ({exc}); fix it first.", "settings") from None
    if not isinstance(values, dict):
        raise LmsError.invalid(f"{path} is not a JSON object of settings; fix it first.", "settings")
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with config.open_private(temporary, "a") as file:
        file.truncate(0)
        file.write(json.dumps(values, indent=2) + "\n")
    os.replace(temporary, path)


def file_values() -> dict:
    """The settings settings.json gives now (its other keys left out); {} when it cannot be read."""
    try:
        values = json.loads(config.settings_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in values.items() if k in Settings.model_fields} if isinstance(values, dict) else {}


def env_variable(key: str) -> str | None:
    """The variable (LMS_<KEY>, any case) that sets `key` in this process's environment, if one does."""
    wanted = f"lms_{key}"
    found = next((name for name in os.environ if name.lower() == wanted), None)
    if found is None and key == "cluster_address" and "LMS_CLUSTER" in os.environ:
        return "LMS_CLUSTER"
    return found
