"""The persistent store of /v1/responses: SQLite in LMS_HOME, versioned, bounded by age and count."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("lms.responses")


class ResponseStoreError(RuntimeError):
    pass


@dataclass
class StoredResponse:
    response: dict  # the response resource as returned to the client
    input_items: list[dict]  # the items this request itself sent
    context: list[dict]  # everything the model saw as input: previous context + previous output + this input


def _v1(db: sqlite3.Connection) -> None:
    db.execute("""CREATE TABLE responses (
        id TEXT PRIMARY KEY, created_at REAL NOT NULL, response TEXT NOT NULL, input_items TEXT NOT NULL,
        context TEXT NOT NULL)""")
    db.execute("CREATE INDEX responses_created_at ON responses (created_at)")


# Forward-only migrations: index i brings the schema from version i to i + 1. Never edit a released one.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1]


class ResponseStore:
    PRUNE_EVERY = 100  # puts between retention passes

    def __init__(self, path: Path, *, max_age_seconds: int = 30 * 24 * 3600, max_count: int = 10_000):
        self.max_age_seconds, self.max_count = max_age_seconds, max_count
        self.lock = threading.Lock()
        self.puts = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open(path)
        except sqlite3.DatabaseError as exc:
            # A corrupt store must not keep the daemon from starting: it is kept aside for the user, and a fresh
            # one starts (stored responses are a cache of conversations, not the user's files).
            self.db.close()
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                moved = Path(f"{path}{suffix}")
                if moved.exists():
                    moved.rename(f"{aside}{suffix}")
            log.warning("The response store %s could not be read (%s); it was moved to %s and a new one started.",
                        path, exc, aside)
            try:
                self._open(path)
            except sqlite3.DatabaseError as again:
                raise ResponseStoreError(f"cannot open the response store {path}: {again}") from again
        self.prune()

    def _open(self, path: Path) -> None:
        try:
            if not path.exists():
                path.touch(mode=0o600)  # stored conversations are the owner's alone
            self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:  # not corrupt: it cannot be opened at all (a folder, no access)
            raise ResponseStoreError(f"cannot open the response store {path}: {exc}") from exc
        self.db.execute("PRAGMA journal_mode=WAL")
        self._migrate()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for number in range(version, len(MIGRATIONS)):
            with self.lock:
                self.db.execute("BEGIN")
                MIGRATIONS[number](self.db)
                self.db.execute(f"PRAGMA user_version = {number + 1}")
                self.db.execute("COMMIT")

    def put(self, stored: StoredResponse) -> None:
        response = stored.response
        row = (response["id"], response.get("created_at") or time.time(), json.dumps(response),
               json.dumps(stored.input_items), json.dumps(stored.context))
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", row)
            self.puts += 1
            due = self.puts % self.PRUNE_EVERY == 0
        if due:
            self.prune()

    def get(self, response_id: str) -> StoredResponse | None:
        row = self.db.execute("SELECT response, input_items, context FROM responses WHERE id = ?",
                              (response_id,)).fetchone()
        if row is None:
            return None
        return StoredResponse(*(json.loads(column) for column in row))

    def delete(self, response_id: str) -> bool:
        with self.lock:
            return self.db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def list_input_items(self, response_id: str, *, after: str | None = None, limit: int = 20,
                         order: str = "desc") -> tuple[list[dict], bool] | None:
        stored = self.get(response_id)
        if stored is None:
            return None
        items = list(stored.input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return items[:limit], len(items) > limit

    def prune(self, now: float | None = None) -> int:
        cutoff = (now or time.time()) - self.max_age_seconds
        with self.lock:
            removed = self.db.execute("DELETE FROM responses WHERE created_at < ?", (cutoff,)).rowcount
            removed += self.db.execute(
                "DELETE FROM responses WHERE id IN (SELECT id FROM responses ORDER BY created_at DESC LIMIT -1 "
                "OFFSET ?)", (self.max_count,)).rowcount
        return removed

    def close(self) -> None:
        with self.lock:
            self.db.close()
