"""Unit tests of the model manager (lms/manager/models.py) with a fake worker: JIT loads and their sharing, TTL,
auto-evict, guardrails, the request count, worker death, and what the manager sends a worker (the typed request
with the resolved draft model and the prompt echo). Models are tiny synthetic GGUFs (tests/gguf_files.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lms.errors import Kind, LmsError
from lms.generation.request import DraftSpec, GenerationRequest
from lms.logs import Subscriber
from lms.manager.models import ModelManager
from lms.settings import Settings
from tests.fake_worker import Spawner
from tests.gguf_files import F16, write_chat_models, write_gguf

CHAT, OTHER, DRAFT, EMBEDDING = "pub/chat", "pub/other", "pub/draft", "emb/bert"
HELLO = [{"role": "user", "content": "Hi"}]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LMS_HOME", str(tmp_path))
    root = tmp_path / "models"
    write_chat_models(root)
    write_gguf(root / "Pub" / "Draft-GGUF" / "draft-Q4_K_M.gguf")
    write_gguf(root / "Emb" / "Bert-GGUF" / "bert-f16.gguf", arch="bert", file_type=F16, context_length=512)
    return tmp_path


def manager(**settings) -> tuple[ModelManager, Spawner]:
    spawner = Spawner()
    return ModelManager(Settings(**settings), spawn_worker=spawner), spawner


async def collect(events) -> list[dict]:
    return [event async for event in events]


async def until(condition, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def test_first_request_loads_the_model_jit_and_later_ones_reuse_it():
    async def scenario():
        models, spawner = manager(jit_ttl_seconds=900)
        first = await models.get_or_load(CHAT)
        again = await models.get_or_load(CHAT)
        return models, spawner, first, again

    models, spawner, first, again = asyncio.run(scenario())

    assert again is first and len(spawner.workers) == 1
    assert (first.identifier, first.jit, first.ttl_seconds, first.context_length) == (CHAT, True, 900, 4096)
    assert first.engine == {"name": "llama.cpp", "version": "fake-1"}
    op, payload = spawner.workers[0].calls[0]
    assert op == "load" and payload["runtime"] == "llama.cpp"
    assert payload["options"]["path"].endswith("chat-Q4_K_M.gguf") and payload["options"]["parallel"] == 4
    assert list(models.loaded) == [CHAT]


def test_a_model_that_is_not_loaded_is_not_found_without_jit():
    async def scenario():
        models, spawner = manager(jit_loading=False)
        with pytest.raises(LmsError) as caught:
            await models.get_or_load(CHAT)
        return caught.value, spawner

    error, spawner = asyncio.run(scenario())

    assert (error.kind, error.code, error.param) == (Kind.NOT_FOUND, "model_not_found", "model")
    assert spawner.workers == []


def test_concurrent_first_requests_share_one_load():
    async def scenario():
        models, spawner = manager()
        return await asyncio.gather(*(models.get_or_load(CHAT) for _ in range(5))), spawner

    loaded, spawner = asyncio.run(scenario())

    assert len(spawner.workers) == 1
    assert all(model is loaded[0] for model in loaded)


def test_ttl_unloads_an_idle_model_and_never_one_with_a_request_in_flight():
    async def scenario():
        models, _ = manager()
        idle = await models.load(CHAT, ttl=60)
        busy = await models.load(OTHER, ttl=60)
        busy.worker.gate.clear()
        stream = models.generate(busy, GenerationRequest(messages=HELLO))
        first = await anext(stream)  # the request is in flight
        later = idle.last_used + 61_000
        early = await models.unload_expired(idle.last_used + 59_000)
        expired = await models.unload_expired(later)
        still_loaded = sorted(models.loaded)
        busy.worker.gate.set()
        rest = await collect(stream)
        after = await models.unload_expired(busy.last_used + 61_000)
        return first, early, expired, still_loaded, rest, after, idle, busy, models

    first, early, expired, still_loaded, rest, after, idle, busy, models = asyncio.run(scenario())

    assert first["type"] == "prompt" and [e["type"] for e in rest] == ["text", "done"]
    assert early == [] and expired == [CHAT] and still_loaded == [OTHER]
    assert idle.worker.stopped and after == [OTHER] and busy.worker.stopped and models.loaded == {}


def test_expired_counts_from_the_last_use_and_not_while_busy():
    async def scenario():
        models, _ = manager()
        return await models.load(CHAT, ttl=10)

    model = asyncio.run(scenario())

    assert not model.expired(model.last_used + 9_999) and model.expired(model.last_used + 10_000)
    model.active = 1
    assert not model.expired(model.last_used + 1_000_000)
    model.active, model.ttl_seconds = 0, None
    assert not model.expired(model.last_used + 1_000_000)


def test_auto_evict_keeps_explicit_loads_and_evicts_a_busy_jit_model_after_its_last_request():
    async def scenario():
        models, _ = manager()
        explicit = await models.load(DRAFT)
        busy = await models.get_or_load(CHAT)
        busy.worker.gate.clear()
        streams = [models.generate(busy, GenerationRequest(messages=HELLO)) for _ in range(2)]
        for stream in streams:
            await anext(stream)
        newcomer = await models.get_or_load(OTHER)
        during = (sorted(models.loaded), busy.evict_when_idle, busy.worker.stopped)
        busy.worker.gate.set()
        await collect(streams[0])
        after_one = (sorted(models.loaded), busy.worker.stopped)
        await collect(streams[1])
        await until(lambda: CHAT not in models.loaded)
        return during, after_one, sorted(models.loaded), explicit, busy, newcomer

    during, after_one, final, explicit, busy, newcomer = asyncio.run(scenario())

    assert during == ([CHAT, DRAFT, OTHER], True, False)
    assert after_one == ([CHAT, DRAFT, OTHER], False)
    assert final == [DRAFT, OTHER] and busy.worker.stopped and not explicit.worker.stopped and newcomer.jit


def test_auto_evict_unloads_an_idle_jit_model_before_the_next_jit_load():
    async def scenario():
        models, _ = manager()
        first = await models.get_or_load(CHAT)
        await collect(models.generate(first, GenerationRequest(messages=HELLO)))
        await models.get_or_load(OTHER)
        return sorted(models.loaded), first

    loaded, first = asyncio.run(scenario())

    assert loaded == [OTHER] and first.worker.stopped


async def jit_request(models: ModelManager, name: str) -> list[dict]:
    """What a surface does: get the model (loading it JIT), then run the request on it."""
    return await collect(models.generate(await models.get_or_load(name), GenerationRequest(messages=HELLO)))


def test_concurrent_jit_loads_of_two_models_serve_both_requests_and_then_keep_max_jit_models():
    async def scenario():
        models, _ = manager(max_jit_models=1)
        answers = await asyncio.gather(jit_request(models, CHAT), jit_request(models, OTHER))
        await until(lambda: len(models.loaded) == 1)
        return answers, sorted(models.loaded)

    answers, loaded = asyncio.run(scenario())

    assert [events[-1]["type"] for events in answers] == ["done", "done"]  # neither model went before its request
    assert len(loaded) == 1


def test_a_model_loaded_for_a_request_is_not_evicted_before_that_request_starts():
    async def scenario():
        models, _ = manager()
        waiting = await models.get_or_load(CHAT)  # its request has not started yet
        await models.get_or_load(OTHER)
        kept = (CHAT in models.loaded, waiting.evict_when_idle, waiting.worker.stopped)
        events = await collect(models.generate(waiting, GenerationRequest(messages=HELLO)))
        await until(lambda: CHAT not in models.loaded)
        return kept, events

    kept, events = asyncio.run(scenario())

    assert kept == (True, True, False) and events[-1]["type"] == "done"


def test_an_evicted_model_whose_request_never_came_goes_after_a_grace_period():
    from lms.manager.models import UNSERVED_GRACE_SECONDS

    async def scenario():
        models, _ = manager()
        orphan = await models.get_or_load(CHAT)  # its client left during the load
        await models.get_or_load(OTHER)
        early = await models.unload_expired(orphan.last_used + 1_000)
        late = await models.unload_expired(orphan.last_used + UNSERVED_GRACE_SECONDS * 1000)
        return early, late, sorted(models.loaded)

    assert asyncio.run(scenario()) == ([], [CHAT], [OTHER])


def test_guardrails_refuse_a_load_that_does_not_fit():
    async def scenario():
        models, spawner = manager(memory_limit_bytes=1024 * 1024)
        with pytest.raises(LmsError) as caught:
            await models.load(CHAT)
        return caught.value, spawner, models

    error, spawner, models = asyncio.run(scenario())

    assert (error.kind, error.code, error.param) == (Kind.STORAGE, "insufficient_memory", "context_length")
    assert "needs about" in error.message and "guardrails: relaxed" in error.message
    assert spawner.workers == [] and models.loaded == {}


def test_requests_beyond_the_parallel_slots_are_counted_as_queued():
    async def scenario():
        models, _ = manager()
        model = await models.load(CHAT, parallel=2)
        model.worker.gate.clear()
        streams = [models.generate(model, GenerationRequest(messages=HELLO)) for _ in range(3)]
        for stream in streams:
            await anext(stream)
        during = (model.active, model.ps_info()["queued"], model.status, model.ps_info()["parallel"])
        model.worker.gate.set()
        for stream in streams:
            await collect(stream)
        return during, (model.active, model.ps_info()["queued"], model.status)

    during, after = asyncio.run(scenario())

    assert during == (3, 1, "generating", 2)
    assert after == (0, 0, "idle")


def test_a_worker_that_dies_removes_its_model_and_the_next_request_loads_it_again():
    async def scenario():
        models, spawner = manager()
        first = await models.get_or_load(CHAT)
        first.worker.die()
        gone = dict(models.loaded)
        second = await models.get_or_load(CHAT)
        return gone, first, second, spawner

    gone, first, second, spawner = asyncio.run(scenario())

    assert gone == {} and second is not first and len(spawner.workers) == 2
    assert second.worker is spawner.workers[1]


def test_generate_on_an_embedding_model_is_invalid():
    async def scenario():
        models, _ = manager()
        model = await models.load(EMBEDDING)
        with pytest.raises(LmsError) as caught:
            await collect(models.generate(model, GenerationRequest(messages=HELLO)))
        return caught.value, model

    error, model = asyncio.run(scenario())

    assert (error.kind, error.code, error.param) == (Kind.INVALID, "model_not_supported", "model")
    assert [op for op, _ in model.worker.calls] == ["load"] and model.active == 0


def test_the_worker_gets_the_typed_request_with_the_draft_and_the_prompt_echo(home):
    async def scenario():
        models, _ = manager()
        model = await models.load(CHAT)
        listener = Subscriber({"llm.prediction.input"}, asyncio.Queue(10))
        models.bus.subscribers.add(listener)
        events = await collect(models.generate(model, GenerationRequest(messages=HELLO, draft_model=DRAFT)))
        models.bus.subscribers.discard(listener)
        await collect(models.generate(model, GenerationRequest(prompt="plain")))
        return model, events, listener.queue.get_nowait()["data"]

    model, events, published = asyncio.run(scenario())

    sent = [GenerationRequest.from_dict(payload["request"]) for op, payload in model.worker.calls if op == "generate"]
    draft_path = str(home / "models" / "Pub" / "Draft-GGUF" / "draft-Q4_K_M.gguf")
    assert sent[0].draft == DraftSpec(path=draft_path, name=DRAFT, max_tokens=None)
    assert sent[0].echo_prompt is True and sent[0].messages == HELLO and sent[0].draft_model == DRAFT
    assert (sent[1].draft, sent[1].echo_prompt, sent[1].prompt) == (None, False, "plain")
    assert "prompt_text" not in events[0] and published["input"] == "<templated>"
    assert published["modelIdentifier"] == CHAT


def test_a_draft_named_at_load_goes_to_the_worker_as_options():
    async def scenario():
        models, _ = manager()
        return await models.load(CHAT, draft_model=DRAFT, draft_max_tokens=5)

    model = asyncio.run(scenario())

    options = model.worker.calls[0][1]["options"]
    assert options["draft"]["name"] == DRAFT and options["draft"]["max_tokens"] == 5
    assert options["draft"]["path"].endswith("draft-Q4_K_M.gguf") and model.draft_model == DRAFT


def test_an_unknown_draft_model_is_not_found():
    async def scenario():
        models, _ = manager()
        model = await models.load(CHAT)
        with pytest.raises(LmsError) as caught:
            await collect(models.generate(model, GenerationRequest(messages=HELLO, draft_model="nope/missing")))
        return caught.value, model

    error, model = asyncio.run(scenario())

    assert (error.kind, error.code, error.param) == (Kind.NOT_FOUND, "model_not_found", "draft_model")
    assert [op for op, _ in model.worker.calls] == ["load"]


def test_count_and_embed_send_typed_requests():
    async def scenario():
        models, _ = manager()
        chat = await models.load(CHAT)
        embedder = await models.load(EMBEDDING)
        tokens = await models.count_tokens(chat, GenerationRequest(messages=HELLO))
        result = await models.embed(embedder, ["a", "b"])
        return chat, embedder, tokens, result

    chat, embedder, tokens, result = asyncio.run(scenario())

    assert tokens == 7 and len(result["embeddings"]) == 2
    count = GenerationRequest.from_dict(chat.worker.calls[-1][1]["request"])
    assert count.messages == HELLO and count.prompt is None
    assert embedder.worker.calls[-1] == ("embed", {"request": {"inputs": ["a", "b"], "truncate": False}})
    assert embedder.status == "idle" and embedder.active == 0


def test_tokenize_and_render_prompt_ask_the_worker_and_leave_the_model_idle():
    async def scenario():
        models, _ = manager()
        chat = await models.load(CHAT)
        embedder = await models.load(EMBEDDING)
        tokens = await models.tokenize(chat, "Hi!")
        embedded = await models.tokenize(embedder, "ab")
        text = await models.render_prompt(chat, HELLO)
        with pytest.raises(LmsError) as refused:
            await models.render_prompt(embedder, HELLO)
        return chat, embedder, tokens, embedded, text, refused.value

    chat, embedder, tokens, embedded, text, refused = asyncio.run(scenario())

    assert tokens["tokens"] == [ord(c) for c in "Hi!"] and embedded["tokens"] == [97, 98]
    assert chat.worker.calls[1] == ("tokenize", {"text": "Hi!"})
    op, payload = chat.worker.calls[-1]
    rendered = GenerationRequest.from_dict(payload["request"])
    assert op == "render_prompt" and rendered.messages == HELLO and rendered.prompt is None
    assert text == "<user>Hi<assistant>"
    assert (refused.kind, refused.code) == (Kind.INVALID, "model_not_supported")
    assert [op for op, _ in embedder.worker.calls] == ["load", "tokenize"]  # refused before the worker
    assert chat.status == embedder.status == "idle" and chat.active == embedder.active == 0
    assert chat.last_used is not None


def test_tokenize_is_turned_away_when_the_models_queue_is_full():
    async def scenario():
        models, _ = manager(max_queued_requests=0)
        chat = await models.load(CHAT)
        chat.active = chat.parallel  # every slot busy, and no queue
        with pytest.raises(LmsError) as caught:
            await models.tokenize(chat, "Hi")
        return chat, caught.value

    chat, error = asyncio.run(scenario())

    assert error.code == "queue_full" and [op for op, _ in chat.worker.calls] == ["load"]


@pytest.mark.parametrize("context_length", [0, 4097, 2**63 - 1])
def test_a_context_length_the_model_cannot_take_is_invalid(context_length):
    async def scenario():
        models, spawner = manager()
        with pytest.raises(LmsError) as caught:
            await models.load(CHAT, context_length=context_length)
        return caught.value, spawner

    error, spawner = asyncio.run(scenario())
    assert (error.kind, error.param) == (Kind.INVALID, "context_length") and "1 to 4096" in error.message
    assert spawner.workers == []  # refused before any worker starts
