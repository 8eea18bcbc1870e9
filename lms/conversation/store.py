"""The persistent store of /v1/responses: SQLite in LMS_HOME, versioned, bounded by age, count and bytes.

A chain of responses stores each turn once: a row holds its response, the input items its request sent, and a
link to the previous response (`previous_id`); the conversation a turn saw is rebuilt by walking the links
(each earlier turn's own input, then its output). A row with no link holds what came before it in `context`
itself: a conversation continued from a response that is not stored (a WebSocket `store: false` turn), a row
whose previous response was deleted or pruned (its conversation is folded into it first, so nothing a later
turn needs is lost), or a row written by version 1 of the schema (which stored the whole context each time).

The rows live in SQLite (`LMS_HOME/lms.db`) or, with the `database_url` setting, in PostgreSQL, where several
front daemons share them and continue each other's chains: the same SQL and the same migrations on both, through
lms/db.py (the few dialect differences are named there).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lms.db import Database, SQLiteDatabase, dialect_of
from lms.errors import LmsError

log = logging.getLogger("lms.responses")

MAX_CHAIN = 100_000  # links followed when rebuilding one conversation (a guard; chains cannot loop)
MAX_PRUNE_PASSES = 8  # folding a conversation into a survivor can put the store over its byte cap again


@contextlib.contextmanager
def _storage_errors():
    """A write the disk cannot take (full, read-only, failing) is the client's 507, not a 500; SQLite rolls the
    statement back, so what was stored stays whole."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        full = "full" in str(exc).lower()
        raise LmsError.storage(f"The response could not be stored: {exc}. Free some disk space, or send "
                               "store: false.", "store", code="disk_full" if full else "storage_error") from exc


class ResponseStoreError(RuntimeError):
    pass


@dataclass
class StoredResponse:
    response: dict  # the response resource as returned to the client
    input_items: list[dict]  # the items this request itself sent
    context: list[dict]  # everything the model saw as input: previous context + previous output + this input
    # context[:turn_start] is what the previous response gave (its context and output); the rest is this turn's
    # own input, its item references resolved and compactions unpacked
    turn_start: int = field(default=0, compare=False)


def _v1(db: Database) -> None:
    dialect = dialect_of(db)
    db.execute(f"""CREATE TABLE responses (
        id TEXT PRIMARY KEY, created_at {dialect.float_type} NOT NULL, response TEXT NOT NULL,
        input_items TEXT NOT NULL, context TEXT NOT NULL{dialect.rowid_column})""")
    db.execute("CREATE INDEX responses_created_at ON responses (created_at)")


def _v2(db: Database) -> None:
    """Turns stored once: `context` becomes what came before the turn when it has no link ('[]' when linked),
    `own_context` the turn's own expanded input (NULL: the same as input_items), `bytes` the row's size. A
    version 1 row keeps its whole context in `context`, so it reads as before."""
    db.execute("ALTER TABLE responses ADD COLUMN previous_id TEXT")
    db.execute("ALTER TABLE responses ADD COLUMN own_context TEXT")
    db.execute("ALTER TABLE responses ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE responses SET own_context = '[]', "
               "bytes = length(response) + length(input_items) + length(context)")
    db.execute("CREATE INDEX responses_previous_id ON responses (previous_id)")


# Forward-only migrations, the same on SQLite and PostgreSQL: index i brings the schema from version i to i + 1.
# Never edit a released one.
MIGRATIONS: list[Callable[[Database], None]] = [_v1, _v2]

_CHAIN = f"""WITH RECURSIVE chain(id, depth) AS (
        SELECT CAST(? AS TEXT), 0
        UNION ALL
        SELECT r.previous_id, chain.depth + 1 FROM responses r JOIN chain ON r.id = chain.id
        WHERE r.previous_id IS NOT NULL AND chain.depth < {MAX_CHAIN})
    SELECT r.response, r.input_items, r.context, r.previous_id, r.own_context
    FROM chain JOIN responses r ON r.id = chain.id ORDER BY chain.depth DESC"""

# Newest first (ties by insertion: SQLite's implicit rowid, PostgreSQL's rowid column): the order the caps keep
# rows in.
_NEWEST_FIRST = "ORDER BY created_at DESC, rowid DESC"


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


class ResponseStore:
    PRUNE_EVERY = 100  # puts between retention passes (the byte cap is checked on every put)

    def __init__(self, path: Path, *, max_age_seconds: int = 30 * 24 * 3600, max_count: int = 10_000,
                 max_bytes: int = 256 * 1024 * 1024, database: Database | None = None):
        """The store in the SQLite file `path`, or in `database` (shared, e.g. PostgreSQL) when one is given."""
        self.max_age_seconds, self.max_count, self.max_bytes = max_age_seconds, max_count, max_bytes
        self.lock = threading.Lock()
        self.puts = 0
        self.total_bytes = 0  # of the rows, as last counted plus what was put since
        self.owns_db = database is None
        if database is not None:
            self.db = database
            self.db.migrate("responses", MIGRATIONS)
            self.prune()
            return
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
            self.db = SQLiteDatabase(path)
        except (OSError, sqlite3.Error) as exc:  # not corrupt: it cannot be opened at all (a folder, no access)
            raise ResponseStoreError(f"cannot open the response store {path}: {exc}") from exc
        self.db.execute("PRAGMA journal_mode=WAL")
        with self.lock:
            self.db.migrate("responses", MIGRATIONS)

    # --- writing ------------------------------------------------------------------------------------------

    def put(self, stored: StoredResponse) -> None:
        """Store a response: linked to its previous response when that one is stored (its turn only), else
        with everything before it."""
        response = stored.response
        previous_id = response.get("previous_response_id") if stored.turn_start else None
        own = stored.context[stored.turn_start:]
        own_text = None if own == stored.input_items else _dumps(own)
        texts = (_dumps(response), _dumps(stored.input_items))
        with self.lock, _storage_errors(), self.db.transaction():
            # the previous response is held (PostgreSQL: FOR SHARE) until this row links to it, so another
            # daemon pruning it meanwhile folds this row too, or finds it after and this row keeps its context
            linked = previous_id not in (None, response["id"]) and self.db.execute(
                f"SELECT 1 FROM responses WHERE id = ?{self.db.dialect.for_share}", (previous_id,)).fetchone() \
                is not None
            before = "[]" if linked else _dumps(stored.context[:stored.turn_start])
            size = sum(map(len, texts)) + len(before) + len(own_text or "")
            # a replaced response goes and comes back as the newest row (what SQLite's INSERT OR REPLACE did)
            self.db.execute("DELETE FROM responses WHERE id = ?", (response["id"],))
            self.db.execute(
                "INSERT INTO responses (id, created_at, response, input_items, context, previous_id, "
                "own_context, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (response["id"], response.get("created_at") or time.time(), *texts, before,
                 previous_id if linked else None, own_text, size))
            self.puts += 1
            self.total_bytes += size
            due = self.puts % self.PRUNE_EVERY == 0 or self.total_bytes > self.max_bytes
        if due:
            self.prune()

    def delete(self, response_id: str) -> bool:
        """Delete one response; the responses that continue it keep their conversation."""
        with self.lock:
            return self._remove_where("SELECT id FROM responses WHERE id = ?", (response_id,)) > 0

    def prune(self, now: float | None = None) -> int:
        """Drop what is beyond the caps, oldest first: older than the age cap, beyond the count cap, beyond the
        byte cap (the newest response always stays, however large). Returns how many rows went."""
        cutoff = (now or time.time()) - self.max_age_seconds
        removed = 0
        with self.lock:
            removed += self._remove_where("SELECT id FROM responses WHERE created_at < ?", (cutoff,))
            removed += self._remove_where(
                f"SELECT id FROM (SELECT id, ROW_NUMBER() OVER ({_NEWEST_FIRST}) AS place FROM responses) AS ranked "
                "WHERE place > ?", (self.max_count,))
            for _ in range(MAX_PRUNE_PASSES):
                gone = self._remove_where(
                    f"SELECT id FROM (SELECT id, SUM(bytes) OVER ({_NEWEST_FIRST}) AS running, "
                    f"ROW_NUMBER() OVER ({_NEWEST_FIRST}) AS place FROM responses) AS ranked "
                    "WHERE running > ? AND place > 1", (self.max_bytes,))
                removed += gone
                if not gone:
                    break
            self.total_bytes = self.db.execute("SELECT COALESCE(SUM(bytes), 0) FROM responses").fetchone()[0]
        return removed

    def _remove_where(self, select_ids: str, params: tuple) -> int:
        """Delete the rows `select_ids` names, in one transaction; first each surviving row that continues one
        of them gets the conversation before it written into its own row (it stays readable and continuable).
        The caller holds the lock."""
        dialect = self.db.dialect
        with self.db.transaction():
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (id TEXT PRIMARY KEY)")
            self.db.execute("DELETE FROM doomed")
            self.db.execute(f"INSERT INTO doomed {select_ids}", params)  # ids of the primary key: no duplicate
            if dialect.for_update:  # another daemon's put waits, or has linked its row already (folded below)
                self.db.execute(f"SELECT id FROM responses WHERE id IN (SELECT id FROM doomed) ORDER BY id"
                                f"{dialect.for_update}").fetchall()
            orphans = self.db.execute(
                "SELECT id, previous_id FROM responses WHERE previous_id IN (SELECT id FROM doomed) "
                "AND id NOT IN (SELECT id FROM doomed)").fetchall()
            for child_id, parent_id in orphans:
                parent = self._read(parent_id)
                before = _dumps(parent.context + parent.response.get("output", [])) if parent else "[]"
                self.db.execute("UPDATE responses SET previous_id = NULL, context = ?, "
                                "bytes = bytes - length(context) + ? WHERE id = ?", (before, len(before), child_id))
            removed = self.db.execute("DELETE FROM responses WHERE id IN (SELECT id FROM doomed)").rowcount
        return removed

    # --- reading ------------------------------------------------------------------------------------------

    def get(self, response_id: str) -> StoredResponse | None:
        return self._read(response_id)

    def _read(self, response_id: str) -> StoredResponse | None:
        """A response with its whole conversation, rebuilt from its chain in one query (one snapshot)."""
        rows = self.db.execute(_CHAIN, (response_id,)).fetchall()
        if not rows:
            return None
        context: list[dict] = []
        response: dict = {}
        items: list[dict] = []
        start = 0
        for index, (response_text, items_text, before_text, previous_id, own_text) in enumerate(rows):
            if index and previous_id is not None:
                context = context + response.get("output", [])  # the previous turn's output, then this turn
            else:
                context = []  # the chain starts here (a row whose link is gone starts over too)
            response, items = json.loads(response_text), json.loads(items_text)
            context = context + json.loads(before_text)
            start = len(context)
            context = context + (json.loads(own_text) if own_text is not None else items)
        return StoredResponse(response, items, context, turn_start=start)

    def list_input_items(self, response_id: str, *, after: str | None = None, limit: int = 20,
                         order: str = "desc") -> tuple[list[dict], bool] | None:
        row = self.db.execute("SELECT input_items FROM responses WHERE id = ?", (response_id,)).fetchone()
        if row is None:
            return None
        items = json.loads(row[0])
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.get("id") for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return items[:limit], len(items) > limit

    def stored_bytes(self) -> int:
        """Bytes of JSON the rows hold (what the byte cap counts)."""
        return self.db.execute("SELECT COALESCE(SUM(bytes), 0) FROM responses").fetchone()[0]

    def close(self) -> None:
        """Close the SQLite file; a shared database stays open for the other stores that use it."""
        if self.owns_db:
            with self.lock:
                self.db.close()
