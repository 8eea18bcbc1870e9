"""Names from outside that become paths (Hub repository ids, commits and file names, runtime versions, import
targets), what `lms rm` removes, the modes of the files that hold secrets, and the CLI's check of the control
socket before it sends anything."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from pathlib import Path

import pytest

from lms import config
from lms.client import DaemonClient, DaemonError, check_socket_owner
from lms.errors import LmsError
from lms.logs import DatedFileHandler
from lms.store import catalog, hub, importer, removal, runtimes
from tests.hf_server import FakeHub

UNSAFE_NAMES = ["../escape.gguf", "/abs/escape.gguf", "a/../../escape.gguf", "a\\..\\escape.gguf", "a\x00b.gguf",
                "a//b.gguf", "./x.gguf", "x\n.gguf", "", "a/" + "x" * 300 + ".gguf"]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_hub_file_names_are_refused(name):
    with pytest.raises(hub.HubError) as refused:
        hub.safe_file_path(name, "org/model")
    assert refused.value.code == "unsafe_hub_answer" and "nothing was downloaded" in refused.value.message


@pytest.mark.parametrize("name", ["model-Q4_K_M.gguf", "sub/dir/model.gguf", ".gitattributes", "a b (1).gguf"])
def test_plain_file_names_pass(name):
    assert hub.safe_file_path(name, "org/model") == name


@pytest.mark.parametrize("repo_id", ["../x", "org/..", "org/.", "a/b/c", "org", "/org/x", "org/x\x00", "org/-x",
                                     "org/x.", "ö/x", "org\\x/y", 5, None])
def test_unsafe_repo_ids_are_refused(repo_id):
    with pytest.raises(hub.HubError):
        hub.safe_repo_id(repo_id)


@pytest.mark.parametrize("repo_id", ["Qwen/Qwen2.5-0.5B-Instruct-GGUF",
                                     "lmstudio-community/SmolLM2-135M-Instruct-MLX-4bit", "_a/b_"])
def test_hub_repo_ids_pass(repo_id):
    assert hub.safe_repo_id(repo_id) == repo_id


def test_parse_target_refuses_an_unsafe_repo_id_and_an_unsafe_url():
    with pytest.raises(hub.HubError):
        hub.parse_target("org/..")
    with pytest.raises(hub.HubError):
        hub.parse_target("https://huggingface.co/../x/resolve/main/a.gguf")
    assert hub.parse_target("qwen coder").query == "qwen coder"


@pytest.mark.parametrize("commit", ["..", "../x", "a/b", "", None, "x" * 200])
def test_unsafe_commits_are_refused(commit):
    with pytest.raises(hub.HubError):
        hub.safe_revision(commit, "org/model")


def test_contained_keeps_paths_inside_their_folder(tmp_path):
    assert hub.contained(tmp_path, "a/b.gguf") == tmp_path / "a" / "b.gguf"
    (tmp_path / "link").symlink_to("/")
    for escaping in ("../x", "/etc/passwd", "link/etc/passwd"):
        with pytest.raises(LmsError):
            hub.contained(tmp_path, escaping)


@pytest.fixture(scope="module")
def hostile_hub(tmp_path_factory):
    weights = tmp_path_factory.mktemp("weights") / "w.gguf"
    weights.write_bytes(b"GGUF" + bytes(60))
    with FakeHub() as fake:
        fake.add_repo("org/Fine-GGUF", {"fine-Q4_K_M.gguf": weights}, tags=["gguf"])
        fake.add_repo("org/Dotdot-GGUF", {"../../escape-Q4_K_M.gguf": weights}, tags=["gguf"])
        fake.add_repo("org/Renamed-GGUF", {"fine-Q4_K_M.gguf": weights}, tags=["gguf"],
                      extra={"id": "../../outside"})
        yield fake


def test_repo_variants_validates_what_the_mirror_answers(hostile_hub):
    fine = hub.repo_variants("org/Fine-GGUF", {"gguf"}, endpoint=hostile_hub.url, available_bytes=1 << 40)
    assert fine.repo_id == "org/Fine-GGUF" and [f.path for f in fine.variants[0].files] == ["fine-Q4_K_M.gguf"]
    for repo_id, shown in (("org/Dotdot-GGUF", "../../escape-Q4_K_M.gguf"), ("org/Renamed-GGUF", "../../outside")):
        with pytest.raises(hub.HubError) as refused:
            hub.repo_variants(repo_id, {"gguf"}, endpoint=hostile_hub.url, available_bytes=1 << 40)
        assert refused.value.code == "unsafe_hub_answer" and shown in refused.value.message
    with pytest.raises(hub.HubError):  # an unsafe id is refused before the Hub is asked
        hub.repo_variants("org/..", {"gguf"}, endpoint="http://127.0.0.1:9")


@pytest.mark.parametrize("user_repo", ["../x", "a/..", "a\x00/b", "a/b/c", "/"])
def test_import_targets_stay_in_models(lms_home, bundled_file, user_repo):
    with pytest.raises(importer.ImportError_):
        importer.plan_import(bundled_file, user_repo, "copy")


# --- runtime versions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["../x", "0.3/../../x", "--index-url=http://x", "1 2", "a1", "1\x00", "", "1/2"])
def test_runtime_versions_must_be_plain(lms_home, version):
    llama = runtimes.engine("llama.cpp")
    for call in (lambda: runtimes.install_dir(llama, version), lambda: runtimes.install(llama, version),
                 lambda: runtimes.select(llama, version), lambda: runtimes.remove(llama, version, set())):
        with pytest.raises(LmsError) as refused:
            call()
        assert refused.value.code == "invalid_runtime_version"
    if version:
        with pytest.raises(LmsError):
            runtimes.parse(f"llama.cpp@{version}")
    assert not (lms_home / "runtimes").exists()


@pytest.mark.parametrize("version", ["0.3.16", "1.0rc1", "0.3.2+cu121", "2!1.0.post1"])
def test_plain_runtime_versions_pass(lms_home, version):
    assert runtimes.parse(f"llama.cpp@{version}")[1] == version
    assert runtimes.install_dir(runtimes.engine("llama.cpp"), version).parent == lms_home / "runtimes"


def test_a_folder_with_an_unplain_version_is_not_listed(lms_home):
    bad = lms_home / "runtimes" / "llama.cpp-x y"
    bad.mkdir(parents=True)
    (bad / ".complete").write_text("x y")
    assert "x y" not in runtimes.installed(runtimes.engine("llama.cpp"))


# --- lms rm -------------------------------------------------------------------------------------------------


def write_mlx_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    header = json.dumps({"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))


def entry_of(key: str) -> catalog.ModelEntry:
    return next(e for e in catalog.scan() if e.model_key == key)


def test_rm_of_an_mlx_model_removes_exactly_its_folder(lms_home, tmp_path):
    models = lms_home / "models"
    write_mlx_folder(models / "pub" / "Alpha-MLX")
    write_mlx_folder(models / "pub" / "Beta-MLX")
    (models / "pub" / "notes.txt").write_text("mine")
    outside = tmp_path / "elsewhere"
    write_mlx_folder(outside)
    (models / "other").mkdir()
    (models / "other" / "Linked-MLX").symlink_to(outside)

    entry = entry_of("pub/alpha-mlx")
    assert removal.remove(entry, removal.entries_to_remove(entry, True)) == [str(models / "pub" / "Alpha-MLX")]
    assert not (models / "pub" / "Alpha-MLX").exists()
    assert (models / "pub" / "Beta-MLX" / "model.safetensors").is_file() and (models / "pub" / "notes.txt").exists()

    linked = entry_of("other/linked-mlx")
    removal.remove(linked, removal.entries_to_remove(linked, True))
    assert not (models / "other").exists()  # the link and then its emptied publisher folder
    assert (outside / "model.safetensors").is_file()  # what the link pointed to is not touched


def test_rm_refuses_a_folder_that_is_not_a_model_folder(lms_home):
    write_mlx_folder(lms_home / "models" / "pub" / "Alpha-MLX")
    entry = entry_of("pub/alpha-mlx")
    for wrong in (lms_home / "models" / "pub", lms_home / "models", lms_home / "models" / "pub" / "A" / ".."):
        entry.path = wrong
        with pytest.raises(LmsError):
            removal.remove(entry, [entry])
    assert (lms_home / "models" / "pub" / "Alpha-MLX" / "config.json").is_file()


def test_rm_of_a_gguf_keeps_a_folder_that_still_holds_a_model(lms_home, bundled_file):
    repo = lms_home / "models" / "pub" / "Repo-GGUF"
    (repo / "sub").mkdir(parents=True)
    (repo / "top-Q4_1.gguf").symlink_to(bundled_file)
    (repo / "sub" / "nested-Q4_1.gguf").symlink_to(bundled_file)
    top = next(e for e in catalog.scan() if e.path.name == "top-Q4_1.gguf")
    removal.remove(top, [top])
    assert not (repo / "top-Q4_1.gguf").exists() and (repo / "sub" / "nested-Q4_1.gguf").exists()
    nested = next(e for e in catalog.scan() if e.path.name == "nested-Q4_1.gguf")
    removal.remove(nested, [nested])
    assert not (repo / "sub").exists() and bundled_file.is_file()


# --- file modes -----------------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_logs_settings_and_private_folders_are_the_owners_only(lms_home):
    old = config.logs_dir() / "2020-01-01.log"
    old.write_text("old")
    old.chmod(0o644)
    handler = DatedFileHandler(config.logs_dir())
    handler.emit(__import__("logging").LogRecord("lms", 20, __file__, 1, "a prompt", None, None))
    handler.close()
    assert [mode(p) for p in config.logs_dir().glob("*.log") if p != old] == [0o600]
    assert mode(config.logs_dir()) == 0o700 and mode(config.internal_dir()) == 0o700

    with config.open_private(old, "a") as reopened:
        reopened.write("more")
    assert mode(old) == 0o600 and old.read_text() == "oldmore"

    config.write_json(config.server_config_path(), {"port": 1})
    assert mode(config.server_config_path()) == 0o600

    settings = config.settings_path()
    settings.write_text('{"api_token": "secret"}')
    settings.chmod(0o644)
    config.restrict_to_owner(settings)
    assert mode(settings) == 0o600
    config.restrict_to_owner(lms_home / "missing.json")  # nothing to do, no error


def test_an_internal_folder_made_open_is_narrowed(lms_home):
    (lms_home / ".internal").mkdir(parents=True)
    (lms_home / ".internal").chmod(0o755)
    assert mode(config.internal_dir()) == 0o700


# --- the control socket -------------------------------------------------------------------------------------


def listening_socket(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(0.5)
    return server


def nothing_arrived(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except TimeoutError:
        return True
    with connection:
        connection.settimeout(0.5)
        try:
            return connection.recv(1024) == b""
        except TimeoutError:
            return True


def test_a_socket_of_another_user_gets_nothing(tmp_path, monkeypatch):
    path = tmp_path / "daemon.sock"
    server = listening_socket(path)
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)  # as if another user had made it
    try:
        with pytest.raises(DaemonError) as refused:
            DaemonClient(path=str(path), timeout=2).post("/lms/hub/variants", {"token": "hf_secret"})
        assert "Refusing to use the control socket" in str(refused.value) and "Nothing was sent" in str(refused.value)
        assert refused.value.code == "socket_not_owned"
        assert nothing_arrived(server)
    finally:
        server.close()


def test_a_file_in_place_of_the_socket_is_refused(tmp_path):
    path = tmp_path / "daemon.sock"
    path.write_text("")
    with pytest.raises(DaemonError) as refused:
        check_socket_owner(str(path))
    assert "not a socket" in str(refused.value)
    link = tmp_path / "link.sock"
    server = listening_socket(tmp_path / "real.sock")
    try:
        link.symlink_to(tmp_path / "real.sock")
        with pytest.raises(DaemonError):
            check_socket_owner(str(link))  # a link is judged as a link, not by what it points to
    finally:
        server.close()


def test_the_users_own_socket_is_used(tmp_path):
    path = tmp_path / "daemon.sock"
    server = listening_socket(path)
    try:
        check_socket_owner(str(path))
        check_socket_owner(str(tmp_path / "absent.sock"))  # no socket: the usual "no daemon" path
    finally:
        server.close()


def test_the_process_behind_the_socket_must_be_the_user(monkeypatch):
    from lms.client import check_peer

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        check_peer(ours, "pair")  # same process, same user
        real_uid = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)
        if hasattr(socket, "SO_PEERCRED"):
            with pytest.raises(DaemonError):
                check_peer(ours, "pair")
    finally:
        ours.close()
        theirs.close()


def test_mcp_json_is_narrowed_to_its_owner_when_read(lms_home):
    from lms.mcp.config import local_servers, mcp_json_path

    lms_home.mkdir(parents=True)
    mcp_json_path().write_text(json.dumps({"mcpServers": {"w": {"url": "https://mcp.example/mcp",
                                                                "headers": {"Authorization": "Bearer k"}}}}))
    mcp_json_path().chmod(0o644)
    assert "w" in local_servers()
    assert mode(mcp_json_path()) == 0o600
