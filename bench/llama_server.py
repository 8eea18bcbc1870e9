"""llama.cpp's own `llama-server`, built from the llama.cpp sources vendored in the llama-cpp-python sdist we run,
into a cache directory (never into the repository), so the benchmark compares engines of the same version.

    python bench/llama_server.py    # builds once (about 5 minutes on 2 cores), prints the binary's path
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import llama_cpp

from lms.store.runtimes import llama_cmake_args

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
