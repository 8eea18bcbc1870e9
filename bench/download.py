"""Download throughput of `lms get` (a daemon job: transfer, sha256 check, move into models/) against `curl` of
the same file from the same local Hub server, in one run. Target (the lms get issue): lms / curl >= 0.8.
An informational row compares the transfer over TLS (the real Hub's path) against curl, from `openssl s_server`.

    python bench/download.py        (also part of `make bench`)
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from lms.client import DaemonClient  # noqa: E402
from lms.store.catalog import bundled_model_file  # noqa: E402
from tests.hf_server import FakeHub  # noqa: E402

ROUNDS = 7
REPO_ID = "bench/Download-GGUF"


def _model_file() -> Path:
    """The largest model file at hand: the Qwen fixture (491 MB) when the tests fetched it, else SmolLM2."""
    qwen = Path.home() / ".cache" / "lms" / "fixtures" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    return qwen if qwen.exists() else bundled_model_file()


def _curl_seconds(url: str, target: Path) -> float:
    elapsed = common.timed(subprocess.run, ["curl", "-sf", "-o", str(target), url], check=True)
    target.unlink()
    return elapsed


def _lms_seconds(client: DaemonClient, home: Path, hub_url: str) -> float:
    job = client.post("/lms/downloads", {"model": REPO_ID, "endpoint": hub_url})
    while job["status"] == "downloading":
        time.sleep(0.25)  # as often as `lms get` polls
        job = client.get(f"/lms/downloads/{job['job_id']}")
    if job["status"] != "completed":
        raise RuntimeError(f"the download failed: {job}")
    shutil.rmtree(home / "models" / "bench")
    return job["duration_seconds"]


def measure(link_bytes_per_second: int | None = None) -> dict:
    """Both sides against one Hub server process; `link_bytes_per_second` caps it like a network link."""
    model = _model_file()
    size = model.stat().st_size
    home = common.temp_folder("lms-bench-download-")
    # The Hub stand-in runs in its own process, as a real server would: not sharing a GIL with anything here.
    throttle = ["--throttle", str(link_bytes_per_second)] if link_bytes_per_second else []
    server = subprocess.Popen([sys.executable, "-m", "tests.hf_server", *throttle, f"{REPO_ID}={model}"],
                              cwd=common.REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    hub_url = server.stdout.readline().strip()
    try:
        url = f"{hub_url}/{REPO_ID}/resolve/main/{model.name}"
        env = common.lms_env(home, **FakeHub.client_env_for(hub_url, home / "hf-home"))
        common.lms_cli(env, "daemon", "up")
        client = common.control(home)
        try:
            curl, lms = [], []
            # One untimed run of each side first: the page cache holds the file for both, and neither side's first
            # transfer (new process, new buffers, the daemon's first job) weighs on the median.
            _curl_seconds(url, home / "warm")
            _lms_seconds(client, home, hub_url)
            for _ in range(ROUNDS):  # interleaved: drift in machine load hits both alike
                curl.append(_curl_seconds(url, home / "curl.gguf"))
                lms.append(_lms_seconds(client, home, hub_url))
        finally:
            common.daemon_down(env)
    finally:
        server.kill()
        shutil.rmtree(home, ignore_errors=True)
    curl_mbps, lms_mbps = size / statistics.median(curl) / 1e6, size / statistics.median(lms) / 1e6
    return {"file": model.name, "size_bytes": size, "link_bytes_per_second": link_bytes_per_second,
            "curl_mb_per_s": curl_mbps, "lms_mb_per_s": lms_mbps, "ratio": lms_mbps / curl_mbps,
            "curl_seconds": curl, "lms_seconds": lms}


LINK = 125_000_000  # a 1 Gbit/s link, faster than most users' connection to the Hub
TLS_ROUNDS = 3
TLS_FETCH = """
import sys, time
from pathlib import Path
from lms.store.transfer import fetch
url, part, size = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
started = time.perf_counter()
fetch(url, {}, part, size, lambda position, received: None)
print(time.perf_counter() - started)
"""


def measure_tls() -> dict | None:
    """The Hub's own path, HTTPS: lms's transfer (with its sha256) against curl, from a local `openssl s_server`
    with a throwaway certificate. Informational: on 2 cores the server's encryption competes with both clients.
    None where the openssl command is missing."""
    if shutil.which("openssl") is None:
        return None
    model = _model_file()
    size = model.stat().st_size
    folder = common.temp_folder("lms-bench-tls-")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    (folder / "model.gguf").symlink_to(model)
    port = common.free_port()
    server = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", str(cert), "-key", str(key),
                               "-WWW", "-quiet"], cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}/model.gguf"
    env = {**os.environ, "SSL_CERT_FILE": str(cert)}
    try:
        _wait_for_port(port)
        curl, lms = [], []
        for _ in range(TLS_ROUNDS + 1):  # the first round of each side is a warm-up
            curl.append(common.timed(subprocess.run, ["curl", "-sf", "--cacert", str(cert), "-o",
                                                      str(folder / "curl.out"), url], check=True))
            (folder / "curl.out").unlink()
            part = folder / "lms.part"
            ran = subprocess.run([sys.executable, "-c", TLS_FETCH, url, str(part), str(size)], env=env,
                                 cwd=common.REPO, check=True, capture_output=True, text=True)
            lms.append(float(ran.stdout))
            part.unlink()
    finally:
        server.kill()
        shutil.rmtree(folder, ignore_errors=True)
    curl_mbps, lms_mbps = size / statistics.median(curl[1:]) / 1e6, size / statistics.median(lms[1:]) / 1e6
    return {"size_bytes": size, "curl_mb_per_s": curl_mbps, "lms_mb_per_s": lms_mbps, "ratio": lms_mbps / curl_mbps,
            "curl_seconds": curl[1:], "lms_seconds": lms[1:]}


def _wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"openssl s_server did not listen on {port}")


def measure_all() -> dict:
    """Against an uncapped local server (on 2 cores the server, the transfer and the sha256 check share the
    CPU, and curl checks nothing), and over a 1 Gbit/s link, which is what a download from the Hub meets."""
    return {"local": measure(), "link_1gbit": measure(LINK), "tls": measure_tls()}


def rows(results: dict) -> list[tuple[str, str, str]]:
    table = []
    for name, result in (("uncapped local server", results["local"]), ("1 Gbit/s link", results["link_1gbit"])):
        size = f"{result['size_bytes'] / 1e6:.0f} MB"
        table += [(f"download MB/s, curl ({size}, {name})", f"{result['curl_mb_per_s']:.0f}", ""),
                  (f"download MB/s, lms get job (+ sha256, install; {name})", f"{result['lms_mb_per_s']:.0f}", ""),
                  (f"download ratio lms / curl ({name})", f"{result['ratio']:.3f}", ">= 0.8")]
    if results.get("tls"):
        tls = results["tls"]
        table += [("download MB/s over TLS, curl / lms transfer + sha256 (s_server)",
                   f"{tls['curl_mb_per_s']:.0f} / {tls['lms_mb_per_s']:.0f}", ""),
                  ("download ratio lms / curl over TLS (informational)", f"{tls['ratio']:.3f}", "")]
    return table


if __name__ == "__main__":
    common.print_rows(rows(measure_all()), 60, 10)
