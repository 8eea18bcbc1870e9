"""Unit tests of the limits that keep one bad file or one busy client from hurting the rest (issue 15, item 6):
unreadable models listed with the reason, memory reserved by loads under way (no guardrail race), a bounded
queue per model (503 with Retry-After), and a bounded download job list. Models are tiny synthetic GGUFs
(tests/gguf_files.py); workers are the fake one (tests/fake_worker.py)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from lms.api.errors import error_response
from lms.errors import Kind, LmsError
from lms.generation.request import GenerationRequest
from lms.manager.models import ModelManager
from lms.settings import Settings
from lms.store import catalog, downloads
from lms.store.catalog import UnreadableModelError
from lms.store.downloads import DownloadManager, Job
from lms.store.hub import HubFile
from tests.fake_worker import Spawner
from tests.gguf_files import write_chat_models, write_gguf

CHAT, OTHER = "pub/chat", "pub/other"
HELLO = [{"role": "user", "content": "Hi"}]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LMS_HOME", str(tmp_path))
    root = tmp_path / "models"
    write_chat_models(root)
    return tmp_path


def bad_files(root: Path) -> None:
    """A file that is not GGUF, a truncated GGUF, and an MLX folder whose weights are not safetensors."""
    (root / "Bad" / "Garbage-GGUF").mkdir(parents=True)
    (root / "Bad" / "Garbage-GGUF" / "garbage-Q4_K_M.gguf").write_bytes(b"this is no model at all")
    good = write_gguf(root / "Bad" / "Cut-GGUF" / "cut-Q8_0.gguf")
    good.write_bytes(good.read_bytes()[:40])
    mlx = root / "Bad" / "Broken-MLX"
    mlx.mkdir(parents=True)
    (mlx / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (mlx / "model.safetensors").write_bytes(b"\x01")


def manager(**settings) -> tuple[ModelManager, Spawner]:
    spawner = Spawner()
    return ModelManager(Settings(**settings), spawn_worker=spawner), spawner


# --- a bad model file is listed as unreadable, the others work ---------------------------------------------


def test_bad_files_are_listed_as_unreadable_with_the_reason_and_the_good_ones_still_work(home):
    root = home / "models"
    bad_files(root)

    found = catalog.survey(root)

    assert [e.model_key for e in found.entries] == [CHAT, OTHER]
    assert [(m.model_key, m.format) for m in found.unreadable] == [
        ("bad/broken-mlx", "mlx"), ("bad/cut", "gguf"), ("bad/garbage", "gguf")]
    reasons = {m.model_key: m.error for m in found.unreadable}
    assert "is not a GGUF file" in reasons["bad/garbage"]
    assert "truncated" in reasons["bad/cut"]
    assert reasons["bad/broken-mlx"].startswith("not a readable MLX model")
    for model in found.unreadable:
        assert str(root) not in model.error  # the reason names the file by its place in the models folder
    assert [e.model_key for e in catalog.scan(root)] == [CHAT, OTHER]  # what the public lists and loads see


def test_an_unreadable_model_has_the_info_shape_lms_ls_prints(home):
    bad_files(home / "models")

    info = {m["modelKey"]: m for m in (m.info() for m in catalog.unreadable(home / "models"))}["bad/garbage"]

    assert info["unreadable"] is True and "is not a GGUF file" in info["error"]
    assert info["path"] == os.path.join("Bad", "Garbage-GGUF", "garbage-Q4_K_M.gguf")
    assert info["sizeBytes"] == len(b"this is no model at all") and info["type"] == "unknown"


def test_resolving_an_unreadable_model_says_why_and_a_readable_variant_still_wins(home):
    root = home / "models"
    bad_files(root)
    (root / "Pub" / "Chat-GGUF" / "chat-Q8_0.gguf").write_bytes(b"broken second quantization")

    with pytest.raises(UnreadableModelError) as caught:
        catalog.resolve("bad/garbage")

    assert caught.value.model.rel_path.endswith("garbage-Q4_K_M.gguf")
    assert catalog.resolve(CHAT).path.name == "chat-Q4_K_M.gguf"
    with pytest.raises(catalog.ModelNotFound):
        catalog.resolve("nothing/like-this")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_that_cannot_be_opened_is_unreadable(home):
    path = home / "models" / "Pub" / "Chat-GGUF" / "chat-Q4_K_M.gguf"
    path.chmod(0)
    try:
        found = catalog.survey(home / "models")
    finally:
        path.chmod(0o644)
    assert [m.error for m in found.unreadable] == ["Permission denied"]


def test_loading_an_unreadable_model_is_a_400_naming_the_reason(home):
    bad_files(home / "models")

    async def scenario():
        models, spawner = manager()
        errors = []
        for attempt in (models.load("bad/garbage"), models.get_or_load("bad/cut")):
            with pytest.raises(LmsError) as caught:
                await attempt
            errors.append(caught.value)
        return errors, spawner

    errors, spawner = asyncio.run(scenario())

    for error, reason in zip(errors, ("is not a GGUF file", "truncated"), strict=True):
        assert (error.kind, error.code, error.param) == (Kind.INVALID, "model_unreadable", "model")
        assert reason in error.message and "cannot be loaded" in error.message
    assert spawner.workers == []


def test_a_file_that_goes_bad_after_the_listing_is_an_unreadable_error_not_a_500(home):
    async def scenario():
        models, _ = manager()
        entry = models.resolve(CHAT)
        entry.path.write_bytes(b"overwritten")
        with pytest.raises(LmsError) as caught:
            models.estimate(entry)
        return caught.value

    error = asyncio.run(scenario())

    assert (error.kind, error.code) == (Kind.INVALID, "model_unreadable")


# --- concurrent loads reserve memory before the next check -------------------------------------------------


def test_two_loads_at_once_cannot_both_pass_a_guardrail_only_one_fits_in():
    async def scenario():
        models, spawner = manager()
        need = models.estimate(models.resolve(CHAT))["memory"]["totalBytes"]
        models.settings.memory_limit_bytes = need + need // 2  # room for one model, not two
        results = await asyncio.gather(models.load(CHAT), models.load(OTHER), return_exceptions=True)
        return results, models, spawner

    results, models, spawner = asyncio.run(scenario())

    loaded = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, LmsError)]
    assert len(loaded) == 1 and len(refused) == 1 and len(spawner.workers) == 1
    assert refused[0].code == "insufficient_memory"
    assert list(models.loaded) == [loaded[0].identifier] and models._reserved == {}


def test_a_reservation_is_given_back_when_the_load_fails_or_ends():
    async def scenario():
        models, spawner = manager()
        need = models.estimate(models.resolve(CHAT))["memory"]["totalBytes"]
        models.settings.memory_limit_bytes = need + need // 2

        async def failing(log_path, on_exit, import_path):
            raise LmsError.internal("no worker today")

        models._spawn_worker = failing
        with pytest.raises(LmsError):
            await models.load(CHAT)
        after_failure = dict(models._reserved)
        models._spawn_worker = spawner
        model = await models.load(OTHER)  # fits: the failed load holds nothing
        return after_failure, model, models

    after_failure, model, models = asyncio.run(scenario())

    assert after_failure == {} and models._reserved == {} and model.identifier == OTHER


def test_concurrent_loads_of_one_model_get_their_own_identifiers():
    async def scenario():
        models, spawner = manager()
        loaded = await asyncio.gather(models.load(CHAT), models.load(CHAT))
        return loaded, models, spawner

    loaded, models, spawner = asyncio.run(scenario())

    assert sorted(m.identifier for m in loaded) == [CHAT, f"{CHAT}:2"] and len(models.loaded) == 2


def test_the_estimate_counts_memory_reserved_by_loads_under_way():
    async def scenario():
        models, spawner = manager()
        entry = models.resolve(CHAT)
        models.settings.memory_limit_bytes = 10 * models.estimate(entry)["memory"]["totalBytes"]
        before = models.estimate(entry)["availableBytes"]
        started = asyncio.ensure_future(models.load(CHAT))
        await asyncio.sleep(0.001)  # the load is under way: its worker is loading
        during = models.estimate(entry)
        await started
        return before, during

    before, during = asyncio.run(scenario())

    assert during["availableBytes"] == before - during["memory"]["totalBytes"]


# --- a bounded queue per model --------------------------------------------------------------------------


@pytest.mark.parametrize("max_queued", [0, 2])
def test_requests_beyond_the_slots_and_the_queue_are_turned_away_with_retry_after(max_queued):
    async def scenario():
        models, _ = manager(max_queued_requests=max_queued)
        model = await models.load(CHAT, parallel=1)
        model.worker.gate.clear()
        running = [models.generate(model, GenerationRequest(messages=HELLO)) for _ in range(1 + max_queued)]
        for stream in running:
            await anext(stream)
        with pytest.raises(LmsError) as caught:
            await anext(models.generate(model, GenerationRequest(messages=HELLO)))
        full = model.active
        model.worker.gate.set()
        for stream in running:
            assert [e["type"] async for e in stream] == ["text", "done"]
        again = [e["type"] async for e in models.generate(model, GenerationRequest(messages=HELLO))]
        return caught.value, full, again

    error, full, again = asyncio.run(scenario())

    assert (error.kind, error.code, error.retry_after) == (Kind.UNAVAILABLE, "queue_full", 2)
    assert "max_queued_requests" in error.message
    assert full == 1 + max_queued  # the refused request was never counted
    assert again[-1] == "done"  # once the queue drains, requests are taken again


def test_the_queue_bound_holds_for_embeddings_too():
    async def scenario():
        root = Path(os.environ["LMS_HOME"]) / "models"
        write_gguf(root / "Emb" / "Bert-GGUF" / "bert-f16.gguf", arch="bert", context_length=512)
        models, _ = manager(max_queued_requests=0)
        model = await models.load("emb/bert")
        model.active = 1  # one embedding in progress
        with pytest.raises(LmsError) as caught:
            await models.embed(model, ["x"])
        return caught.value

    assert asyncio.run(scenario()).code == "queue_full"


def test_an_error_with_retry_after_sends_the_header_and_crosses_process_boundaries():
    error = LmsError.unavailable("busy", "model", code="queue_full", retry_after=2)

    response = error_response(error)

    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert json.loads(response.body)["error"] == {"message": "busy", "type": "server_error", "param": "model",
                                                  "code": "queue_full"}
    assert LmsError.from_dict(error.to_dict()).retry_after == 2
    assert LmsError.from_event(error.to_event()).retry_after == 2
    plain = LmsError.unavailable("gone")
    assert "retry-after" not in error_response(plain).headers and "retry_after" not in plain.to_dict()


def test_the_new_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LMS_MAX_QUEUED_REQUESTS", "5")
    monkeypatch.setenv("LMS_RESPONSES_MAX_BYTES", "1048576")

    settings = Settings.load()

    assert (settings.max_queued_requests, settings.responses_max_bytes) == (5, 1048576)
    assert (Settings().max_queued_requests, Settings().responses_max_bytes) == (64, 256 * 1024 * 1024)


# --- the download job list is bounded -------------------------------------------------------------------


def finished_job(number: int, status: str = "completed") -> Job:
    """A finished job; one that was cancelled has no completion time, and counts from when it started."""
    cancelled = status == "cancelled"
    job = Job(f"job_{number:04d}", f"pub/repo-{number}", "c0ffee", "q4_k_m",
              [HubFile(path="model.gguf", size=10, sha256=None)], status=status,
              started_at=(2_000 if cancelled else 1_000) + number)
    job.completed_at = None if cancelled else 2_000 + number
    return job


def test_finished_jobs_beyond_the_cap_go_oldest_first_and_running_ones_stay():
    async def scenario():
        manager_ = DownloadManager(max_finished_jobs=100)
        for number in range(150):
            job = finished_job(number, "cancelled" if number % 10 == 0 else "completed")
            manager_.jobs[job.job_id] = job
            manager_._save(job)
        for number in (150, 151):  # two downloads still running, older than every finished one
            job = Job(f"job_run{number}", "pub/running", "c0ffee", "q4_k_m", [], started_at=1.0)
            manager_.jobs[job.job_id] = job
            manager_.tasks[job.job_id] = asyncio.get_running_loop().create_future()
        manager_._trim()
        return manager_

    manager_ = asyncio.run(scenario())

    finished = sorted(j for j, job in manager_.jobs.items() if job.status != "downloading")
    assert len(finished) == 100 and finished == [f"job_{n:04d}" for n in range(50, 150)]
    assert {"job_run150", "job_run151"} <= set(manager_.jobs)
    journal = sorted(p.stem for p in (downloads.downloads_dir() / "jobs").glob("*.json"))
    assert journal == finished  # the dropped jobs' journal files went with them


def test_a_restarted_daemon_keeps_only_the_newest_finished_jobs():
    first = DownloadManager()
    for number in range(130):
        first._save(finished_job(number, "failed"))

    async def restart():
        again = DownloadManager(max_finished_jobs=100)
        again.start()
        return again

    again = asyncio.run(restart())

    assert len(again.jobs) == 100 and min(again.jobs) == "job_0030"


def test_the_newest_job_is_never_the_one_dropped():
    async def scenario():
        manager_ = DownloadManager(max_finished_jobs=3)
        for number in range(3):
            manager_.jobs[f"job_{number:04d}"] = finished_job(number)
        newest = finished_job(99)
        newest.completed_at = time.time()
        manager_.jobs[newest.job_id] = newest
        manager_._trim()
        return manager_

    assert sorted(asyncio.run(scenario()).jobs) == ["job_0001", "job_0002", "job_0099"]
