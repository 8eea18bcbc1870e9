"""Engine versions ("runtimes"): the bundled one of each engine (its package in lms's own environment), and
others installed from the package index into `LMS_HOME/runtimes/<engine>-<version>/`.

Workers start with the selected version of their engine first on their import path; a loaded model keeps the
version it was loaded with. An install goes into a temporary folder renamed only when complete, so a failed
update leaves the previous version selected and working.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lms import config
from lms.errors import LmsError


def llama_cmake_args() -> str:
    """The llama.cpp build flags, from the one file that holds them."""
    text = (resources.files("runtimes.llama_cpp") / "cmake_flags.txt").read_text()
    return " ".join(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


@dataclass(frozen=True)
class Engine:
    name: str
    package: str
    model_format: str


ENGINES = {"llama.cpp": Engine("llama.cpp", "llama-cpp-python", "GGUF"), "mlx": Engine("mlx", "mlx-lm", "MLX")}


def engine(name: str) -> Engine:
    found = ENGINES.get(name.lower().removesuffix("-lm").replace("llama-cpp", "llama.cpp").replace("llamacpp",
                                                                                                  "llama.cpp"))
    if found is None:
        raise LmsError.not_found(f"Unknown engine '{name}'; engines: {', '.join(ENGINES)}.", "runtime",
                                 code="runtime_not_found")
    return found


# A plain version as package indexes publish them (PEP 440, local part included): a digit first, then letters,
# digits, '.', '-', '_', '+' or '!'. Never a separator or a pip option: a version becomes a folder name
# (runtimes/<engine>-<version>) and a pip argument.
PLAIN_VERSION = re.compile(r"[0-9][A-Za-z0-9.+!_\-]{0,63}")


def checked_version(version: str) -> str:
    if not isinstance(version, str) or not PLAIN_VERSION.fullmatch(version):
        raise LmsError.invalid(f"{version!r} is not a version number (e.g. 0.3.16).", "runtime",
                               code="invalid_runtime_version")
    return version


def parse(spec: str) -> tuple[Engine, str | None]:
    name, _, version = spec.partition("@")
    return engine(name), checked_version(version) if version else None


def runtimes_dir() -> Path:
    return config.home() / "runtimes"


def bundled_version(item: Engine) -> str | None:
    try:
        return importlib.metadata.version(item.package)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_dir(item: Engine, version: str) -> Path:
    return runtimes_dir() / f"{item.name}-{checked_version(version)}"


def installed(item: Engine) -> list[str]:
    versions = [v for v in [bundled_version(item)] if v]
    for folder in sorted(runtimes_dir().glob(f"{item.name}-*")) if runtimes_dir().is_dir() else []:
        version = folder.name[len(item.name) + 1:]
        if (folder / ".complete").exists() and PLAIN_VERSION.fullmatch(version):
            versions.append(version)
    return sorted(set(versions), key=_version_key)


def _selection() -> dict:
    return config.read_json(runtimes_dir() / "selected.json", {})


def selected(item: Engine) -> str | None:
    chosen = _selection().get(item.name)
    return chosen if chosen in installed(item) else bundled_version(item)


def select(item: Engine, version: str) -> None:
    checked_version(version)
    if version not in installed(item):
        raise LmsError.not_found(f"{item.name}@{version} is not installed; get it with: lms runtime get "
                                 f"{item.name}@{version}", "runtime", code="runtime_not_found")
    runtimes_dir().mkdir(parents=True, exist_ok=True)
    config.write_json(runtimes_dir() / "selected.json", {**_selection(), item.name: version})


def import_path(item: Engine) -> Path | None:
    """The folder to put first on a worker's import path for the selected version (None: the bundled one)."""
    version = selected(item)
    if version is None or version == bundled_version(item):
        return None
    return install_dir(item, version)


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.\-+]", version))


def available(item: Engine) -> list[str]:
    """Versions on the package index, newest first."""
    result = subprocess.run([sys.executable, "-m", "pip", "index", "versions", item.package], capture_output=True,
                            text=True, timeout=120)
    match = re.search(r"Available versions: (.*)", result.stdout)
    if result.returncode != 0 or not match:
        raise LmsError.upstream(f"Cannot list {item.package} versions: {result.stderr.strip()[-300:]}", "runtime",
                                code="index_unreachable")
    return [v.strip() for v in match.group(1).split(",")]


def install(item: Engine, version: str) -> Path:
    """Install `package==version` (its own code only: its dependencies come from lms's environment)."""
    target = install_dir(item, version)
    if (target / ".complete").exists():
        return target
    runtimes_dir().mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    env = dict(os.environ)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(staging),
               f"{item.package}=={version}"]
    if item.name == "llama.cpp":  # built from source, portable, never from pip's cache of a native build
        env["CMAKE_ARGS"] = llama_cmake_args()
        command.insert(4, "--no-cache-dir")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise LmsError.upstream(f"Installing {item.name}@{version} failed: {result.stderr.strip()[-500:]}", "runtime",
                                code="install_failed")
    (staging / ".complete").write_text(version)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def remove(item: Engine, version: str, in_use: set[str]) -> None:
    checked_version(version)
    if version == bundled_version(item):
        raise LmsError.conflict(f"{item.name}@{version} is the bundled version; it cannot be removed.", "runtime",
                                code="runtime_bundled")
    if version == selected(item) or f"{item.name}@{version}" in in_use:
        raise LmsError.conflict(f"{item.name}@{version} is selected or in use; select another version first.",
                                "runtime", code="runtime_in_use")
    if not (install_dir(item, version) / ".complete").exists():
        raise LmsError.not_found(f"{item.name}@{version} is not installed.", "runtime", code="runtime_not_found")
    shutil.rmtree(install_dir(item, version))


def listing() -> list[dict]:
    rows = []
    for item in ENGINES.values():
        chosen = selected(item)
        for version in installed(item):
            rows.append({"name": item.name, "version": version, "selected": version == chosen,
                         "bundled": version == bundled_version(item), "modelFormat": item.model_format})
    return rows


def survey() -> dict:
    """This machine as the engines see it: CPU and its vector extensions, memory, GPUs."""
    import psutil

    flags, model = set(), platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    wanted = ["sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
              "amx_int8", "amx_bf16", "neon", "asimd"]
    memory = psutil.virtual_memory()
    return {"cpu": {"name": model, "architecture": platform.machine(), "cores": psutil.cpu_count(logical=False),
                    "threads": psutil.cpu_count(), "extensions": [f for f in wanted if f in flags]},
            "memory": {"totalBytes": memory.total, "availableBytes": memory.available}, "gpus": _gpus()}


def _gpus() -> list[dict]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, _, total = line.rpartition(",")
        if total.strip().isdigit():
            gpus.append({"name": name.strip(), "vendor": "NVIDIA", "memoryBytes": int(total) * 1024 * 1024})
    return gpus

