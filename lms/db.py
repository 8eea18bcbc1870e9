"""The SQL seam of the stores that keep state: one connection type with two dialects, SQLite (a file in
LMS_HOME: the response store's default) and PostgreSQL (the `database_url` setting: state shared by several front
daemons: responses, API tokens, the download journal).

Each store writes its SQL once, with `?` placeholders, and its schema as one ordered list of migrations that runs
on both. Where the dialects differ the difference is an attribute of `Dialect`, named where it is used:

- `float_type`: PostgreSQL's REAL is single precision (a Unix time would lose seconds), so timestamps there are
  DOUBLE PRECISION; SQLite gives both names the same REAL affinity.
- `rowid_column`: SQLite tables have an implicit `rowid` in insertion order; PostgreSQL's get a real one.
- `for_share` / `for_update`: row locks, PostgreSQL only, where two daemons write at once; SQLite's
  `BEGIN IMMEDIATE` lets one writer in at a time already.
- where the schema version lives: SQLite's `PRAGMA user_version` (one store per file, as before), PostgreSQL's
  `lms_schema` table (one row per store: the stores share one database), migrated under an advisory lock so two
  daemons starting together migrate once.

The URL may carry a password: it is never logged nor put in an error (`mask`). Connecting gives up after
CONNECT_TIMEOUT_SECONDS (unless the URL sets `connect_timeout`) and a statement after STATEMENT_TIMEOUT_MS: a
database that is down or hangs is an error, never a daemon that hangs.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from lms.errors import Kind, LmsError

log = logging.getLogger("lms.db")

CONNECT_TIMEOUT_SECONDS = 5
TCP_USER_TIMEOUT_MS = 15_000  # unacknowledged data on a dead link: the connection fails instead of waiting
STATEMENT_TIMEOUT_MS = 15_000  # a statement (lock waits included) the server has not finished by then fails
RECONNECT_EVERY_SECONDS = 2.0
SCHEMA_LOCK = 0x6C6D7300  # pg_advisory_xact_lock key of migrations ("lms\0")


class DatabaseError(LmsError):
    """The database of `database_url` cannot be reached or used: the daemon does not start, with this message
    (the password masked); a request that needs it is answered 503."""

    def __init__(self, message: str):
        super().__init__(message, Kind.UNAVAILABLE, code="database_unavailable")


@dataclass(frozen=True)
class Dialect:
    name: str
    float_type: str
    rowid_column: str  # appended to a CREATE TABLE's columns
    for_share: str  # appended to a SELECT that reads rows a concurrent writer must not delete meanwhile
    for_update: str  # appended to a SELECT of rows about to be changed or deleted


SQLITE = Dialect("sqlite", "REAL", "", "", "")
POSTGRES = Dialect("postgresql", "DOUBLE PRECISION", ", rowid BIGSERIAL", " FOR SHARE", " FOR UPDATE")

Migration = Callable[["Database"], None]  # one step of a store's schema: brings it from version i to i + 1


def dialect_of(db) -> Dialect:
    """The dialect of a Database, or SQLite for a bare sqlite3 connection (an old store built by a test)."""
    return getattr(db, "dialect", SQLITE)


class Database(abc.ABC):
    """One connection, shared by the stores of a process and safe across threads: a statement, or a
    transaction with all its statements, holds it whole. `execute` takes SQL with `?` placeholders and returns a
    cursor (`fetchone`, `fetchall`, `rowcount`)."""

    dialect: Dialect
    shown: str  # how the database is named in logs and errors (never its password)
    _refusals: tuple[type[Exception], ...] = ()  # driver errors a migration turns into a DatabaseError

    def __init__(self):
        self.lock = threading.RLock()
        self._depth = 0  # transactions this thread has open (an inner one joins the outer)

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence = ()):
        """Each dialect's own."""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Statements that commit together or not at all; one inside another joins it."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            try:
                with self._transaction():
                    yield
            finally:
                self._depth = 0

    @abc.abstractmethod
    def _transaction(self):
        """Each dialect's own."""

    def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Bring `component`'s tables to the newest version, in one transaction; returns the version found."""
        try:
            with self.transaction():
                self._lock_schema()
                version = self._schema_version(component)
                for number in range(version, len(migrations)):
                    migrations[number](self)
                if version < len(migrations):
                    self._set_schema_version(component, len(migrations))
                    log.info("%s: %s schema migrated from version %d to %d", self.shown, component, version,
                             len(migrations))
        except self._refusals as exc:  # e.g. a user that may not create tables
            raise DatabaseError(f"The database {self.shown} refused to set up the {component} tables: "
                                f"{_first_line(_scrub(str(exc), getattr(self, 'url', '')))}") from None
        return version

    def _lock_schema(self) -> None:  # noqa: B027 - SQLite needs none: one writer at a time already
        """Keep a second daemon from migrating at the same time (PostgreSQL's advisory lock)."""

    @abc.abstractmethod
    def _schema_version(self, component: str) -> int:
        """Each dialect's own."""

    @abc.abstractmethod
    def _set_schema_version(self, component: str, version: int) -> None:
        """Each dialect's own."""

    @abc.abstractmethod
    def close(self) -> None:
        """Each dialect's own."""


class SQLiteDatabase(Database):
    """A SQLite file. Its errors stay sqlite3's own: the response store tells a corrupt file from a full disk."""

    dialect = SQLITE

    def __init__(self, path: Path):
        super().__init__()
        self.shown = str(path)
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)

    def execute(self, sql: str, params: Sequence = ()):
        with self.lock:
            return self.conn.execute(sql, params)

    @contextlib.contextmanager
    def _transaction(self):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # a COMMIT that failed (a full disk) leaves it open
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise

    def _schema_version(self, component: str) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def _set_schema_version(self, component: str, version: int) -> None:
        self.conn.execute(f"PRAGMA user_version = {int(version)}")

    def close(self) -> None:
        with self.lock:
            self.conn.close()


@functools.lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal % doubled). Our SQL has no `?` inside a string literal."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresDatabase(Database):
    dialect = POSTGRES

    def __init__(self, url: str):
        super().__init__()
        self.url, self.shown = url, mask(url)
        try:
            import psycopg
        except ImportError:
            raise DatabaseError("database_url is set but psycopg is not installed: pip install 'lms[postgres]' "
                                "(or unset database_url to keep state in LMS_HOME).") from None
        self._psycopg = psycopg
        self._retry_at = 0.0  # monotonic time before which a lost connection is not attempted again
        self._lost = (psycopg.OperationalError, psycopg.InterfaceError)  # down, unreachable, timed out, closed
        self._refusals = (psycopg.Error,)
        self.conn = self._connect()

    def _scrub(self, text: str) -> str:
        return _scrub(text, self.url)

    def _connect(self):
        psycopg = self._psycopg
        try:
            given = psycopg.conninfo.conninfo_to_dict(self.url)
        except psycopg.Error as exc:
            raise DatabaseError(f"database_url is not a valid PostgreSQL URL ({self.shown}): "
                                f"{self._scrub(str(exc)).strip()}") from None
        options = {key: value for key, value in (("connect_timeout", CONNECT_TIMEOUT_SECONDS),
                                                 ("tcp_user_timeout", TCP_USER_TIMEOUT_MS)) if key not in given}
        try:
            conn = psycopg.connect(self.url, autocommit=True, **options)
            if "options" not in given:  # the URL's own `options` may set another statement_timeout
                conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        except psycopg.Error as exc:
            raise DatabaseError(f"Cannot connect to the database {self.shown}: "
                                f"{_first_line(self._scrub(str(exc)))}") from None
        return conn

    def _usable(self):
        """The connection, made anew when the last one was lost (never inside a transaction). While the
        database stays unreachable, a new attempt is made at most every RECONNECT_EVERY_SECONDS: the requests
        in between fail at once instead of each waiting for a connect timeout."""
        if (self.conn.closed or self.conn.broken) and not self._depth:
            if time.monotonic() < self._retry_at:
                raise DatabaseError(f"The database {self.shown} is unreachable; retrying shortly.")
            with contextlib.suppress(Exception):
                self.conn.close()
            try:
                self.conn = self._connect()
            except DatabaseError:
                self._retry_at = time.monotonic() + RECONNECT_EVERY_SECONDS
                raise
            log.info("reconnected to the database %s", self.shown)
        return self.conn

    def _lost_error(self, exc: Exception) -> DatabaseError:
        return DatabaseError(f"The database {self.shown} failed: {_first_line(self._scrub(str(exc)))}")

    def execute(self, sql: str, params: Sequence = ()):
        with self.lock:
            conn = self._usable()
            try:
                return conn.execute(_pg_sql(sql), tuple(params))
            except self._lost as exc:
                raise self._lost_error(exc) from None

    @contextlib.contextmanager
    def _transaction(self):
        conn = self._usable()
        try:
            with conn.transaction():
                yield
        except self._lost as exc:
            raise self._lost_error(exc) from None

    def _lock_schema(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
        self.execute("CREATE TABLE IF NOT EXISTS lms_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")

    def _schema_version(self, component: str) -> int:
        row = self.execute("SELECT version FROM lms_schema WHERE component = ?", (component,)).fetchone()
        return row[0] if row else 0

    def _set_schema_version(self, component: str, version: int) -> None:
        self.execute("INSERT INTO lms_schema (component, version) VALUES (?, ?) "
                     "ON CONFLICT (component) DO UPDATE SET version = excluded.version", (component, version))

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def connect(url: str) -> Database:
    """The database of a `database_url` (postgresql://user:password@host:port/name), connected and checked;
    DatabaseError says why not, never with the password."""
    if not url.startswith(("postgresql://", "postgres://")):
        scheme = url.split("://", 1)[0] if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url) else ""
        given = f"a {scheme}:// URL" if scheme else "a value without a scheme"  # never the value: a password?
        raise DatabaseError(f"database_url must be a postgresql://user:password@host:port/database URL, not {given}.")
    database = PostgresDatabase(url)
    log.info("state (responses, API tokens, download journal) is kept in the database %s", database.shown)
    return database


_shared: dict[str, Database] = {}
_shared_lock = threading.Lock()


def configured() -> Database | None:
    """The database this LMS_HOME is configured with (`LMS_DATABASE_URL`, else settings.json's `database_url`),
    one connection per process; None when there is none. For the CLI, which does not load every setting."""
    url = configured_url()
    if not url:
        return None
    with _shared_lock:
        if url not in _shared:
            _shared[url] = connect(url)
        return _shared[url]


def configured_url() -> str:
    from lms import config

    for name, value in os.environ.items():  # any case, as Settings reads LMS_* variables
        if name.lower() == "lms_database_url":
            return value.strip()
    value = config.read_json(config.settings_path(), {})
    value = value.get("database_url", "") if isinstance(value, dict) else ""
    return value.strip() if isinstance(value, str) else ""


# A URL's password (up to its last @: an unencoded @ in a password must not leave the rest showing) and a
# key=value conninfo's; matched on the text itself, so a URL urllib cannot parse is masked too.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)(.*)@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def mask(url: str) -> str:
    """The URL with its password as ***: postgresql://lms:***@db:5432/lms."""
    return _scrub(url, url)


def _scrub(text: str, url: str) -> str:
    """`text` without the password of `url` (libpq repeats the connection string in some errors)."""
    found = _URL_PASSWORD.search(url) or _KV_PASSWORD.search(url)
    password = found.group(2).strip("'") if found else ""
    text = _KV_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
    # libpq may show a piece of a malformed URL (what follows an unencoded @ as the host): mask the pieces too
    for secret in sorted({password, unquote(password), *password.split("@")}, key=len, reverse=True):
        if len(secret) >= 4:  # a shorter one would blank out ordinary words of the message
            text = text.replace(secret, "***")
    return text


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else "unknown error"
