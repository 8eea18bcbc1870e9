"""The SQLite response store: round trips, retention, pagination, reopening and migration."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from lms.conversation.store import MIGRATIONS, ResponseStore, ResponseStoreError, StoredResponse


def stored(response_id: str, created_at: float = 1_000.0, items: int = 1) -> StoredResponse:
    return StoredResponse(response={"id": response_id, "created_at": created_at, "output": [{"type": "message"}]},
                          input_items=[{"id": f"{response_id}-in{i}", "type": "message"} for i in range(items)],
                          context=[{"id": "ctx", "type": "message"}])


@pytest.fixture
def store(tmp_path):
    instance = ResponseStore(tmp_path / "deep" / "lms.db", max_age_seconds=10**12)
    yield instance
    instance.close()


def test_round_trip_replace_and_delete(store):
    store.put(stored("r1"))
    assert store.get("r1") == stored("r1")
    replacement = stored("r1", items=3)
    store.put(replacement)
    assert store.get("r1") == replacement
    assert store.delete("r1") is True
    assert store.get("r1") is None and store.delete("r1") is False


def test_input_items_pages(store):
    store.put(stored("r", items=5))
    page, more = store.list_input_items("r", limit=2, order="asc")
    assert [i["id"] for i in page] == ["r-in0", "r-in1"] and more
    page, more = store.list_input_items("r", after="r-in1", limit=10, order="asc")
    assert [i["id"] for i in page] == ["r-in2", "r-in3", "r-in4"] and not more
    page, _ = store.list_input_items("r", limit=1)
    assert page[0]["id"] == "r-in4"  # newest first by default
    assert store.list_input_items("missing") is None


def test_retention_by_age_and_count(tmp_path):
    store = ResponseStore(tmp_path / "lms.db", max_age_seconds=100, max_count=3)
    for index in range(5):
        store.put(stored(f"r{index}", created_at=1_000 + index))
    assert store.prune(now=1_000 + 4 + 50) == 2  # count: only the 3 newest stay
    assert [store.get(f"r{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert store.prune(now=1_103.5) == 2  # age: r2 and r3 are older than 100 s now
    assert store.get("r4") is not None


def test_survives_reopen_and_migrates_forward(tmp_path):
    path = tmp_path / "lms.db"
    db = sqlite3.connect(path)
    MIGRATIONS[0](db)  # a database at version 1, as an older lms left it
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO responses VALUES ('old', 5, '{\"id\": \"old\"}', '[]', '[]')")
    db.commit()
    db.close()
    store = ResponseStore(path, max_age_seconds=10**12)
    assert store.get("old").response == {"id": "old"}
    store.put(stored("new"))
    store.close()
    reopened = ResponseStore(path, max_age_seconds=10**12)
    assert reopened.get("new") == stored("new") and reopened.get("old") is not None
    reopened.close()


def test_concurrent_puts_and_large_payloads(store):
    big = "x" * 1_000_000

    def writer(offset: int):
        for index in range(20):
            item = stored(f"t{offset}-{index}")
            item.response["output"] = [{"type": "message", "text": big if index == 0 else ""}]
            store.put(item)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.get("t3-0").response["output"][0]["text"] == big
    assert store.get("t2-19") is not None


def test_a_corrupt_file_is_moved_aside_and_a_fresh_store_starts(tmp_path, caplog):
    path = tmp_path / "lms.db"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    store = ResponseStore(path)
    store.put(stored("after"))
    assert store.get("after") is not None
    [aside] = tmp_path.glob("lms.db.corrupt-*")
    assert aside.read_bytes() == garbage and "moved to" in caplog.text


def test_a_store_that_cannot_be_opened_at_all_is_a_clear_error(tmp_path):
    path = tmp_path / "lms.db"
    path.mkdir()  # a folder where the database should be
    with pytest.raises(ResponseStoreError):
        ResponseStore(path)


def test_a_new_store_is_readable_by_its_owner_only(tmp_path):
    ResponseStore(tmp_path / "lms.db").put(stored("one"))
    assert (tmp_path / "lms.db").stat().st_mode & 0o777 == 0o600
