"""The registered upstreams, kept in LMS_HOME/upstreams.json: a name, the server's OpenAI base URL and, optionally,
the environment variable that holds its API key (never the key itself)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lms import config
from lms.errors import LmsError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str  # the OpenAI base URL, e.g. http://host:8000/v1
    api_key_env: str | None = None

    def public(self) -> dict:
        return {"name": self.name, "url": self.url, "apiKeyEnv": self.api_key_env}


def path() -> Path:
    return config.home() / "upstreams.json"


def base_url(url: str) -> str:
    """The OpenAI base URL of what the user gave: http(s) only; a bare server address gets /v1."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LmsError.invalid(f"'{url}' is not an http(s) URL of an OpenAI-compatible server "
                               "(e.g. http://host:8000/v1).", "url")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise LmsError.invalid("The upstream URL takes no credentials, query or fragment: give the API key with "
                               "--api-key-env VAR.", "url")
    path_part = parts.path.rstrip("/") or "/v1"
    return f"{parts.scheme}://{parts.netloc}{path_part}"


def validated(name: str, url: str, api_key_env: str | None) -> Upstream:
    if not NAME.match(name or ""):
        raise LmsError.invalid(f"'{name}' is not an upstream name: letters, digits, '_', '.' and '-', at most 64, "
                               "and no '/' (its models are named NAME/<model>).", "name")
    if api_key_env is not None and not ENV_VAR.match(api_key_env):
        raise LmsError.invalid(f"'{api_key_env}' is not an environment variable name.", "api_key_env")
    return Upstream(name, base_url(url), api_key_env or None)


def load() -> dict[str, Upstream]:
    try:
        data = json.loads(path().read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise LmsError.invalid(f"{path()} is not valid JSON ({exc}); fix or remove it.", "upstreams") from None
    found = {}
    for item in data.get("upstreams", []) if isinstance(data, dict) else []:
        upstream = validated(str(item.get("name")), str(item.get("url")), item.get("api_key_env"))
        found[upstream.name] = upstream
    return found


def save(upstreams: dict[str, Upstream]) -> None:
    """Written whole to a temporary file, then renamed: a crash never leaves half a file."""
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    with config.open_private(temporary, "a") as file:
        file.truncate(0)
        file.write(json.dumps({"upstreams": [asdict(u) for u in upstreams.values()]}, indent=2) + "\n")
    os.replace(temporary, target)


def mtime() -> float | None:
    try:
        return path().stat().st_mtime_ns
    except FileNotFoundError:
        return None
