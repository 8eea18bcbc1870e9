"""The SQLite response store: round trips, retention, pagination, reopening and migration."""

from __future__ import annotations

import json
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


# --- a chain stores each turn once; the byte cap ------------------------------------------------------------


def next_turn(number: int, previous: StoredResponse | None, words: int = 40) -> StoredResponse:
    """The response a turn stores: its own input item after what the previous response gave, as the turn
    (lms/conversation/turn.py) builds it."""
    own = [{"id": f"msg_{number}", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": f"question {number} " + "word " * words}]}]
    before = previous.context + previous.response["output"] if previous else []
    response = {"id": f"resp_{number}", "created_at": 1_000 + number,
                "previous_response_id": previous.response["id"] if previous else None,
                "output": [{"id": f"out_{number}", "type": "message", "role": "assistant",
                            "content": [{"type": "output_text", "text": f"answer {number} " + "word " * words}]}]}
    return StoredResponse(response, own, before + own, turn_start=len(before))


def chain(store: ResponseStore, turns: int, first: int = 0) -> list[StoredResponse]:
    made: list[StoredResponse] = []
    for number in range(first, first + turns):
        made.append(next_turn(number, made[-1] if made else None))
        store.put(made[-1])
    return made


def row_bytes(store: ResponseStore, response_id: str) -> int:
    return store.db.execute("SELECT bytes FROM responses WHERE id = ?", (response_id,)).fetchone()[0]


def test_a_chain_stores_each_turn_once_and_reads_back_whole(store):
    made = chain(store, 20)

    for original in made:
        again = store.get(original.response["id"])
        assert again == original and again.turn_start == original.turn_start
    assert row_bytes(store, "resp_19") < 1.2 * row_bytes(store, "resp_1")  # no growth with the conversation
    whole_copies = sum(len(json.dumps(m.context)) for m in made)
    assert store.stored_bytes() < whole_copies / 5
    page, more = store.list_input_items("resp_19")
    assert [item["id"] for item in page] == ["msg_19"] and not more  # its own items, as before


def test_deleting_a_response_in_a_chain_keeps_the_later_ones_whole(store):
    made = chain(store, 6)

    assert store.delete("resp_2") and store.delete("resp_0")

    assert store.get("resp_2") is None and store.get("resp_0") is None
    for original in made[3:] + made[1:2]:
        assert store.get(original.response["id"]) == original
    # a turn continuing the chain after the deletion still links to its previous response
    following = next_turn(6, made[-1])
    store.put(following)
    assert store.get("resp_6") == following
    assert store.db.execute("SELECT previous_id FROM responses WHERE id = 'resp_6'").fetchone()[0] == "resp_5"


def test_pruning_the_oldest_turns_folds_the_conversation_into_the_first_that_stays(tmp_path):
    store = ResponseStore(tmp_path / "lms.db", max_age_seconds=10**12, max_count=4)
    made = chain(store, 10)

    assert store.prune() == 6

    for original in made[6:]:
        assert store.get(original.response["id"]) == original
    assert store.get("resp_5") is None
    links = dict(store.db.execute("SELECT id, previous_id FROM responses").fetchall())
    assert links == {"resp_6": None, "resp_7": "resp_6", "resp_8": "resp_7", "resp_9": "resp_8"}
    assert store.total_bytes == store.stored_bytes()


def test_the_byte_cap_drops_the_oldest_and_always_keeps_the_newest(tmp_path):
    one_turn = len(json.dumps(next_turn(0, None).response)) * 2
    store = ResponseStore(tmp_path / "lms.db", max_age_seconds=10**12, max_bytes=5 * one_turn)
    made = [next_turn(number, None) for number in range(12)]  # separate conversations
    for item in made:
        store.put(item)

    kept = [m.response["id"] for m in made if store.get(m.response["id"])]
    assert 2 <= len(kept) <= 5 and kept == [m.response["id"] for m in made[-len(kept):]]
    assert store.stored_bytes() <= 5 * one_turn

    huge = next_turn(50, None, words=20_000)
    store.put(huge)
    assert store.get("resp_50") == huge  # larger than the cap alone, and still kept: it is the newest
    assert [m for m in made if store.get(m.response["id"])] == []


def test_a_turn_continuing_a_response_that_is_not_stored_keeps_what_came_before(store):
    unstored = next_turn(0, None)  # a WebSocket `store: false` turn, held by its connection only
    after = next_turn(1, unstored)

    store.put(after)

    assert store.get("resp_1") == after
    assert store.db.execute("SELECT previous_id FROM responses").fetchone()[0] is None


def test_expanded_input_is_stored_when_it_differs_from_the_items_sent(store):
    first = next_turn(0, None)
    store.put(first)
    reference = {"type": "item_reference", "id": "msg_0"}
    before = first.context + first.response["output"]
    second = StoredResponse({"id": "resp_1", "created_at": 1_001, "previous_response_id": "resp_0", "output": []},
                            [reference], before + [first.input_items[0]], turn_start=len(before))
    store.put(second)

    again = store.get("resp_1")
    assert again.input_items == [reference] and again.context == second.context


def test_a_version_1_store_is_migrated_and_its_rows_still_read_and_continue(tmp_path):
    path = tmp_path / "lms.db"
    db = sqlite3.connect(path)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    old = next_turn(1, next_turn(0, None))  # version 1 stored the whole context in each row
    db.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?)", (
        "resp_1", 1_001, json.dumps(old.response), json.dumps(old.input_items), json.dumps(old.context)))
    db.commit()
    db.close()

    store = ResponseStore(path, max_age_seconds=10**12)
    assert store.get("resp_1") == old
    following = next_turn(2, old)
    store.put(following)
    assert store.get("resp_2") == following
    assert store.delete("resp_1") and store.get("resp_2") == following
    store.close()
