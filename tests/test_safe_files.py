"""Safe files, end to end with the real CLI and daemon: `lms get` against a mirror (tests/hf_server.py) that answers
hostile file names or repository ids writes nothing outside `models/`, `lms runtime` refuses versions that are
not plain, `lms rm` of an MLX model removes exactly its folder, logs are the owner's only, and the CLI sends
nothing to a control socket that is not the user's."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import subprocess
import sys
import threading

import pytest

from lms.config import socket_path
from tests.conftest import REPO, Lms, free_port
from tests.hf_server import FakeHub, HubFile

HOSTILE_NAMES = {
    "org/Dotdot-GGUF": "../../../escape-Q4_K_M.gguf",
    "org/Inner-GGUF": "sub/../../../../escape-Q4_K_M.gguf",
    "org/Backslash-GGUF": "..\\..\\escape-Q4_K_M.gguf",
    "org/Nul-GGUF": "escape\x00-Q4_K_M.gguf",
}
ABSOLUTE_ID = "org/Absolute-GGUF"
RENAMED_ID = "org/Renamed-GGUF"


@pytest.fixture(scope="module")
def hostile_hub(tmp_path_factory):
    weights = tmp_path_factory.mktemp("weights") / "w.gguf"
    weights.write_bytes(b"GGUF" + bytes(60))
    with FakeHub() as fake:
        for repo_id, name in HOSTILE_NAMES.items():
            fake.add_repo(repo_id, {name: weights}, tags=["gguf"])
        absolute = fake.add_repo(ABSOLUTE_ID, {}, tags=["gguf"])
        target = str(tmp_path_factory.getbasetemp() / "absolute-escape-Q4_K_M.gguf")
        absolute.files[target] = HubFile(path=target, local=weights, size=weights.stat().st_size)
        fake.add_repo(RENAMED_ID, {"fine-Q4_K_M.gguf": weights}, tags=["gguf"], extra={"id": "../../../outside"})
        yield fake


@pytest.fixture(scope="module")
def hub_lms(tmp_path_factory, hostile_hub):
    root = tmp_path_factory.mktemp("safe-files")
    instance = Lms(home=root / "home", port=free_port(), settings=hostile_hub.client_env(root / "hf-home", base={}))
    yield instance
    instance.stop()


def escaped_files(root) -> list[str]:
    return [str(p) for p in root.rglob("*") if "escape" in p.name or p.name == "outside"]


@pytest.mark.parametrize("repo_id", [*HOSTILE_NAMES, ABSOLUTE_ID])
def test_a_mirror_answering_a_hostile_file_name_writes_nothing(hub_lms, hostile_hub, tmp_path_factory, repo_id):
    result = hub_lms.run("get", repo_id, "-y", check=False, timeout=120)
    assert result.returncode == 1
    assert "unsafe file name" in result.stderr and "nothing was downloaded" in result.stderr
    assert escaped_files(tmp_path_factory.getbasetemp()) == []
    assert not (hub_lms.home / "models" / repo_id).exists()
    assert not [r for r in hostile_hub.requests if "/resolve/" in r.path]  # no file was even asked for


def test_a_mirror_answering_a_hostile_repository_id_writes_nothing(hub_lms, tmp_path_factory):
    result = hub_lms.run("get", RENAMED_ID, "-y", check=False, timeout=120)
    assert result.returncode == 1 and "unsafe repository id" in result.stderr
    assert escaped_files(tmp_path_factory.getbasetemp()) == []
    native = hub_lms.control().post  # the control route takes the same path
    with pytest.raises(Exception, match="unsafe repository id"):
        native("/lms/downloads", {"model": RENAMED_ID})


def test_an_unsafe_repository_id_is_refused_before_the_hub_is_asked(hub_lms, hostile_hub):
    asked = len(hostile_hub.requests)
    result = hub_lms.run("get", "org/..", "-y", check=False)
    assert result.returncode == 1 and "is not a repository id" in result.stderr
    assert len(hostile_hub.requests) == asked


def test_runtime_versions_that_are_not_plain_are_refused(lms):
    for command in (["runtime", "get", "llama.cpp@../../../escape"], ["runtime", "select", "llama.cpp@../x"],
                    ["runtime", "remove", "llama.cpp@--index-url=http://x"]):
        result = lms.run(*command, check=False)
        assert result.returncode != 0 and "is not a version number" in result.stdout + result.stderr, command
    assert not (lms.home / "runtimes").exists() and not list(lms.home.parent.rglob("*escape*"))


def write_mlx_folder(folder) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    header = json.dumps({"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))


def test_rm_of_an_mlx_model_removes_exactly_its_folder(lms):
    models = lms.home / "models"
    write_mlx_folder(models / "pub" / "Alpha-MLX")
    write_mlx_folder(models / "pub" / "Beta-MLX")
    (models / "pub" / "README.txt").write_text("kept")
    removed = lms.json("rm", "pub/alpha-mlx", "-y")
    assert removed["removed"] == [str(models / "pub" / "Alpha-MLX")]
    assert not (models / "pub" / "Alpha-MLX").exists()
    assert (models / "pub" / "Beta-MLX" / "model.safetensors").is_file() and (models / "pub" / "README.txt").exists()
    assert "pub/beta-mlx" in [m["modelKey"] for m in lms.json("ls")]


def test_logs_and_private_folders_are_the_owners_only(lms):
    lms.run("daemon", "up")
    logs = lms.home / "server-logs"
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert stat.S_IMODE((lms.home / ".internal").stat().st_mode) == 0o700
    files = [p for p in logs.iterdir() if p.suffix == ".log"]
    assert "daemon-stdio.log" in [p.name for p in files] and any(p.name[:4].isdigit() for p in files)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files if p.name != "workers.log"} == \
        {p.name: 0o600 for p in files if p.name != "workers.log"}


@pytest.mark.skipif(os.getuid() != 0, reason="making a socket owned by another user needs root")
def test_the_cli_sends_nothing_to_a_socket_of_another_user(tmp_path):
    home = tmp_path / "home"
    path = socket_path(home)
    path.parent.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    os.chown(path, 65534, 65534)  # nobody's: as if another user had put it there first
    received = bytearray()

    def record():
        server.settimeout(15)
        try:
            while True:
                connection, _ = server.accept()
                with connection:
                    connection.settimeout(2)
                    received.extend(connection.recv(65536))
        except OSError:
            pass

    listener = threading.Thread(target=record, daemon=True)
    listener.start()
    env = {**os.environ, "LMS_HOME": str(home), "HF_TOKEN": "hf_should_never_leave"}
    try:
        result = subprocess.run([sys.executable, "-m", "lms", "get", "org/model", "-y"], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=60)
    finally:
        server.close()
        listener.join(5)
    assert result.returncode == 1 and "Refusing to use the control socket" in result.stderr
    assert "belongs to user 65534" in result.stderr and bytes(received) == b""
