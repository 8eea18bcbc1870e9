"""The persistent store of /v1/responses: SQLite in LMS_HOME, versioned, bounded by age and count."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


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
            self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ResponseStoreError(f"cannot open the response store {path}: {exc}") from exc
        self.prune()

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
