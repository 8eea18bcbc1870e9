"""API tokens: created and revoked from the CLI, checked by the daemon on every surface.

A token is `sk-lm-<identifier>:<passkey>` (LM Studio's format: 8 and 20 alphanumerics), so LM Studio's SDKs can
split it into their client identifier and passkey. Only a SHA-256 of the passkey is kept, in a 0600 file under
`.internal`; the secret is shown once, when it is created. Two scopes: `inference` may generate and list,
`admin` may also load, unload, download, delete and use the servers of mcp.json. `LMS_API_TOKEN` (the
`api_token` setting) stays valid as an admin token of any format.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import string
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lms import config
from lms.errors import LmsError

SCOPES = ("inference", "admin")
TOKEN_PATTERN = re.compile(r"^sk-lm-(?P<identifier>[A-Za-z0-9]{8}):(?P<passkey>[A-Za-z0-9]{20})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
ALPHANUMERICS = string.ascii_letters + string.digits
LAST_USED_GRANULARITY_SECONDS = 60  # `last used` is written at most this often per token: no write per request


def tokens_path() -> Path:
    return config.internal_dir() / "api-tokens.json"


@dataclass(frozen=True)
class ApiToken:
    name: str
    identifier: str
    scope: str
    created: float
    passkey_sha256: str
    last_used: float | None = None

    def public(self) -> dict:
        """What `lms server token ls` shows: never the secret, nor its hash."""
        return {"name": self.name, "identifier": f"sk-lm-{self.identifier}", "scope": self.scope,
                "created": self.created, "last_used": self.last_used}


@dataclass(frozen=True)
class Caller:
    """Who made a request: the token's name (or `LMS_API_TOKEN`) and its scope."""
    name: str
    scope: str

    @property
    def admin(self) -> bool:
        return self.scope == "admin"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHANUMERICS) for _ in range(length))


class TokenStore:
    """The token file, re-read when it changes on disk (the CLI writes it while the daemon runs)."""

    def __init__(self, path: Path | None = None):
        self.path = path or tokens_path()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of what `_tokens` holds
        self._tokens: dict[str, ApiToken] = {}

    # reading

    def tokens(self) -> list[ApiToken]:
        self._refresh()
        return sorted(self._tokens.values(), key=lambda token: token.created)

    def any(self) -> bool:
        self._refresh()
        return bool(self._tokens)

    def verify(self, secret: str) -> ApiToken | None:
        """The token this secret belongs to, or None; `last used` is recorded."""
        match = TOKEN_PATTERN.match(secret.strip())
        if match is None:
            return None
        self._refresh()
        token = self._tokens.get(match["identifier"])
        if token is None or not hmac.compare_digest(token.passkey_sha256, _sha256(match["passkey"])):
            return None
        now = time.time()
        if token.last_used is None or now - token.last_used >= LAST_USED_GRANULARITY_SECONDS:

            def touch(tokens: dict[str, ApiToken]) -> None:
                if token.identifier in tokens:  # revoked meanwhile: nothing to record
                    tokens[token.identifier] = replace(tokens[token.identifier], last_used=now)

            self._update(touch)
        return token

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except OSError:
            self._seen, self._tokens = None, {}
            return
        if self._seen != (stat.st_mtime_ns, stat.st_size):
            self._tokens = self._read()
            self._seen = (stat.st_mtime_ns, stat.st_size)

    def _read(self) -> dict[str, ApiToken]:
        try:
            entries = json.loads(self.path.read_text()).get("tokens", [])
            return {entry["identifier"]: ApiToken(**entry) for entry in entries}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # A damaged file must not open the server: refuse every token until it is repaired.
            raise LmsError.unavailable(f"The API token file {self.path} cannot be read ({exc}); fix or remove it.",
                                    code="token_file_unreadable") from exc

    # writing (CLI and daemon alike: under a lock, re-read, atomic replace)

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _update(self, change) -> None:
        with self._locked():
            tokens = self._read()
            change(tokens)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"tokens": [asdict(token) for token in tokens.values()]}, out, indent=2)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            self._seen = None

    def create(self, name: str, scope: str = "inference") -> tuple[ApiToken, str]:
        """A new token and its secret (the only time the secret exists outside the caller's hands)."""
        if not NAME_PATTERN.match(name):
            raise LmsError.invalid("A token name is 1 to 64 letters, digits, spaces, '.', '_' or '-', starting "
                                   "with a letter or digit.", "name")
        if scope not in SCOPES:
            raise LmsError.invalid(f"Unknown scope '{scope}': use one of {', '.join(SCOPES)}.", "scope")
        identifier, passkey = _random(8), _random(20)
        token = ApiToken(name=name, identifier=identifier, scope=scope, created=time.time(),
                         passkey_sha256=_sha256(passkey))

        def add(tokens: dict[str, ApiToken]) -> None:
            if any(existing.name == name for existing in tokens.values()):
                raise LmsError.conflict(f"A token named '{name}' exists already; revoke it first or pick another "
                                        "name.", "name", code="token_exists")
            tokens[identifier] = token

        self._update(add)
        return token, f"sk-lm-{identifier}:{passkey}"

    def revoke(self, name: str) -> ApiToken:
        revoked: list[ApiToken] = []

        def remove(tokens: dict[str, ApiToken]) -> None:
            for identifier, token in list(tokens.items()):
                if token.name == name or f"sk-lm-{identifier}" == name:
                    revoked.append(tokens.pop(identifier))

        self._update(remove)
        if not revoked:
            raise LmsError.not_found(f"No token named '{name}'. See `lms server token ls`.", "name")
        return revoked[0]


class Authenticator:
    """Decides who a secret belongs to: the `api_token` setting (admin) or a created token."""

    def __init__(self, store: TokenStore, setting_token: str = ""):
        self.store, self.setting_token = store, setting_token

    def required(self) -> bool:
        return bool(self.setting_token) or self.store.any()

    def caller(self, secret: str) -> Caller | None:
        if not secret:
            return None
        if self.setting_token and hmac.compare_digest(secret.encode(), self.setting_token.encode()):
            return Caller("LMS_API_TOKEN", "admin")
        token = self.store.verify(secret)
        return Caller(token.name, token.scope) if token else None
