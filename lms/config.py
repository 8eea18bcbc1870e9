"""Where lms keeps its state (LMS_HOME and the paths in it). The settings that shape the daemon are in
lms/settings.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("LMS_HOME") or Path.home() / ".lmstudio").expanduser()


def models_dir() -> Path:
    return home() / "models"


def _private_dir(path: Path) -> Path:
    """A folder only its owner may enter: it holds the control socket, the pid file, logs of prompts."""
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def internal_dir() -> Path:
    return _private_dir(home() / ".internal")


def logs_dir() -> Path:
    return _private_dir(home() / "server-logs")


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
