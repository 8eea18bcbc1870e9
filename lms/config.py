"""Where lms keeps its state, and the settings that shape the daemon.

Every setting has an `LMS_*` environment variable; `settings.json` in LMS_HOME overrides the defaults and
the environment overrides both.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("LMS_HOME") or Path.home() / ".lmstudio").expanduser()


def models_dir() -> Path:
    return home() / "models"


def internal_dir() -> Path:
    path = home() / ".internal"
    path.mkdir(parents=True, exist_ok=True)
    return path


def logs_dir() -> Path:
    path = home() / "server-logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def socket_path(for_home: Path | None = None) -> Path:
    """The daemon's control socket. Unix socket paths are limited to ~107 bytes, so a deep LMS_HOME
    falls back to a short, per-home name in the temp directory."""
    base = for_home or home()
    path = base / ".internal" / "daemon.sock"
    if len(str(path)) < 100:
        return path
    digest = hashlib.sha1(str(base.resolve()).encode()).hexdigest()[:16]
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"lms-{digest}.sock"


def pid_path() -> Path:
    return internal_dir() / "daemon.pid"


def server_config_path() -> Path:
    """The last HTTP server configuration, as LM Studio keeps it (`{port, networkInterface, cors}`)."""
    return internal_dir() / "http-server-config.json"


@dataclass
class Settings:
    jit_loading: bool = True
    jit_ttl_seconds: int = 3600
    jit_auto_evict: bool = True  # keep at most one JIT-loaded model; explicitly loaded ones are never evicted
    guardrails: str = "relaxed"  # off, relaxed (fits this machine's memory) or strict (fits what is free now)
    memory_limit_bytes: int = 0  # memory lms may use for models; 0: the machine's
    default_context_length: int = 4096
    default_parallel: int = 4  # predictions a llama.cpp model runs at once (continuous batching), unless load says
    max_body_bytes: int = 32 * 1024 * 1024
    threads: int = 0  # 0: one per physical core
    default_port: int = 1234
    default_bind: str = "127.0.0.1"
    responses_max_age_days: int = 30  # stored /v1/responses older than this are dropped
    responses_max_count: int = 10_000  # and beyond this many, the oldest go
    reasoning_field: str = "reasoning"  # chat completions: "reasoning", or "reasoning_content" (DeepSeek style)
    api_token: str = ""  # when set, the HTTP API requires `Authorization: Bearer <token>`
    allow_remote_mcp: bool = False  # /v1/responses may call MCP servers a request names (tools of type "mcp")
    allow_mcp_json: bool = False  # HTTP API requests may use the servers of mcp.json (needs api_token too)
    download_reserve_bytes: int = 64 * 1024 * 1024  # free disk space a download must leave
    mcp_connect_timeout_seconds: float = 10.0
    mcp_call_timeout_seconds: float = 60.0

    @classmethod
    def load(cls) -> Settings:
        values: dict = {}
        file = home() / "settings.json"
        if file.exists():
            try:
                values.update(json.loads(file.read_text()))
            except (OSError, ValueError):
                pass
        settings = cls()
        for field in fields(cls):
            value = values.get(field.name)
            env = os.environ.get(f"LMS_{field.name.upper()}")
            if env is not None:
                value = env
            if value is None:
                continue
            kind = type(getattr(settings, field.name))
            if kind is bool and isinstance(value, str):
                value = value.lower() in ("1", "true", "yes", "on")
            setattr(settings, field.name, kind(value))
        return settings


def read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)
