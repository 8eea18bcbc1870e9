"""Ollama's model management end to end, with the official `ollama` client: pull from a local Hugging Face
stand-in, copy, create from an uploaded GGUF blob and from a local model with a system prompt, delete, push."""

from __future__ import annotations

import httpx
import ollama
import pytest

from tests.conftest import CHAT_MODEL, Lms, free_port
from tests.hf_server import FakeHub

HUB_REPO = "lms-test/Tiny-SmolLM2-GGUF"


@pytest.fixture(scope="module")
def managed(tmp_path_factory):
    from lms.store.catalog import bundled_model_file

    with FakeHub() as hub:
        hub.add_repo(HUB_REPO, {"Tiny-SmolLM2-Q4_1.gguf": bundled_model_file()}, tags=["gguf"])
        home = tmp_path_factory.mktemp("ollama-models")
        lms = Lms(home=home / "home", port=free_port(), settings=hub.client_env(home / "hf-home", base={}))
        lms.run("server", "start", "-p", str(lms.port))
        yield lms, ollama.Client(host=lms.base_url, timeout=300)
        lms.stop()


def names(olla) -> set[str]:
    return {model.model for model in olla.list().models}


def test_pull_streams_progress_onto_our_downloads(managed):
    lms, olla = managed
    progress = list(olla.pull(f"hf.co/{HUB_REPO}:Q4_1", stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    sized = [p for p in progress if p.total]
    assert sized and sized[-1].completed == sized[-1].total > 90_000_000 and sized[-1].digest.startswith("sha256:")
    assert "lms-test/tiny-smollm2:latest" in names(olla)
    assert any(m["modelKey"] == "lms-test/tiny-smollm2" for m in lms.json("ls"))
    again = olla.pull(f"hf.co/{HUB_REPO}:Q4_1")  # already here: success at once
    assert again.status == "success"
    with pytest.raises(ollama.ResponseError) as library_name:
        olla.pull("llama3.2")
    assert library_name.value.status_code == 400 and "hf.co/" in library_name.value.error


def test_copy_create_and_delete(managed, tmp_path):
    lms, olla = managed
    olla.copy(CHAT_MODEL, "smol-copy")
    assert "smol-copy:latest" in names(olla)
    copied = [m for m in lms.json("ls") if m["modelKey"] == "local/smol-copy"][0]
    original = [m for m in lms.json("ls") if m["modelKey"] == CHAT_MODEL][0]
    assert copied["sizeBytes"] == original["sizeBytes"]

    olla.create(model="pirate", from_=CHAT_MODEL, system="You are a pirate. Always say Arr.",
                parameters={"temperature": 0, "num_predict": 16})
    assert "pirate:latest" in names(olla)
    reply = olla.chat(model="pirate", messages=[{"role": "user", "content": "Hello"}])
    plain = olla.chat(model=CHAT_MODEL, messages=[{"role": "user", "content": "Hello"}],
                      options={"temperature": 0, "num_predict": 16})
    # the system prompt reached the model (in place of the template's default one)
    assert reply.prompt_eval_count != plain.prompt_eval_count and "pirate" in reply.message.content.lower()
    assert reply.eval_count <= 16  # num_predict from the created model's parameters

    from lms.store.catalog import bundled_model_file

    digest = olla.create_blob(bundled_model_file())
    assert httpx.head(f"{lms.base_url}/api/blobs/{digest}").status_code == 200
    assert httpx.head(f"{lms.base_url}/api/blobs/sha256:{'0' * 64}").status_code == 404
    bad = httpx.post(f"{lms.base_url}/api/blobs/sha256:{'0' * 64}", content=b"not this")
    assert bad.status_code == 400 and "digest" in bad.json()["error"]
    steps = list(olla.create(model="from-blob:v1", files={"model.gguf": digest}, stream=True))
    assert steps[-1].status == "success"
    assert "from-blob-v1:latest" in names(olla)
    answer = olla.generate(model="from-blob-v1", prompt="Hi", options={"num_predict": 4})
    assert answer.done

    for name in ("smol-copy", "pirate", "from-blob-v1"):
        olla.delete(name)
    assert not {"smol-copy:latest", "pirate:latest", "from-blob-v1:latest"} & names(olla)
    assert f"{CHAT_MODEL}:latest" in names(olla)  # the files it shared are still there for the original
    with pytest.raises(ollama.ResponseError) as gone:
        olla.delete("pirate")
    assert gone.value.status_code == 404


def test_push_and_unsupported_create_options_are_clear(managed):
    lms, olla = managed
    with pytest.raises(ollama.ResponseError) as push:
        olla.push("anything")
    assert push.value.status_code == 501
    with pytest.raises(ollama.ResponseError) as quantize:
        olla.create(model="q", from_=CHAT_MODEL, quantize="q4_K_M")
    assert quantize.value.status_code == 400 and "quantiz" in quantize.value.error
    with pytest.raises(ollama.ResponseError) as escape:
        olla.create(model="../../etc", from_=CHAT_MODEL)
    assert escape.value.status_code == 400
    assert not (lms.home.parent / "etc").exists()


def test_management_needs_an_admin_token(tmp_path):
    lms = Lms(home=tmp_path / "home", port=free_port())
    try:
        user = lms.run("server", "token", "create", "user").stdout.strip()
        lms.run("server", "start", "-p", str(lms.port))
        olla = ollama.Client(host=lms.base_url, headers={"Authorization": f"Bearer {user}"}, timeout=120)
        assert f"{CHAT_MODEL}:latest" in names(olla)  # inference tokens list and generate
        with pytest.raises(ollama.ResponseError) as refused:
            olla.copy(CHAT_MODEL, "mine")
        assert refused.value.status_code == 403 and "admin" in refused.value.error
        anonymous = httpx.get(lms.base_url + "/api/tags")
        assert anonymous.status_code == 401
        assert httpx.get(lms.base_url + "/").text == "Ollama is running"  # the health check stays open
    finally:
        lms.stop()


