"""lms get, ls and rm end to end: the real huggingface_hub client in the daemon against a local Hub
(tests/hf_server.py) serving real model files: the bundled SmolLM2 (Q4_1), a Q8_0 requantization of it split in
two parts, and a corrupted copy."""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import REPO, Lms, free_port, wait_for
from tests.hf_server import FakeHub

REPO_ID = "lmstudio-community/SmolLM2-135M-Instruct-GGUF"
Q4 = "SmolLM2-135M-Instruct-Q4_1.gguf"
Q8_PARTS = ["SmolLM2-135M-Instruct-Q8_0-00001-of-00002.gguf", "SmolLM2-135M-Instruct-Q8_0-00002-of-00002.gguf"]
KEY = "lmstudio-community/smollm2-135m-instruct"
CORRUPT_ID = "lms-test/Corrupt-SmolLM2-GGUF"
MLX_ID = "lmstudio-community/SmolLM2-135M-Instruct-MLX-4bit"
PRIVATE_ID = "lms-test/Private-SmolLM2-GGUF"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    sys.path.insert(0, str(REPO))
    from lms.store.catalog import bundled_model_file
    from tools.mlx_from_gguf import ensure_mlx_smollm2
    from tools.requantize import bundled_as
    from tools.split_gguf import split_gguf

    q4 = bundled_model_file()
    q8_parts = split_gguf(bundled_as("q8_0"), tmp_path_factory.mktemp("split"), 2)
    with FakeHub() as fake:
        files = {Q4: q4, Q8_PARTS[0]: q8_parts[0], Q8_PARTS[1]: q8_parts[1], "README.md": REPO / "README.md"}
        fake.add_repo(REPO_ID, files, tags=["gguf", "text-generation"], downloads=5000, likes=40)
        fake.add_repo("someone/smollm2-finetune-GGUF", {"smollm2-finetune-Q4_1.gguf": q4}, tags=["gguf"],
                      downloads=12)
        fake.add_repo(CORRUPT_ID, {"Corrupt-SmolLM2-Q4_1.gguf": q4}, tags=["gguf"])
        mlx_dir = ensure_mlx_smollm2()
        fake.add_repo(MLX_ID, {p.name: p for p in mlx_dir.iterdir() if not p.name.startswith(".")},
                      tags=["mlx", "safetensors", "text-generation"], downloads=300)
        fake.corrupt(CORRUPT_ID, "Corrupt-SmolLM2-Q4_1.gguf")
        yield fake


def new_lms(tmp_path, hub: FakeHub, **settings) -> Lms:
    env = hub.client_env(tmp_path / "hf-home", base={})
    return Lms(home=tmp_path / "home", port=free_port(), settings={**env, **settings})


@pytest.fixture
def lms_hub(tmp_path, hub):
    instance = new_lms(tmp_path, hub)
    yield instance
    instance.stop()


def downloaded(lms: Lms, prefix: str = KEY) -> list[dict]:
    """The models `lms ls --json` shows under a key prefix (the bundled model is always there too)."""
    return [m for m in lms.json("ls") if m["modelKey"].startswith(prefix)]


def job_of(lms: Lms, *args: str) -> dict:
    result = lms.run("get", *args, "--json", check=False, timeout=300)
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


def test_search_pick_download_list_load_and_remove(lms_hub, hub):
    job = job_of(lms_hub, "smollm2")  # a search: the most downloaded match, its recommended variant
    assert job["status"] == "completed" and job["model"] == REPO_ID and job["variant"] == "q4_1"
    assert job["downloaded_bytes"] == job["total_size_bytes"] == os.path.getsize(hub.repos[REPO_ID].files[Q4].local)
    [listed] = downloaded(lms_hub)
    assert listed["quantization"]["name"] == "Q4_1"

    again = job_of(lms_hub, f"{REPO_ID}@q4_1")
    assert again["status"] == "already_downloaded"

    url = f"https://huggingface.co/{REPO_ID}/blob/main/{Q8_PARTS[1]}"  # a URL to one file of a split variant
    split = job_of(lms_hub, url)
    assert split["status"] == "completed" and split["variant"] == "q8_0"
    [model] = [m for m in lms_hub.json("ls", "--variants") if m["model"]["modelKey"] == KEY]
    assert [v["quantization"]["name"] for v in model["variants"]] == ["Q4_1", "Q8_0"]
    assert model["variants"][1]["sizeBytes"] == sum(hub.repos[REPO_ID].files[p].size for p in Q8_PARTS)
    assert "Q8_0" in lms_hub.run("ls", KEY).stdout

    lms_hub.run("load", f"{KEY}@q8_0", "-y", "--identifier", "split-model")  # a split model loads from its parts
    refused = lms_hub.run("rm", f"{KEY}@q8_0", "-y", check=False)
    assert refused.returncode == 1 and "unload" in refused.stderr
    lms_hub.run("unload", "split-model")
    removed = lms_hub.json("rm", f"{KEY}@q8_0", "-y")
    assert len(removed["removed"]) == 2
    assert [v["quantization"]["name"] for v in downloaded(lms_hub)] == ["Q4_1"]
    lms_hub.run("rm", KEY, "-y")
    assert downloaded(lms_hub) == []
    assert not (lms_hub.home / "models" / "lmstudio-community").exists()


def test_get_without_a_name_offers_the_most_downloaded(lms_hub):
    refused = lms_hub.run("get", check=False)  # a script must name the model, or say -y
    assert refused.returncode == 1 and "Name the model to download" in refused.stderr
    job = job_of(lms_hub, "-y")
    assert job["status"] == "completed" and job["model"] == REPO_ID  # 5,000 downloads: the top of the Hub
    lms_hub.run("rm", KEY, "-y")


def test_at_a_terminal_select_picks_the_variant_and_rm_asks_first(lms_hub):
    code, shown = lms_hub.at_terminal("get", REPO_ID, "--select", answers=["2", "y"])
    assert code == 0, shown
    assert "q8_0" in shown and "Start download?" in shown and "Download completed" in shown
    assert [v["quantization"]["name"] for v in downloaded(lms_hub)] == ["Q8_0"]
    code, shown = lms_hub.at_terminal("rm", KEY, answers=["n"])
    assert "from disk?" in shown and len(downloaded(lms_hub)) == 1  # no: nothing deleted
    code, shown = lms_hub.at_terminal("rm", KEY, answers=["y"])
    assert code == 0 and downloaded(lms_hub) == []


def test_missing_quantization_and_unknown_repository(lms_hub):
    missing = lms_hub.run("get", f"{REPO_ID}@q2_k", "-y", check=False)
    assert missing.returncode == 1 and "Cannot find variant q2_k" in missing.stderr
    unknown = lms_hub.run("get", "nobody/nothing-GGUF", "-y", check=False)
    assert unknown.returncode == 1 and "not found" in unknown.stderr


def test_a_corrupted_download_is_rejected_and_not_listed(lms_hub):
    job = job_of(lms_hub, CORRUPT_ID)
    assert job["status"] == "failed" and "sha256" in job["error"]
    assert downloaded(lms_hub, "lms-test/") == []
    assert not list((lms_hub.home / "models").rglob("Corrupt*"))


def test_a_private_repository_needs_hf_token(tmp_path, hub):
    """HF_TOKEN from the shell of `lms get` reaches the Hub on every call the daemon makes, file downloads too."""
    from lms.store.catalog import bundled_model_file

    hub.add_repo(PRIVATE_ID, {"Private-SmolLM2-Q4_1.gguf": bundled_model_file()}, tags=["gguf"], token="hf_s3cret")
    anonymous = new_lms(tmp_path / "anonymous", hub)
    try:
        refused = anonymous.run("get", PRIVATE_ID, "-y", check=False)
        assert refused.returncode == 1 and "HF_TOKEN" in refused.stderr
    finally:
        anonymous.stop()
    member = new_lms(tmp_path / "member", hub, HF_TOKEN="hf_s3cret")
    try:
        job = job_of(member, PRIVATE_ID)
        assert job["status"] == "completed", job
        assert [m["modelKey"] for m in downloaded(member, "lms-test/private")] == ["lms-test/private-smollm2"]
        hub.wait_idle()
        fetched = [r for r in hub.requests if r.path.startswith(f"/{PRIVATE_ID}/resolve/") and r.bytes_sent]
        assert fetched and all(r.authorization == "Bearer hf_s3cret" for r in fetched)
    finally:
        member.stop()


def _job(lms: Lms, job_id: str) -> dict:
    return lms.control().get(f"/lms/downloads/{job_id}")


def test_resume_after_the_daemon_is_killed_mid_download(lms_hub, hub):
    hub.throttle_bytes_per_second = 25_000_000
    before = hub.bytes_served(REPO_ID, Q4)
    try:
        lms_hub.run("daemon", "up")
        job = lms_hub.control().post("/lms/downloads", {"model": f"{REPO_ID}@q4_1", "endpoint": hub.url})
        size = job["total_size_bytes"]
        wait_for(lambda: _job(lms_hub, job["job_id"])["downloaded_bytes"] > size * 0.4, timeout=120)
        pid = int((lms_hub.home / ".internal" / "daemon.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)
        assert downloaded(lms_hub) == []  # nothing half-downloaded is listed
        lms_hub.run("daemon", "up")  # the new daemon picks the job up from its journal and resumes it
        done = wait_for(lambda: (s := _job(lms_hub, job["job_id"]))["status"] == "completed" and s, timeout=120)
    finally:
        hub.throttle_bytes_per_second = None
    assert hub.wait_idle()
    fetched = hub.bytes_served(REPO_ID, Q4) - before
    assert size <= fetched < size * 1.10, f"fetched {fetched} bytes for a {size}-byte file"
    assert done["downloaded_bytes"] == size and len(downloaded(lms_hub)) == 1
    ranged = [r for r in hub.requests if r.path.endswith(Q4) and r.range]
    assert ranged, "the resumed transfer asked for a byte range"


def test_two_gets_of_the_same_model_share_one_job(lms_hub, hub):
    hub.throttle_bytes_per_second = 40_000_000
    try:
        lms_hub.run("daemon", "up")
        command = [sys.executable, "-m", "lms", "get", f"{REPO_ID}@q4_1", "--json"]
        first, second = (subprocess.Popen(command, env=lms_hub.env, cwd=REPO, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True) for _ in range(2))
        outputs = [json.loads(p.communicate(timeout=300)[0]) for p in (first, second)]
    finally:
        hub.throttle_bytes_per_second = None
    assert outputs[0]["job_id"] == outputs[1]["job_id"]
    assert {o["status"] for o in outputs} == {"completed"}


def _active_job(lms: Lms) -> dict | None:
    jobs = [j for j in lms.control().get("/lms/downloads") if j["status"] == "downloading"]
    return jobs[0] if jobs and jobs[0]["downloaded_bytes"] > jobs[0]["total_size_bytes"] * 0.1 else None


def test_ctrl_c_keeps_the_download_going_or_cancels_it_and_lms_get_follows_it_again(lms_hub, hub):
    hub.throttle_bytes_per_second = 20_000_000
    before = hub.bytes_served(REPO_ID, Q4)
    command = [sys.executable, "-m", "lms", "get", f"{REPO_ID}@q4_1", "-y"]
    try:
        lms_hub.run("daemon", "up")
        # From a script (no terminal), Ctrl+C leaves the job running in the daemon.
        script = subprocess.Popen(command, env=lms_hub.env, cwd=REPO, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        job = wait_for(lambda: _active_job(lms_hub), timeout=120)
        script.send_signal(signal.SIGINT)
        _, errors = script.communicate(timeout=30)
        assert script.returncode == 0 and "goes on in the background" in errors
        assert _job(lms_hub, job["job_id"])["status"] == "downloading"
        # At a terminal, the answer "n" cancels it and keeps what was fetched.
        primary, secondary = os.openpty()
        person = subprocess.Popen(command, env=lms_hub.env, cwd=REPO, stdin=secondary, stderr=secondary,
                                  stdout=subprocess.PIPE, text=True)
        os.close(secondary)
        time.sleep(1)  # let it attach to the running job
        person.send_signal(signal.SIGINT)
        seen, deadline = b"", time.monotonic() + 30
        while b"background?" not in seen and time.monotonic() < deadline:
            if select.select([primary], [], [], 1)[0]:
                seen += os.read(primary, 4096)
        assert b"background?" in seen, seen[-500:]
        os.write(primary, b"n\n")
        assert person.wait(timeout=30) == 1
        os.close(primary)
        cancelled = _job(lms_hub, job["job_id"])
        assert cancelled["status"] == "cancelled" and 0 < cancelled["downloaded_bytes"] < cancelled["total_size_bytes"]
        # lms get again: a new job that resumes from the part.
        finished = job_of(lms_hub, f"{REPO_ID}@q4_1")
        assert finished["status"] == "completed"
    finally:
        hub.throttle_bytes_per_second = None
    assert hub.wait_idle()
    size = finished["total_size_bytes"]
    assert size <= hub.bytes_served(REPO_ID, Q4) - before < size * 1.10


def test_not_enough_disk_space_is_refused_before_starting(tmp_path, hub):
    lms = new_lms(tmp_path, hub, LMS_DOWNLOAD_RESERVE_BYTES=str(10**16))
    try:
        refused = lms.run("get", f"{REPO_ID}@q4_1", "-y", check=False)
        assert refused.returncode == 1 and "Not enough disk space" in refused.stderr
    finally:
        lms.stop()


def test_a_full_disk_fails_the_job_and_keeps_the_part(tmp_path, hub):
    """A file-size limit on the daemon makes its writes fail the way a full disk does."""
    lms = new_lms(tmp_path, hub)
    limit = 40 * 1024 * 1024
    lms.home.mkdir(parents=True, exist_ok=True)
    daemon = subprocess.Popen([sys.executable, "-m", "lms.daemon"], env=lms.env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    try:
        wait_for(lambda: lms.run("daemon", "status", "--json", check=False).returncode == 0, timeout=30)
        job = job_of(lms, f"{REPO_ID}@q4_1")
        assert job["status"] == "failed" and "disk is full" in job["error"]
        assert downloaded(lms) == []
        lms.stop()
        daemon.wait(timeout=30)
        partial = sum(p.stat().st_size for p in (lms.home / ".internal" / "downloads").rglob("*.part"))
        assert partial >= limit * 0.9  # what was written is kept for the resume
        before = hub.bytes_served(REPO_ID, Q4)
        resumed = job_of(lms, f"{REPO_ID}@q4_1")  # a daemon without the limit finishes from the part
        assert resumed["status"] == "completed"
        assert hub.wait_idle() and hub.bytes_served(REPO_ID, Q4) - before < resumed["total_size_bytes"] - partial * 0.9
    finally:
        if daemon.poll() is None:
            daemon.kill()
        lms.stop()


def test_native_download_endpoints(lms_hub, hub):
    lms_hub.run("server", "start", "-p", str(lms_hub.port))
    base = lms_hub.base_url
    started = httpx.post(f"{base}/api/v1/models/download", json={"model": REPO_ID, "quantization": "q4_1"},
                         timeout=60).json()
    assert started["job_id"].startswith("job_") and started["status"] in ("downloading", "completed")
    assert started["total_size_bytes"] == hub.repos[REPO_ID].files[Q4].size
    status = wait_for(lambda: (s := httpx.get(f"{base}/api/v1/models/download/status/{started['job_id']}").json())
                       ["status"] == "completed" and s, timeout=120)
    assert status["downloaded_bytes"] == status["total_size_bytes"] and status["completed_at"]
    missing = httpx.get(f"{base}/api/v1/models/download/status/job_nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    bad = httpx.post(f"{base}/api/v1/models/download", json={"model": f"{REPO_ID}", "quantization": "q3_k_s"})
    assert bad.status_code == 404 and "q4_1" in bad.json()["error"]["message"]
    wrong = httpx.post(f"{base}/api/v1/models/download", json={"model": REPO_ID, "quantization": ["q4_1"]})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "quantization"


def test_an_mlx_repository_downloads_as_one_folder(lms_hub, hub):
    job = job_of(lms_hub, MLX_ID, "--mlx")
    assert job["status"] == "completed" and job["variant"] == "mlx-4bit"
    folder = lms_hub.home / "models" / MLX_ID
    served = hub.repos[MLX_ID].files
    assert sorted(p.name for p in folder.iterdir()) == sorted(served)
    assert all((folder / name).stat().st_size == file.size for name, file in served.items())
    gguf_only = lms_hub.run("get", MLX_ID, "--gguf", "-y", check=False)
    assert gguf_only.returncode == 1 and "no model files" in gguf_only.stderr
