"""API tokens: created and revoked from the CLI, checked by the daemon on every surface.

A token is `sk-lm-<identifier>:<passkey>` (LM Studio's format: 8 and 20 alphanumerics), so LM Studio's SDKs can
split it into their client identifier and passkey. Only a SHA-256 of the passkey is kept, in a 0600 file under
`.internal`; the secret is shown once, when it is created. Two scopes: `inference` may generate and list,
`admin` may also load, unload, download, delete and use the servers of mcp.json. `LMS_API_TOKEN` (the
`api_token` setting) stays valid as an admin token of any format.

With the `database_url` setting the tokens live in that database instead (table `api_tokens`, lms/db.py), read
on every check: several daemons sharing it accept a token created through any of them from the next request on,
and refuse a revoked one likewise.
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
from dataclasses import asdict, astuple, dataclass, replace
from pathlib import Path

from lms import config
from lms.db import Database, configured, dialect_of
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
    """The tokens: a file re-read when it changes on disk (the CLI writes it while the daemon runs), or the
    `api_tokens` table of a shared database. Without arguments: the database of `database_url` when one is
    configured, else the file of this LMS_HOME."""

    def __init__(self, path: Path | None = None, *, database: Database | None = None):
        self.path = path if path is not None or database is not None else tokens_path()  # None: no file
        self._chosen: _FileTokens | _DatabaseTokens | None = None
        if database is not None:
            self._chosen = _DatabaseTokens(database)
        elif path is not None:
            self._chosen = _FileTokens(path)

    @property
    def _backend(self) -> _FileTokens | _DatabaseTokens:
        """Chosen at first use when not given, so that a database that cannot be reached is an LmsError of the
        call (which the CLI prints), not of the constructor."""
        if self._chosen is None:
            database = configured()
            self._chosen = _DatabaseTokens(database) if database is not None else _FileTokens(self.path)
        return self._chosen

    # reading

    def tokens(self) -> list[ApiToken]:
        return sorted(self._backend.all().values(), key=lambda token: token.created)

    def any(self) -> bool:
        return self._backend.exists()

    def verify(self, secret: str) -> ApiToken | None:
        """The token this secret belongs to, or None; `last used` is recorded."""
        match = TOKEN_PATTERN.match(secret.strip())
        if match is None:
            return None
        token = self._backend.find(match["identifier"])
        if token is None or not hmac.compare_digest(token.passkey_sha256, _sha256(match["passkey"])):
            return None
        now = time.time()
        if token.last_used is None or now - token.last_used >= LAST_USED_GRANULARITY_SECONDS:
            self._backend.touch(token.identifier, now)
        return token

    # writing

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
        if not self._backend.add(token):
            raise LmsError.conflict(f"A token named '{name}' exists already; revoke it first or pick another "
                                    "name.", "name", code="token_exists")
        return token, f"sk-lm-{identifier}:{passkey}"

    def revoke(self, name: str) -> ApiToken:
        """Revoke by name or by `sk-lm-<identifier>`."""
        identifier = name[len("sk-lm-"):] if name.startswith("sk-lm-") else None
        revoked = self._backend.remove(name, identifier)
        if not revoked:
            raise LmsError.not_found(f"No token named '{name}'. See `lms server token ls`.", "name")
        return revoked[0]


class _FileTokens:
    """The 0600 JSON file: re-read when its mtime or size changes; written under a lock, re-read, replaced."""

    def __init__(self, path: Path):
        self.path = path
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of what `_tokens` holds
        self._tokens: dict[str, ApiToken] = {}

    def all(self) -> dict[str, ApiToken]:
        self._refresh()
        return dict(self._tokens)

    def exists(self) -> bool:
        self._refresh()
        return bool(self._tokens)

    def find(self, identifier: str) -> ApiToken | None:
        self._refresh()
        return self._tokens.get(identifier)

    def touch(self, identifier: str, now: float) -> None:
        def touch(tokens: dict[str, ApiToken]) -> None:
            if identifier in tokens:  # revoked meanwhile: nothing to record
                tokens[identifier] = replace(tokens[identifier], last_used=now)

        self._update(touch)

    def add(self, token: ApiToken) -> bool:
        added: list[bool] = []

        def add(tokens: dict[str, ApiToken]) -> None:
            if not any(existing.name == token.name for existing in tokens.values()):
                tokens[token.identifier] = token
                added.append(True)

        self._update(add)
        return bool(added)

    def remove(self, name: str, identifier: str | None) -> list[ApiToken]:
        revoked: list[ApiToken] = []

        def remove(tokens: dict[str, ApiToken]) -> None:
            for key, token in list(tokens.items()):
                if token.name == name or key == identifier:
                    revoked.append(tokens.pop(key))

        self._update(remove)
        return revoked

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
        """CLI and daemon alike: under a lock, re-read, atomic replace."""
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


def _tokens_v1(db: Database) -> None:
    real = dialect_of(db).float_type
    db.execute(f"""CREATE TABLE api_tokens (
        identifier TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, scope TEXT NOT NULL, created {real} NOT NULL,
        passkey_sha256 TEXT NOT NULL, last_used {real})""")


# Forward-only, as the response store's (lms/conversation/store.py): never edit a released one.
TOKEN_MIGRATIONS = [_tokens_v1]
_COLUMNS = "name, identifier, scope, created, passkey_sha256, last_used"  # ApiToken's fields, in order


class _DatabaseTokens:
    """The `api_tokens` table, read on every check: no cache another daemon's change could miss."""

    def __init__(self, database: Database):
        self.db = database
        self.db.migrate("api_tokens", TOKEN_MIGRATIONS)

    def all(self) -> dict[str, ApiToken]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM api_tokens").fetchall()
        return {row[1]: ApiToken(*row) for row in rows}

    def exists(self) -> bool:
        return self.db.execute("SELECT 1 FROM api_tokens LIMIT 1").fetchone() is not None

    def find(self, identifier: str) -> ApiToken | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE identifier = ?", (identifier,)).fetchone()
        return ApiToken(*row) if row else None

    def touch(self, identifier: str, now: float) -> None:
        self.db.execute("UPDATE api_tokens SET last_used = ? WHERE identifier = ?", (now, identifier))

    def add(self, token: ApiToken) -> bool:
        """False when the name is taken (the table's UNIQUE name decides, also between two daemons)."""
        return self.db.execute(f"INSERT INTO api_tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                               "ON CONFLICT DO NOTHING", astuple(token)).rowcount > 0

    def remove(self, name: str, identifier: str | None) -> list[ApiToken]:
        with self.db.transaction():
            doomed = self.db.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE name = ? OR identifier = ?",
                                     (name, identifier)).fetchall()
            self.db.execute("DELETE FROM api_tokens WHERE name = ? OR identifier = ?", (name, identifier))
        return [ApiToken(*row) for row in doomed]


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
