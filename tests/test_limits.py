"""The limits of issue 15 item 6 as a user meets them, on the real daemon and engine: a bad model file listed as
unreadable while the others work, two loads at once under a guardrail only one fits, a full model queue answered
503 with Retry-After, a 20-turn response chain stored once per turn, the response store's byte cap, and a bounded
download job list."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import httpx

from lms.client import DaemonError
from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL
from tests.test_resilience import LONG, _wait

QUICK = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def _bad_models(models: Path) -> None:
    garbage = models / "bad" / "Garbage-GGUF" / "garbage-Q4_K_M.gguf"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"GGUF but not really: cut short")
    mlx = models / "bad" / "Broken-MLX"
    mlx.mkdir(parents=True)
    (mlx / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (mlx / "model.safetensors").write_bytes(b"\x00")


def test_a_bad_model_file_is_listed_as_unreadable_and_the_other_models_work(lms):
    _bad_models(lms.home / "models")

    listed = {m["modelKey"]: m for m in lms.json("ls")}
    assert set(listed) == {CHAT_MODEL, EMBEDDING_MODEL, "bad/garbage", "bad/broken-mlx"}
    assert "unreadable" not in listed[CHAT_MODEL]
    garbage, mlx = listed["bad/garbage"], listed["bad/broken-mlx"]
    assert garbage["unreadable"] is True and "truncated" in garbage["error"]
    assert garbage["path"] == "bad/Garbage-GGUF/garbage-Q4_K_M.gguf" and garbage["format"] == "gguf"
    assert mlx["unreadable"] is True and mlx["error"].startswith("not a readable MLX model")
    text = lms.run("ls").stdout
    assert "You have 2 models" in text and CHAT_MODEL in text
    assert "UNREADABLE" in text and "✗ bad/garbage" in text and "truncated" in text
    assert [m["modelKey"] for m in lms.json("ls", "--llm")] == [CHAT_MODEL]

    refused = lms.run("load", "bad/garbage", "-y", check=False)
    assert refused.returncode == 1
    assert "cannot be loaded" in refused.stderr and "truncated" in refused.stderr

    lms.run("server", "start", "-p", str(lms.port))
    base = lms.base_url
    readable = [CHAT_MODEL, EMBEDDING_MODEL]
    assert sorted(m["id"] for m in httpx.get(base + "/v1/models").json()["data"]) == readable
    assert sorted(m["id"] for m in httpx.get(base + "/api/v0/models").json()["data"]) == readable
    assert sorted(m["key"] for m in httpx.get(base + "/api/v1/models").json()["models"]) == readable
    answer = httpx.post(base + "/v1/chat/completions", json={**QUICK, "model": "bad/garbage"}, timeout=60)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "model_unreadable" and error["param"] == "model" and "truncated" in error["message"]
    assert str(lms.home) not in error["message"]  # the file is named by its place in the models folder
    loaded = httpx.post(base + "/api/v1/models/load", json={"model": "bad/broken-mlx"}, timeout=60)
    assert loaded.status_code == 400 and loaded.json()["error"]["code"] == "model_unreadable"
    assert httpx.post(base + "/v1/chat/completions", json=QUICK, timeout=120).status_code == 200


def test_two_loads_at_once_cannot_both_pass_a_guardrail_only_one_fits_in(lms):
    lms.run("daemon", "up")
    need = lms.control().post("/lms/estimate", {"model": CHAT_MODEL, "context_length": 1024})["memory"]["totalBytes"]
    lms.stop()
    lms.settings["LMS_MEMORY_LIMIT_BYTES"] = str(need + need // 2)  # room for one instance, not two
    lms.run("daemon", "up")
    results: dict[str, object] = {}

    def load(identifier: str) -> None:
        try:
            results[identifier] = lms.control().post("/lms/load", {"model": CHAT_MODEL, "identifier": identifier,
                                                                  "context_length": 1024})
        except DaemonError as exc:
            results[identifier] = exc

    threads = [threading.Thread(target=load, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    refused = [r for r in results.values() if isinstance(r, DaemonError)]
    assert len(refused) == 1 and refused[0].status == 507 and refused[0].code == "insufficient_memory"
    assert len(lms.control().get("/lms/ps")) == 1


def test_a_full_model_queue_is_answered_503_with_retry_after(lms):
    lms.settings["LMS_MAX_QUEUED_REQUESTS"] = "0"  # one slot, no waiting
    lms.run("server", "start", "-p", str(lms.port))
    lms.run("load", CHAT_MODEL, "--parallel", "1", "-c", "1024", "-y")
    base = lms.base_url
    with httpx.stream("POST", base + "/v1/chat/completions", json={**LONG, "stream": True}, timeout=120) as busy:
        lines = busy.iter_lines()
        received = 0
        while received < 3:
            received += next(lines).startswith("data: ")
        turned_away = httpx.post(base + "/v1/chat/completions", json=QUICK, timeout=60)
        response_api = httpx.post(base + "/v1/responses", json={"model": CHAT_MODEL, "input": "hi"}, timeout=60)
    for answer in (turned_away, response_api):
        assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
        error = answer.json()["error"]
        assert error["code"] == "queue_full" and error["type"] == "server_error"
        assert "max_queued_requests" in error["message"]
    ps = lambda: lms.control().get("/lms/ps")[0]  # noqa: E731
    assert _wait(lambda: ps()["status"] == "idle", timeout=20)
    assert httpx.post(base + "/v1/chat/completions", json=QUICK, timeout=60).status_code == 200


def _row_bytes(home: Path, ids: list[str]) -> dict[str, int]:
    with sqlite3.connect(f"file:{home / 'lms.db'}?mode=ro", uri=True) as db:
        marks = ",".join("?" * len(ids))
        return dict(db.execute(f"SELECT id, bytes FROM responses WHERE id IN ({marks})", ids).fetchall())


def test_a_20_turn_chain_stores_each_turn_once(served, capsys):
    ids: list[str] = []
    usage: list[int] = []
    for turn in range(20):
        body = {"model": CHAT_MODEL, "input": f"Turn {turn}: tell me one fact about the number {turn}.",
                "max_output_tokens": 16, "temperature": 0}
        if ids:
            body["previous_response_id"] = ids[-1]
        answer = httpx.post(served.base_url + "/v1/responses", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["id"])
        usage.append(answer.json()["usage"]["input_tokens"])

    sizes = _row_bytes(served.home, ids)
    assert len(sizes) == 20
    first, last = sizes[ids[0]], sizes[ids[-1]]
    assert last < 2 * first  # a turn's row does not grow with the conversation before it
    assert usage[-1] > usage[0] + 19 * 15  # yet the model saw the whole conversation each turn
    items = httpx.get(f"{served.base_url}/v1/responses/{ids[-1]}/input_items").json()["data"]
    assert [item["content"][0]["text"] for item in items] == ["Turn 19: tell me one fact about the number 19."]
    stored = httpx.get(f"{served.base_url}/v1/responses/{ids[-1]}").json()
    assert stored["previous_response_id"] == ids[-2] and stored["status"] in ("completed", "incomplete")
    with capsys.disabled():
        print(f"\n20-turn chain: {sum(sizes.values())} bytes stored (first turn {first}, last turn {last})")


def test_the_response_store_byte_cap_drops_the_oldest_responses(lms):
    lms.settings["LMS_RESPONSES_MAX_BYTES"] = "8000"  # a handful of short responses (about 1.4 kB each)
    lms.run("server", "start", "-p", str(lms.port))
    ids = []
    for turn in range(12):
        answer = httpx.post(lms.base_url + "/v1/responses", timeout=120, json={
            "model": CHAT_MODEL, "input": f"Say {turn}", "max_output_tokens": 4, "temperature": 0})
        assert answer.status_code == 200
        ids.append(answer.json()["id"])

    kept = [httpx.get(f"{lms.base_url}/v1/responses/{rid}").status_code == 200 for rid in ids]
    assert kept[-1] and not kept[0] and kept == sorted(kept)  # the oldest went first
    assert sum(_row_bytes(lms.home, ids).values()) <= 8000


def test_the_download_job_list_keeps_the_newest_100_finished_jobs(lms):
    journal = lms.home / ".internal" / "downloads" / "jobs"
    journal.mkdir(parents=True)
    for number in range(130):
        job = {"job_id": f"job_{number:04d}", "repo_id": f"pub/repo-{number}", "commit": "c0ffee",
               "variant": "q4_k_m", "files": [{"path": "model.gguf", "size": 10, "sha256": None}],
               "status": "completed", "error": None, "started_at": 1_000 + number, "completed_at": 2_000 + number,
               "endpoint": None, "done_bytes": 10, "current_bytes": 0, "fetched_bytes": 10, "speed": 0.0}
        (journal / f"job_{number:04d}.json").write_text(json.dumps(job))

    lms.run("daemon", "up")
    jobs = lms.control().get("/lms/downloads")

    assert len(jobs) == 100 and min(j["job_id"] for j in jobs) == "job_0030"
    assert len(list(journal.glob("*.json"))) == 100
