"""Unit tests of load settings without an engine: the KV cache types in the memory estimate, `--context-length max`,
per-model load defaults (what the manager sends a worker), max_jit_models with least-recently-used eviction, the
draft's min-probability cut, and the settings `lms config` changes (schema, persistence, live or restart)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lms.errors import Kind, LmsError
from lms.manager import load_defaults
from lms.manager.models import ModelManager
from lms.settings import APPLIES, Settings, persist_setting, restart_note, validated_value
from lms.store import catalog
from lms.store.estimate import KV_TYPE_BYTES, estimate, largest_context
from tests.fake_worker import Spawner
from tests.gguf_files import F16, write_chat_models, write_gguf

CHAT, OTHER, BUNDLED = "pub/chat", "pub/other", "huggingfacetb/smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LMS_HOME", str(tmp_path))
    root = tmp_path / "models"
    write_chat_models(root)
    write_gguf(root / "lms-test" / "third-GGUF" / "third-Q4_K_M.gguf")
    target = root / "HuggingFaceTB" / "SmolLM2-135M-Instruct-GGUF"
    target.mkdir(parents=True)
    (target / catalog.bundled_model_file().name).symlink_to(catalog.bundled_model_file())
    return tmp_path


def manager(**settings) -> tuple[ModelManager, Spawner]:
    spawner = Spawner()
    return ModelManager(Settings(**settings), spawn_worker=spawner), spawner


def bundled() -> catalog.ModelEntry:
    return catalog.resolve(BUNDLED)


# --- the estimate ------------------------------------------------------------------------------------------------


def test_a_q8_0_kv_cache_is_about_half_of_f16_and_q4_0_about_a_quarter_plus_scales():
    entry = bundled()
    parts = {kind: estimate(entry, 4096, 0.0, 1, kind) for kind in KV_TYPE_BYTES}
    f16 = parts["f16"].context_bytes
    assert f16 > 0
    assert parts["q8_0"].context_bytes == pytest.approx(f16 * 34 / 64, rel=1e-3)  # half, plus a scale per 32
    assert parts["q4_0"].context_bytes == pytest.approx(f16 * 18 / 64, rel=1e-3)
    assert parts["q8_0"].prefix_cache_bytes == parts["q8_0"].context_bytes  # the host cache holds the same type
    assert parts["q8_0"].model_bytes == parts["f16"].model_bytes  # weights do not change
    assert parts["q8_0"].as_dict()["kvCacheType"] == "q8_0"


def test_the_kv_cache_grows_with_the_slots_in_every_type():
    entry = bundled()
    one, four = estimate(entry, 2048, 0.0, 1, "q4_0"), estimate(entry, 2048, 0.0, 4, "q4_0")
    assert four.context_bytes == 4 * one.context_bytes


def test_the_largest_context_fits_the_room_and_one_more_step_does_not():
    entry = bundled()
    room = estimate(entry, 3000, 0.0, 2, "f16").total_bytes
    fits = largest_context(entry, room, 2, "f16")
    assert fits % 256 == 0 and 2560 <= fits <= 3000
    assert estimate(entry, fits, 0.0, 2).total_bytes <= room < estimate(entry, fits + 256, 0.0, 2).total_bytes
    # a smaller cache type fits a longer context in the same room
    assert largest_context(entry, room, 2, "q8_0") > fits
    assert largest_context(entry, 10 ** 15, 2) == entry.max_context_length
    assert largest_context(entry, 1000, 2) == 0


def test_compute_buffers_grow_with_the_batch_and_without_flash_attention_with_the_context():
    entry = bundled()
    default, big = estimate(entry, 4096), estimate(entry, 4096, batch_size=2048)
    # SmolLM2: 4 bytes x (3 x 1536 + 6 x 576) a token of batch, about 32 KiB (measured: 32 KiB)
    assert big.compute_bytes - default.compute_bytes == 4 * (3 * 1536 + 6 * 576) * (2048 - 512)
    assert estimate(entry, 4096, batch_size=64).compute_bytes < default.compute_bytes
    assert estimate(entry, 4096, batch_size=1).compute_bytes >= 4 * 2**20  # never below the floor
    scores = estimate(entry, 4096, batch_size=2048, flash_attention="off").compute_bytes - big.compute_bytes
    assert scores == 4 * 9 * 4096 * 2048  # 9 heads x context x batch, f32
    assert estimate(entry, 4096, batch_size=2048, flash_attention="on").compute_bytes == big.compute_bytes
    room = estimate(entry, 3000, 0.0, 2).total_bytes
    assert largest_context(entry, room, 2, flash_attention="off") < largest_context(entry, room, 2)


def test_the_estimate_of_a_load_counts_its_batch_and_flash_attention_settings():
    models, _ = manager()
    entry = bundled()
    plain = models.estimate(entry, 4096)["parts"]["computeBuffers"]
    assert models.estimate(entry, 4096, batch_size=2048)["parts"]["computeBuffers"] > plain
    assert models.estimate(entry, 4096, flash_attention="off")["parts"]["computeBuffers"] > plain
    # a quantized KV cache turns flash attention on: no scores to hold
    assert models.estimate(entry, 4096, kv_cache_type="q8_0", flash_attention="off")["parts"]["computeBuffers"] \
        == plain


def test_context_length_max_picks_the_largest_that_fits_the_memory_limit():
    models, _ = manager()
    entry = bundled()
    models.settings.memory_limit_bytes = estimate(entry, 2000, 0.0, 4).total_bytes
    plan = models.estimate(entry, "max")
    assert plan["passesGuardrails"] and 1792 <= plan["contextLength"] <= 2000
    assert "largest that fits the memory guardrails" in plan["contextLengthChosen"]
    models.settings.guardrails = "off"
    assert models.estimate(entry, "max")["contextLength"] == entry.max_context_length
    models.settings.guardrails, models.settings.memory_limit_bytes = "relaxed", 1000
    with pytest.raises(LmsError) as caught:
        models.estimate(entry, "max")
    assert caught.value.code == "insufficient_memory"


# --- loads: settings, defaults, refusals -------------------------------------------------------------------------


def test_a_load_sends_the_kv_cache_flash_attention_batch_and_draft_cut_to_the_worker():
    async def scenario():
        models, spawner = manager()
        model = await models.load(CHAT, kv_cache_type="q8_0", batch_size=256, draft_min_probability=0.5)
        return model, spawner.workers[-1].calls[0][1]["options"]

    model, options = asyncio.run(scenario())
    # a quantized V cache needs flash attention in llama.cpp: it is turned on
    assert (options["kv_cache_type"], options["flash_attention"], options["batch_size"]) == ("q8_0", "on", 256)
    assert options["draft_min_probability"] == 0.5
    assert (model.kv_cache_type, model.flash_attention) == ("q8_0", "on")


def test_a_quantized_kv_cache_with_flash_attention_off_is_refused_before_any_worker_starts():
    async def scenario():
        models, spawner = manager()
        with pytest.raises(LmsError) as caught:
            await models.load(CHAT, kv_cache_type="q4_0", flash_attention="off")
        return caught.value, spawner

    error, spawner = asyncio.run(scenario())
    assert error.kind == Kind.INVALID and "flash attention" in error.message and not spawner.workers


@pytest.mark.parametrize("settings", [{"kv_cache_type": "fp8"}, {"flash_attention": "yes"}, {"batch_size": 0},
                                      {"draft_min_probability": 1.5}, {"context_length": "most"}])
def test_bad_load_settings_are_invalid_and_name_the_setting(settings):
    async def scenario():
        models, _ = manager()
        with pytest.raises(LmsError) as caught:
            await models.load(CHAT, **settings)
        return caught.value

    error = asyncio.run(scenario())
    assert error.kind == Kind.INVALID and error.param == next(iter(settings))


def test_an_embedding_model_refuses_a_quantized_kv_cache(home):
    write_gguf(home / "models" / "Emb" / "Bert-GGUF" / "bert-f16.gguf", arch="bert", file_type=F16,
               context_length=512)

    async def scenario():
        models, _ = manager()
        with pytest.raises(LmsError) as caught:
            await models.load("emb/bert", kv_cache_type="q8_0")
        return caught.value

    error = asyncio.run(scenario())
    assert error.code == "model_not_supported" and "embedding" in error.message


def test_model_defaults_apply_to_explicit_and_jit_loads_unless_the_load_says_otherwise():
    load_defaults.update(CHAT, {"context_length": 1024, "parallel": 2, "ttl": 120, "kv_cache_type": "q8_0",
                                "identifier": "mine"})

    async def scenario():
        models, spawner = manager()
        jit = await models.get_or_load(CHAT)
        explicit = await models.load(CHAT, context_length=512, parallel=3)
        return jit, explicit, [w.calls[0][1]["options"] for w in spawner.workers]

    jit, explicit, options = asyncio.run(scenario())
    assert (jit.identifier, jit.context_length, jit.parallel, jit.ttl_seconds, jit.kv_cache_type) == \
        ("mine", 1024, 2, 120, "q8_0")
    assert (explicit.identifier, explicit.context_length, explicit.parallel, explicit.ttl_seconds) == \
        ("mine:2", 512, 3, 120)
    assert options[0]["kv_cache_type"] == options[1]["kv_cache_type"] == "q8_0"


def test_model_defaults_are_checked_merged_and_reset(home):
    assert load_defaults.update(CHAT, {"parallel": 2}) == {"parallel": 2}
    assert load_defaults.update(CHAT, {"context_length": "max"}) == {"parallel": 2, "context_length": "max"}
    assert load_defaults.update(CHAT, {"parallel": None}) == {"context_length": "max"}
    with pytest.raises(LmsError) as caught:
        load_defaults.update(CHAT, {"kv_cache_type": "q2"})
    assert caught.value.param == "kv_cache_type"
    with pytest.raises(LmsError):
        load_defaults.update(CHAT, {"speed": "fast"})
    assert load_defaults.update(CHAT, {}, reset=True) == {}
    assert json.loads((home / "model-defaults.json").read_text()) == {}


# --- max_jit_models ----------------------------------------------------------------------------------------------


def test_max_jit_models_keeps_n_and_evicts_the_least_recently_used_never_an_explicit_load():
    async def scenario():
        models, _ = manager(max_jit_models=2)
        pinned = await models.load(OTHER, identifier="pinned")
        first = await models.get_or_load(CHAT)
        second = await models.get_or_load(OTHER)
        first.last_used, second.last_used = 2_000, 1_000  # the first was used last
        await models.get_or_load("lms-test/third")
        return sorted(models.loaded), pinned

    loaded, pinned = asyncio.run(scenario())
    assert loaded == sorted(["pinned", CHAT, "lms-test/third"]) and not pinned.jit


def test_without_auto_evict_jit_models_accumulate():
    async def scenario():
        models, _ = manager(jit_auto_evict=False, max_jit_models=1)
        for name in (CHAT, OTHER, "lms-test/third"):
            await models.get_or_load(name)
        return sorted(models.loaded)

    assert len(asyncio.run(scenario())) == 3


def test_a_live_change_of_max_jit_models_applies_at_the_next_jit_load():
    async def scenario():
        models, _ = manager()
        await models.get_or_load(CHAT)
        models.settings.max_jit_models = 2  # what `lms config set max_jit_models 2` does to the running daemon
        await models.get_or_load(OTHER)
        return sorted(models.loaded)

    assert asyncio.run(scenario()) == [CHAT, OTHER]


# --- the draft's min probability ---------------------------------------------------------------------------------


def test_the_top_probability_of_logits_is_softmax_of_the_largest():
    pytest.importorskip("llama_cpp")
    from runtimes.llama_cpp.draft import top_probability

    logits = np.array([2.0, 1.0, 0.0], dtype=np.float32)
    expected = np.exp(2.0) / np.exp([2.0, 1.0, 0.0]).sum()
    assert top_probability(logits) == pytest.approx(expected)
    assert top_probability(np.zeros(4, dtype=np.float32)) == pytest.approx(0.25)


# --- settings ----------------------------------------------------------------------------------------------------


def test_every_setting_says_when_a_change_applies():
    assert set(APPLIES) == set(Settings.model_fields)
    assert restart_note("jit_ttl_seconds") is None
    assert "restarting the server" in restart_note("cors_origins")
    assert "restarting the daemon" in restart_note("responses_max_count")


def test_values_from_the_command_line_are_checked_by_the_schema():
    assert validated_value("jit_ttl_seconds", "60") == 60
    assert validated_value("jit_loading", "off") is False
    assert validated_value("max_jit_models", 3) == 3
    for key, value in (("max_jit_models", "0"), ("guardrails", "loose"), ("threads", "many")):
        with pytest.raises(LmsError) as caught:
            validated_value(key, value)
        assert caught.value.param == key and key in caught.value.message
    with pytest.raises(LmsError) as caught:
        validated_value("no_such_setting", "1")
    assert caught.value.code == "unknown_setting"


def test_persisted_settings_keep_the_other_keys_and_are_read_back(home, monkeypatch):
    (home / "settings.json").write_text(json.dumps({"threads": 2, "someLmStudioKey": True}))
    persist_setting("max_jit_models", 3)
    persist_setting("threads", None)
    assert json.loads((home / "settings.json").read_text()) == {"someLmStudioKey": True, "max_jit_models": 3}
    assert oct(os.stat(home / "settings.json").st_mode & 0o777) == "0o600"
    monkeypatch.delenv("LMS_MAX_JIT_MODELS", raising=False)
    assert Settings.load().max_jit_models == 3


def test_a_hand_edited_bad_default_is_an_error_naming_the_file_and_reset_fixes_it(home):
    (home / "model-defaults.json").write_text(json.dumps({CHAT: {"parallel": "four"}}))

    async def scenario():
        models, _ = manager()
        with pytest.raises(LmsError) as caught:
            await models.load(CHAT)
        load_defaults.update(CHAT, {}, reset=True)
        return caught.value, await models.load(CHAT)

    error, model = asyncio.run(scenario())
    assert error.code == "invalid_load_defaults" and "model-defaults.json" in error.message
    assert model.parallel == 4
