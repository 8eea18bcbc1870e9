"""llama.cpp's own `llama-server`, built from the llama.cpp sources vendored in the llama-cpp-python sdist we run,
into a cache directory (never into the repository), so the benchmark compares engines of the same version.

    python bench/llama_server.py    # builds once (about 5 minutes on 2 cores), prints the binary's path
"""

from __future__ import annotations

import glob
import http.client
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import llama_cpp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from lms.store.runtimes import llama_cmake_args  # noqa: E402

CACHE = Path(os.environ.get("LMS_BENCH_CACHE", Path.home() / ".cache" / "lms" / "llama-server"))
# The engine flags our wheel is built with (runtimes/llama_cpp/cmake_flags.txt), so both run the same kernels, plus
# what building the server alone needs.
FLAGS = [*llama_cmake_args().split(),
         "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TESTS=OFF",
         "-DLLAMA_BUILD_EXAMPLES=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DCMAKE_BUILD_TYPE=Release"]


def binary() -> Path:
    """The llama-server binary for the installed llama-cpp-python version, built if missing."""
    version = llama_cpp.__version__
    root = CACHE / f"{version}-portable-nollamafile"
    server = root / "build" / "bin" / "llama-server"
    if server.exists():
        return server
    root.mkdir(parents=True, exist_ok=True)
    sources = _sources(version, CACHE / version)
    subprocess.run(["cmake", "-S", str(sources), "-B", str(root / "build"), *FLAGS], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(root / "build"), "--target", "llama-server", "-j", str(os.cpu_count())],
                   check=True, stdout=subprocess.DEVNULL)
    return server


def launch(model: Path, context: int, slots: int, *extra: str) -> tuple[subprocess.Popen, int]:
    """llama-server on a free loopback port with the benchmarks' threads (`context` tokens for all `slots`),
    started and not yet waited for: (the process, its port)."""
    port = common.free_port()
    process = subprocess.Popen([str(binary()), "-m", str(model), "-c", str(context), "-np", str(slots),
                                "-t", str(common.threads()), "-tb", str(common.threads()), "--host", "127.0.0.1",
                                "--port", str(port), "--no-webui", *extra],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, port


@contextmanager
def serving(model: Path, context: int, slots: int, *extra: str) -> Iterator[tuple[int, int]]:
    """A ready llama-server for the block: (its port, its pid); stopped after."""
    process, port = launch(model, context, slots, *extra)
    try:
        wait_ready(port, process)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(30)


def wait_ready(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError("llama-server exited at start")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("llama-server did not become ready")


def _sources(version: str, root: Path) -> Path:
    sources = root / "llama.cpp"
    if sources.exists():
        return sources
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={version}", "-d", str(root)], check=True)
    (archive,) = glob.glob(str(root / "llama_cpp_python-*.tar.gz"))
    prefix = Path(archive).name.removesuffix(".tar.gz") + "/vendor/llama.cpp/"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        for member in members:
            member.name = member.name[len(prefix):]
        tar.extractall(sources, members=members, filter="data")
    return sources


if __name__ == "__main__":
    print(binary())
