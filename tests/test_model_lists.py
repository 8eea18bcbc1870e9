"""Model lists say what clients otherwise guess: `/v1/models` entries carry the context length a request gets,
the maximum, the capabilities and whether the model is loaded (read here through the openai client, as clients
such as editors' assistants do); `/api/v1/models` adds LM Studio's reasoning options, a description and each
loaded instance's load settings."""

from __future__ import annotations

import httpx

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, TOOL_MODEL


def test_v1_models_tell_context_lengths_and_capabilities(served, client, thinking):
    for instance in served.json("ps"):  # the embedding model, not loaded (JIT loads it again when asked)
        if instance["modelKey"] == EMBEDDING_MODEL:
            served.run("unload", instance["identifier"])
    ps = {m["identifier"]: m for m in served.json("ps")}
    listed = {m.id: m for m in client.models.list().data}
    chat = listed[CHAT_MODEL]
    assert chat.loaded is True and chat.type == "llm"
    assert chat.context_length == ps[CHAT_MODEL]["contextLength"] and chat.max_context_length == 8192
    assert "embedding" not in chat.capabilities
    embedding = listed[EMBEDDING_MODEL]
    assert embedding.capabilities == ["embedding"] and embedding.loaded is False
    assert embedding.context_length == embedding.max_context_length == 512  # not loaded: the model's maximum
    assert "tools" in listed[TOOL_MODEL].capabilities
    assert "reasoning" in listed[thinking].capabilities
    one = client.models.retrieve(CHAT_MODEL)
    assert one.context_length == chat.context_length and one.loaded is True


def test_native_v1_models_add_reasoning_description_and_load_config(served, thinking):
    models = {m["key"]: m for m in httpx.get(f"{served.base_url}/api/v1/models").json()["models"]}
    chat = models[CHAT_MODEL]
    assert "reasoning" not in chat["capabilities"]
    assert "135M" in chat["description"] and "8,192 tokens" in chat["description"]
    loaded = next(m for m in served.json("ps") if m["identifier"] == CHAT_MODEL)
    config = next(i["config"] for i in chat["loaded_instances"] if i["id"] == CHAT_MODEL)
    assert config["context_length"] == loaded["contextLength"] and config["parallel"] == loaded["parallel"]
    assert models[thinking]["capabilities"]["reasoning"] == {"allowed_options": ["off", "on"], "default": "on"}
    assert models[EMBEDDING_MODEL]["type"] == "embedding" and "capabilities" not in models[EMBEDDING_MODEL]
