"""LM Studio's Python SDK 1.6.0b1, the first with API tokens, against a daemon where `lms server token create`
made an inference and an admin token. The venv keeps 1.5.0 (tests/test_lmstudio_sdk.py), so 1.6.0b1 is installed
once into a cached folder and a small script (tests/sdk16_client.py) runs with that folder first on its path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CHAT_MODEL, Lms, free_port
from tests.hf_server import FakeHub

VERSION = "1.6.0b1"
HUB_REPO = "lms-test/Tiny-SmolLM2-GGUF"
TARGET = Path.home() / ".cache" / "lms" / "pip" / f"lmstudio-{VERSION}"
CLIENT = Path(__file__).with_name("sdk16_client.py")
NETWORK_TROUBLE = ("No matching distribution", "Could not find a version", "NewConnectionError",
                   "Failed to establish a new connection", "Temporary failure in name resolution",
                   "Network is unreachable")


def _installed() -> bool:
    return (TARGET / f"lmstudio-{VERSION}.dist-info").is_dir()


@pytest.fixture(scope="module")
def sdk16() -> Path:
    """The folder holding lmstudio 1.6.0b1 and its dependencies; the test is skipped only when pip cannot reach
    a package index."""
    if not _installed():
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(TARGET),
                                 f"lmstudio=={VERSION}"], capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            if any(sign in result.stderr for sign in NETWORK_TROUBLE):
                pytest.skip(f"cannot install lmstudio=={VERSION} (no network?): {result.stderr.strip()[-300:]}")
            raise AssertionError(f"pip install lmstudio=={VERSION} failed:\n{result.stderr}")
    return TARGET


@pytest.fixture(scope="module")
def hub():
    from lms.store.catalog import bundled_model_file

    with FakeHub() as fake:
        fake.add_repo(HUB_REPO, {"Tiny-SmolLM2-Q4_1.gguf": bundled_model_file()}, tags=["gguf"])
        yield fake


@pytest.fixture(scope="module")
def tokened(tmp_path_factory, hub):
    """A daemon that needs tokens (one with the inference scope, one with the admin scope), its Hub the local
    stand-in."""
    home = tmp_path_factory.mktemp("sdk16")
    lms = Lms(home=home / "home", port=free_port(), settings=hub.client_env(home / "hf-home", base={}))
    lms.home.mkdir(parents=True)
    inference = json.loads(lms.run("server", "token", "create", "app", "--json").stdout)["token"]
    admin = json.loads(lms.run("server", "token", "create", "ops", "--scope", "admin", "--json").stdout)["token"]
    lms.run("server", "start", "-p", str(lms.port))
    yield lms, inference, admin
    lms.stop()


def run_client(target: Path, lms: Lms, inference: str, admin: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(target), "NO_PROXY": "127.0.0.1,localhost"}
    env.pop("LMSTUDIO_API_TOKEN", None)
    arguments = [f"127.0.0.1:{lms.port}", inference, admin, CHAT_MODEL, "tiny-smollm2"]
    result = subprocess.run([sys.executable, str(CLIENT), *arguments], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tokens_with_the_sdk_that_sends_them(sdk16, tokened):
    lms, inference, admin = tokened
    report = run_client(sdk16, lms, inference, admin)
    assert report["version"] == VERSION
    assert CHAT_MODEL in report["inference_lists"]
    no_token, wrong = report["no_token"], report["wrong_token"]
    assert no_token["error_type"] == "LMStudioServerError"
    assert "An LM Studio API token is required to make requests to this server, but none was provided." \
        in no_token["message"]
    assert wrong["error_type"] == "LMStudioServerError" and "not valid" in wrong["message"]
    refused = report["inference_load"]
    assert refused["error_type"] == "LMStudioServerError"
    assert "'inference' scope" in refused["message"] and "'admin' scope" in refused["message"]
    assert report["admin_load"] == "sdk16-admin"
    assert isinstance(report["inference_respond"], str)
    refused = report["inference_download"]
    assert refused["error_type"] == "LMStudioServerError" and "downloading a model" in refused["message"]
    assert report["admin_download"] == "lms-test/tiny-smollm2@q4_1"  # its variant key: what loads it exactly
    assert (lms.home / "models" / HUB_REPO / "Tiny-SmolLM2-Q4_1.gguf").is_file()
