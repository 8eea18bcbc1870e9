"""Cluster placement and prefix-affinity routing on plain data (no cluster)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lms.errors import LmsError
from lms.manager.cluster import app_name, placement


def test_placement_needs_a_cluster_and_sane_counts():
    assert placement("", None, None) is None
    with pytest.raises(LmsError) as refused:
        placement("", 2, None)
    assert refused.value.code == "no_cluster" and "lms cluster connect" in refused.value.message
    where = placement("10.0.0.1:6379", 2, 4)
    assert (where.replicas, where.max_replicas, where.public()) == (2, 4, {"minReplicas": 2, "maxReplicas": 4})
    with pytest.raises(LmsError):
        placement("10.0.0.1:6379", 3, 2)
    assert app_name("my model:2") == "lms-my-model-2"


def test_a_conversation_keeps_its_key_and_its_replica():
    routing = pytest.importorskip("runtimes.cluster.routing")
    first = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "I am Ada."}]}
    follow_up = {"messages": [*first["messages"], {"role": "assistant", "content": "Hello Ada."},
                              {"role": "user", "content": "Who am I?"}]}
    other = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "I am Bob."}]}
    assert routing.affinity_key(first) == routing.affinity_key(follow_up) != routing.affinity_key(other)
    assert routing.affinity_key({"prompt": "x" * 600}) == "x" * routing.PROMPT_KEY_CHARS
    assert routing.affinity_key("count") is None
    replicas = [SimpleNamespace(replica_id=SimpleNamespace(unique_id=f"r{n}")) for n in range(4)]
    key = routing.affinity_key(first)
    home = routing.rank(key, replicas)[0]
    assert routing.rank(key, list(reversed(replicas)))[0] is home
    survivors = [r for r in replicas if r is not routing.rank(key, replicas)[-1]]
    assert routing.rank(key, survivors)[0] is home  # another replica going away does not move the key
    homes = {routing.rank(routing.affinity_key({"prompt": f"conversation {n}"}), replicas)[0].replica_id.unique_id
             for n in range(40)}
    assert len(homes) == 4  # keys spread over every replica


# --- model files on a node that does not see the front's models folder ---------------------------------------------

REPO_ID = "lms-test/Split-GGUF"
PARTS = ["M-Q8_0-00001-of-00002.gguf", "M-Q8_0-00002-of-00002.gguf"]
PROJECTOR = "mmproj-M-f16.gguf"


@pytest.fixture
def hub(tmp_path):
    import hashlib

    from tests.hf_server import FakeHub

    contents = {name: (name.encode() * 997)[:20000 + n] for n, name in enumerate([*PARTS, PROJECTOR])}
    served = tmp_path / "served"
    served.mkdir()
    for name, data in contents.items():
        (served / name).write_bytes(data)
    with FakeHub() as fake:
        fake.add_repo(REPO_ID, {name: served / name for name in contents}, tags=["gguf"])
        fake.add_repo("lms-test/Corrupt-GGUF", {"C.gguf": served / PARTS[0]}, tags=["gguf"])
        fake.corrupt("lms-test/Corrupt-GGUF", "C.gguf")
        fake.sha = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
        yield fake


def front_journal(home, hub, repo: str, files: list[str], sha: dict[str, str]) -> None:
    """What `lms get` leaves in the front's download journal: one completed job of the variant."""
    from lms.store.downloads import FileJournal, Job
    from lms.store.hub import HubFile

    job = Job("job_0123456789", repo, hub.commit_sha(repo), "q8_0",
              [HubFile(name, (hub.repos[repo].files[name].size), sha[name]) for name in files],
              status="completed", endpoint=hub.url)
    FileJournal().save(job.journal())


def node_env(monkeypatch, home) -> None:
    monkeypatch.setenv("LMS_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("LMS_DATABASE_URL", raising=False)


def test_the_front_names_the_source_and_a_node_downloads_what_it_lacks(tmp_path, monkeypatch, hub):
    import hashlib

    from lms.manager.cluster import model_source
    from runtimes.cluster import fetch

    node_env(monkeypatch, tmp_path / "front")
    front_journal(tmp_path / "front", hub, REPO_ID, [*PARTS, PROJECTOR], hub.sha)
    folder = tmp_path / "front" / "models" / REPO_ID
    options = {"path": str(folder / PARTS[0]), "projector": str(folder / PROJECTOR), "context_length": 512,
               "draft": {"path": str(folder / PARTS[0]), "name": "draft", "max_tokens": 8}}
    source = model_source(options)
    assert source["paths"] == {"path": f"{REPO_ID}/{PARTS[0]}", "projector": f"{REPO_ID}/{PROJECTOR}",
                               "draft.path": f"{REPO_ID}/{PARTS[0]}"}
    [download] = source["downloads"]
    assert (download["repo"], download["revision"], download["endpoint"]) == (REPO_ID, hub.commit_sha(REPO_ID),
                                                                                hub.url)
    assert {f["path"]: f["sha256"] for f in download["files"]} == hub.sha  # split parts and projector
    assert model_source({"path": str(tmp_path / "elsewhere.gguf")}) == {"paths": {}, "downloads": []}

    node_env(monkeypatch, tmp_path / "node")  # a node: its own LMS_HOME, the front's folder not there
    monkeypatch.setenv(fetch.NODE_MODELS_VARIABLE, "own")
    local = fetch.localize(options, source)
    mine = tmp_path / "node" / "models" / REPO_ID
    assert (local["path"], local["projector"], local["context_length"]) == (str(mine / PARTS[0]),
                                                                           str(mine / PROJECTOR), 512)
    assert local["draft"] == {**options["draft"], "path": str(mine / PARTS[0])}
    assert options["draft"]["path"] == str(folder / PARTS[0])  # the front's options are left as they were
    for name in [*PARTS, PROJECTOR]:
        assert hashlib.sha256((mine / name).read_bytes()).hexdigest() == hub.sha[name]
    served = hub.bytes_served(REPO_ID, PARTS[1])
    assert fetch.localize(options, source) == local and hub.bytes_served(REPO_ID, PARTS[1]) == served  # once

    (mine / PARTS[1]).unlink()  # a part missing: the variant is fetched again (the others are kept)
    assert fetch.localize(options, source) == local and (mine / PARTS[1]).is_file()

    monkeypatch.setenv(fetch.NODE_MODELS_VARIABLE, "shared")  # the front's path, where this node sees it
    shared = {**options, "path": str(mine / PARTS[0]), "projector": None, "draft": None}
    assert fetch.localize(shared, {"paths": {}, "downloads": []})["path"] == str(mine / PARTS[0])


def test_a_node_without_the_file_or_its_source_says_which_file_and_node(tmp_path, monkeypatch):
    from runtimes.cluster import fetch

    node_env(monkeypatch, tmp_path / "node")
    missing = tmp_path / "front" / "models" / "someone" / "repo" / "m.gguf"
    with pytest.raises(LmsError) as refused:
        fetch.localize({"path": str(missing)}, {"paths": {"path": "someone/repo/m.gguf"}, "downloads": []})
    message = refused.value.message
    assert str(missing) in message and fetch.node_name() in message and "lms get" in message
    assert str(tmp_path / "node" / "models" / "someone" / "repo" / "m.gguf") in message


def test_a_node_refuses_a_download_whose_sha256_does_not_match(tmp_path, monkeypatch, hub):
    import hashlib

    from lms.manager.cluster import model_source
    from runtimes.cluster import fetch

    node_env(monkeypatch, tmp_path / "front")
    true_sha = hashlib.sha256((tmp_path / "served" / PARTS[0]).read_bytes()).hexdigest()
    front_journal(tmp_path / "front", hub, "lms-test/Corrupt-GGUF", ["C.gguf"], {"C.gguf": true_sha})
    options = {"path": str(tmp_path / "front" / "models" / "lms-test" / "Corrupt-GGUF" / "C.gguf")}
    source = model_source(options)
    node_env(monkeypatch, tmp_path / "node")
    with pytest.raises(LmsError) as refused:
        fetch.localize(options, source)  # the hub sends a flipped byte: same size, another sha256
    assert refused.value.code == "download_failed" and "sha256" in refused.value.message
    assert not list((tmp_path / "node" / "models").rglob("*.gguf"))  # nothing corrupt installed
    assert not list((tmp_path / "node").rglob("*.part"))  # nor left to resume from


def test_a_folder_model_is_fetched_whole(tmp_path, monkeypatch, hub):
    """An MLX model is a folder: its path is the repository's folder, and every file of the variant comes."""
    import hashlib

    from lms.manager.cluster import model_source
    from runtimes.cluster import fetch

    folder = tmp_path / "mlx"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"\0" * 30000)
    hub.add_repo("lms-test/Folder-MLX", {p.name: p for p in folder.iterdir()}, tags=["mlx"])
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    node_env(monkeypatch, tmp_path / "front")
    front_journal(tmp_path / "front", hub, "lms-test/Folder-MLX", sorted(sha), sha)
    options = {"path": str(tmp_path / "front" / "models" / "lms-test" / "Folder-MLX")}
    source = model_source(options)
    assert source["paths"] == {"path": "lms-test/Folder-MLX"} and len(source["downloads"]) == 1
    node_env(monkeypatch, tmp_path / "node")
    local = fetch.localize(options, source)
    mine = tmp_path / "node" / "models" / "lms-test" / "Folder-MLX"
    assert local["path"] == str(mine) and sorted(p.name for p in mine.iterdir()) == sorted(sha)
