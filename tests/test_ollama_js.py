"""The official `ollama` JavaScript client (npm, run by Node.js) against a real daemon: list, show, chat plain and
streamed, raw generate, embed, ps, and Ollama's error for a missing model."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL

SCRIPT = Path(__file__).with_name("js") / "ollama_client.mjs"
CLIENT_VERSION = "0.6.3"
CACHE = Path.home() / ".cache" / "lms" / "npm" / f"ollama-{CLIENT_VERSION}"


@pytest.fixture(scope="module")
def node_client() -> Path:
    """A folder with the script and the client installed beside it (npm install once, cached)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are needed to run the JavaScript client")
    if not (CACHE / "node_modules" / "ollama").is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", f"ollama@{CLIENT_VERSION}"],
                       cwd=CACHE, check=True, timeout=300, capture_output=True)
    shutil.copy(SCRIPT, CACHE / SCRIPT.name)
    return CACHE / SCRIPT.name


def test_the_javascript_client_works_unchanged(served, node_client):
    run = subprocess.run(["node", str(node_client), served.base_url, CHAT_MODEL, EMBEDDING_MODEL],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["version"] and f"{CHAT_MODEL}:latest" in out["models"] and "completion" in out["show"]
    assert out["chat"]["content"] and out["chat"]["done"] and out["chat"]["eval_count"] > 0
    assert out["streamed"]["content"] == out["chat"]["content"] and out["streamed"]["done"]
    assert out["generate"] and out["embed"] == [384, 384]
    assert f"{CHAT_MODEL}:latest" in out["ps"]
    assert out["missing"] == {"status": 404, "error": "model 'no-such-model' not found"}
