"""LM Studio's Python SDK (`lmstudio` 1.5.0) `client.repository` against a real daemon whose Hub is the local
stand-in (tests/hf_server.py): search, download options, a download with progress onto lms's own download jobs,
the downloaded model listed and loaded; plus raw frames for what the SDK hides (cancel, token scopes)."""

from __future__ import annotations

import json
from contextlib import contextmanager

import lmstudio
import pytest
from websockets.sync.client import connect

from tests.conftest import Lms, free_port
from tests.hf_server import FakeHub

REPO_ID = "lms-test/Tiny-SmolLM2-GGUF"
FILE = "Tiny-SmolLM2-Q4_1.gguf"
SLOW_REPO_ID = "lms-test/Slow-SmolLM2-GGUF"  # downloaded throttled, to be cancelled
SLOW_FILE = "Slow-SmolLM2-Q4_1.gguf"
GUEST = {"authVersion": 1, "clientIdentifier": "raw-repository-client", "clientPasskey": "raw-passkey"}


@pytest.fixture(scope="module")
def hub():
    from lms.store.catalog import bundled_model_file

    with FakeHub() as fake:
        fake.add_repo(REPO_ID, {FILE: bundled_model_file()}, tags=["gguf"], downloads=50)
        fake.add_repo(SLOW_REPO_ID, {SLOW_FILE: bundled_model_file()}, tags=["gguf"], downloads=5)
        yield fake


@pytest.fixture(scope="module")
def daemon(hub, tmp_path_factory):
    home = tmp_path_factory.mktemp("sdk-repository")
    lms = Lms(home=home / "home", port=free_port(), settings=hub.client_env(home / "hf-home", base={}))
    lms.run("server", "start", "-p", str(lms.port))
    yield lms
    lms.stop()


@pytest.fixture(scope="module")
def sdk(daemon):
    with lmstudio.Client(f"127.0.0.1:{daemon.port}") as client:
        yield client


def frame(ws) -> dict:
    return json.loads(ws.recv(timeout=120))


@contextmanager
def repository_socket(lms: Lms, creds: dict = GUEST):
    with connect(f"ws://127.0.0.1:{lms.port}/repository", open_timeout=10) as ws:
        ws.send(json.dumps(creds))
        assert frame(ws) == {"success": True}
        yield ws


def test_search_finds_hub_repositories_in_the_formats_asked_for(sdk):
    found = sdk.repository.search_models("tiny-smollm2", limit=5)
    assert [m.search_result.name for m in found] == [REPO_ID]
    result = found[0].search_result
    assert result.identifier.identifier == REPO_ID and result.identifier.type == "hf" and result.exact is True
    everything = [m.search_result.name for m in sdk.repository.search_models("smollm2")]
    assert everything == [REPO_ID, SLOW_REPO_ID]  # most downloaded first
    assert sdk.repository.search_models("smollm2", limit=1)[0].search_result.name == REPO_ID
    # MLX repositories hold safetensors: a GGUF-only repository is not one
    assert sdk.repository.search_models("smollm2", compatibility_types=["safetensors"]) == []
    assert sdk.repository.search_models("no-such-model-anywhere") == []


def test_download_options_are_the_repositorys_variants(sdk, hub):
    options = sdk.repository.search_models("tiny-smollm2")[0].get_download_options()
    assert len(options) == 1
    option = options[0].info
    assert option.name == FILE and option.size_bytes == hub.repos[REPO_ID].files[FILE].size
    assert option.download_identifier == f"{REPO_ID}@q4_1" and option.quantization == "Q4_1"
    assert option.indexed_model_identifier == f"{REPO_ID}/{FILE}"
    assert option.fit_estimation == "fitWithoutGPU" and option.recommended is True


def test_download_reports_progress_and_the_model_is_listed_and_loads(sdk, hub, daemon):
    option = sdk.repository.search_models("tiny-smollm2")[0].get_download_options()[0]
    progress, finalized = [], []
    hub.throttle_bytes_per_second = 60_000_000  # about 1.6 s: several progress reports
    try:
        identifier = option.download(on_progress=progress.append, on_finalize=lambda: finalized.append(True))
    finally:
        hub.throttle_bytes_per_second = None
    size = hub.repos[REPO_ID].files[FILE].size
    assert len(progress) >= 2 and finalized == [True]
    assert progress[-1].downloaded_bytes == progress[-1].total_bytes == size
    assert all(p.total_bytes == size for p in progress)
    assert any(0 < p.downloaded_bytes < size for p in progress) and any(p.speed_bytes_per_second > 0 for p in progress)
    assert (daemon.home / "models" / REPO_ID / FILE).stat().st_size == size
    downloaded = {m.model_key for m in sdk.list_downloaded_models()}
    assert identifier.split("@")[0] == "lms-test/tiny-smollm2" in downloaded
    assert sdk.llm.model(identifier).get_info().model_key == "lms-test/tiny-smollm2"
    again = option.download()  # already here: success at once, the same identifier
    assert again == identifier


def test_a_cancelled_download_stops_its_job(daemon, hub):
    hub.throttle_bytes_per_second = 2_000_000
    try:
        with repository_socket(daemon) as ws:
            ws.send(json.dumps({"type": "channelCreate", "endpoint": "downloadModel", "channelId": 1,
                                "creationParameter": {"downloadIdentifier": f"{SLOW_REPO_ID}@q4_1"}}))
            message = frame(ws)["message"]
            while message["update"]["downloadedBytes"] == 0:
                message = frame(ws)["message"]
            assert message["type"] == "downloadProgress"
            ws.send(json.dumps({"type": "channelSend", "channelId": 1, "message": {"type": "cancel"}}))
            answer = frame(ws)
            while answer["type"] == "channelSend":
                answer = frame(ws)
    finally:
        hub.throttle_bytes_per_second = None
    assert answer["type"] == "channelError" and answer["error"]["errorData"]["code"] == "download_cancelled"
    jobs = daemon.control().get("/lms/downloads")
    assert [j["status"] for j in jobs if j["model"] == SLOW_REPO_ID] == ["cancelled"]
    assert not (daemon.home / "models" / SLOW_REPO_ID).exists()


def test_bad_parameters_are_rpc_errors(daemon):
    with repository_socket(daemon) as ws:
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "getModelDownloadOptions", "callId": 1,
                            "parameter": {"modelSearchResultIdentifier": {"type": "catalog", "identifier": "x/y"}}}))
        error = frame(ws)
        assert error["type"] == "rpcError" and error["error"]["errorData"]["param"] == "modelSearchResultIdentifier"
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "searchModels", "callId": 2,
                            "parameter": {"opts": {"searchTerm": "x", "limit": 99}}}))
        error = frame(ws)
        assert error["type"] == "rpcError" and error["error"]["errorData"]["param"] == "limit"
        ws.send(json.dumps({"type": "channelCreate", "endpoint": "downloadModel", "channelId": 1,
                            "creationParameter": {"downloadIdentifier": "lms-test/No-Such-Repo-GGUF@q4_1"}}))
        error = frame(ws)
        assert error["type"] == "channelError" and "not found" in error["error"]["title"]


def test_downloads_need_an_admin_token(tmp_path):
    lms = Lms(home=tmp_path / "home", port=free_port())
    lms.home.mkdir(parents=True)
    token = json.loads(lms.run("server", "token", "create", "app", "--json").stdout)["token"]
    identifier, passkey = token.removeprefix("sk-lm-").split(":")
    try:
        lms.run("server", "start", "-p", str(lms.port))
        with repository_socket(lms, {**GUEST, "clientIdentifier": identifier, "clientPasskey": passkey}) as ws:
            ws.send(json.dumps({"type": "channelCreate", "endpoint": "downloadModel", "channelId": 1,
                                "creationParameter": {"downloadIdentifier": f"{REPO_ID}@q4_1"}}))
            error = frame(ws)
            assert error["type"] == "channelError" and error["error"]["errorData"]["code"] == "insufficient_scope"
            assert "admin" in error["error"]["title"]
    finally:
        lms.stop()
