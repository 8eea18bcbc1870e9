"""Where lms keeps its state (LMS_HOME and the paths in it). The settings that shape the daemon are in
lms/settings.py."""

from __future__ import annotations

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


def open_private(path: Path, mode: str = "a", encoding: str | None = None):
    """A file opened for appending that only its owner may read: logs hold prompts and tool output. A file made
    before this rule (or by another umask) is narrowed to 0600 too."""
    if mode not in ("a", "ab"):
        raise ValueError("open_private appends: mode 'a' or 'ab'")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        return os.fdopen(descriptor, mode, encoding=None if "b" in mode else (encoding or "utf-8"))
    except BaseException:
        os.close(descriptor)
        raise


def restrict_to_owner(path: Path) -> None:
    """Narrow an existing file that holds secrets (settings.json with api_token, mcp.json with headers) to 0600;
    nothing happens for a file that is missing or not the user's own."""
    try:
        status = path.stat()
        if status.st_uid == os.getuid() and status.st_mode & 0o077:
            path.chmod(0o600)
    except OSError:
        pass


def settings_path() -> Path:
    return home() / "settings.json"


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
    import hashlib  # rarely needed, and its OpenSSL import costs every command ~5 ms

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
    """Replace `path` whole (never half written), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(json.dumps(value, indent=2))
    os.replace(tmp, path)
