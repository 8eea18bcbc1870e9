"""LM Studio's own JavaScript SDK (`@lmstudio/sdk` from npm, run by Node.js), unchanged, against a real daemon:
listing downloaded and loaded models, getOrLoad, respond plain and streamed with LM Studio's stats, context length,
tokenize and countTokens, embeddings (JIT-loaded), and an error (not a hang) for an unknown model key. Both the
1.x line (1.5.0, the one the protocol notes were measured on) and 2.0.0 run the same script."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL

SCRIPT = Path(__file__).with_name("js") / "lmstudio_client.mjs"
NPM_CACHE = Path.home() / ".cache" / "lms" / "npm"
# 2.0.0 asks for @lmstudio/lms-isomorphic ^0.5.0, which was never published to npm (0.4.6 is the newest there); the
# SDK imports the same four names from it as 1.5.0 does, so 0.4.6 stands in for it.
OVERRIDES = {"2.0.0": {"@lmstudio/lms-isomorphic": "0.4.6"}}


@pytest.fixture(scope="module", params=["1.5.0", "2.0.0"])
def node_client(request) -> Path:
    """A folder with the script and the SDK installed beside it (npm install once per version, cached)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are needed to run the JavaScript SDK")
    version = request.param
    cache = NPM_CACHE / f"lmstudio-sdk-{version}"
    if not (cache / "node_modules" / "@lmstudio" / "sdk").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        manifest = {"private": True, "dependencies": {"@lmstudio/sdk": version},
                    "overrides": OVERRIDES.get(version, {})}
        (cache / "package.json").write_text(json.dumps(manifest))
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund"],
                       cwd=cache, check=True, timeout=300, capture_output=True)
    shutil.copy(SCRIPT, cache / SCRIPT.name)
    return cache / SCRIPT.name


def test_the_javascript_sdk_works_unchanged(served, node_client):
    run = subprocess.run(["node", str(node_client), f"ws://127.0.0.1:{served.port}", CHAT_MODEL, EMBEDDING_MODEL],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    downloaded = {m["modelKey"]: m["type"] for m in out["downloaded"]}
    assert downloaded[CHAT_MODEL] == "llm" and downloaded[EMBEDDING_MODEL] == "embedding"
    assert CHAT_MODEL in out["loaded"] and out["identifier"] == CHAT_MODEL
    respond = out["respond"]
    assert respond["content"] and respond["stopReason"] in ("eosFound", "maxPredictedTokensReached")
    assert 0 < respond["predictedTokensCount"] <= 8 and respond["promptTokensCount"] > 0
    assert respond["modelKey"] == CHAT_MODEL
    streamed = out["streamed"]
    assert streamed["fragments"] > 0 and streamed["joined"] == streamed["content"] == respond["content"]
    assert streamed["stopReason"] == respond["stopReason"]
    assert out["contextLength"] > 0 and out["tokens"] == out["countTokens"] > 0
    assert out["embed"] == [384, 384] and out["embeddingContextLength"] > 0
    assert EMBEDDING_MODEL in out["loadedEmbedding"]
    missing = out["missing"]
    assert missing != "no error" and "no answer within" not in missing["message"], missing
    # The SDK's own text for a generic.pathNotFound error, listing what is downloaded.
    assert 'Cannot find a model with path "no-such-model"' in missing["message"] and CHAT_MODEL in missing["message"]
