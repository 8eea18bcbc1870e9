"""A tiny random-weight vision projector (mmproj) for llama.cpp's multimodal library, for tests.

It is a LLaVA-style CLIP encoder (2 blocks, width 32, 64-pixel images in 16-pixel patches: 16 image tokens) with
an MLP projector to the text model's embedding width. The model sees noise; the point is the plumbing: image
decoding, encoding, projection and image-token accounting, end to end through a real engine.

    python tools/make_projector.py DEST_DIR [N_EMBD]   # prints the path (N_EMBD 576 = SmolLM2-135M)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

NAME = "mmproj-random-f16.gguf"
IMAGE, PATCH, WIDTH, FFN, BLOCKS, HEADS, HIDDEN = 64, 16, 32, 64, 2, 2, 64


def ensure_projector(dest_dir: Path, n_embd: int = 576) -> Path:
    import gguf

    target = dest_dir / NAME
    if target.exists():
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)

    def weights(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float16)

    def zeros(*shape: int) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def ones(*shape: int) -> np.ndarray:
        return np.ones(shape, dtype=np.float32)

    temporary = dest_dir / f".{NAME}.{os.getpid()}.tmp"
    writer = gguf.GGUFWriter(str(temporary), "clip")
    writer.add_name("random-clip-projector")
    writer.add_file_type(1)  # F16
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_text_encoder", False)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    for key, value in (("image_size", IMAGE), ("patch_size", PATCH), ("embedding_length", WIDTH),
                       ("feed_forward_length", FFN), ("block_count", BLOCKS), ("attention.head_count", HEADS),
                       ("projection_dim", n_embd)):
        writer.add_uint32(f"clip.vision.{key}", value)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    positions = (IMAGE // PATCH) ** 2 + 1  # patches and the class token
    # numpy shapes are ggml's dimensions reversed: a (out, in) array is a matrix from `in` to `out`
    tensors = {
        "v.patch_embd.weight": weights(WIDTH, 3, PATCH, PATCH),
        "v.class_embd": rng.standard_normal(WIDTH).astype(np.float32) * 0.02,
        "v.position_embd.weight": weights(positions, WIDTH),
        "v.pre_ln.weight": ones(WIDTH), "v.pre_ln.bias": zeros(WIDTH),
        "mm.0.weight": weights(HIDDEN, WIDTH), "mm.0.bias": zeros(HIDDEN),
        "mm.2.weight": weights(n_embd, HIDDEN), "mm.2.bias": zeros(n_embd),
    }
    for block in range(BLOCKS):
        prefix = f"v.blk.{block}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"{prefix}.{name}.weight"] = weights(WIDTH, WIDTH)
            tensors[f"{prefix}.{name}.bias"] = zeros(WIDTH)
        for norm in ("ln1", "ln2"):
            tensors[f"{prefix}.{norm}.weight"], tensors[f"{prefix}.{norm}.bias"] = ones(WIDTH), zeros(WIDTH)
        tensors[f"{prefix}.ffn_up.weight"], tensors[f"{prefix}.ffn_up.bias"] = weights(FFN, WIDTH), zeros(FFN)
        tensors[f"{prefix}.ffn_down.weight"], tensors[f"{prefix}.ffn_down.bias"] = weights(WIDTH, FFN), zeros(WIDTH)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(temporary, target)
    return target


if __name__ == "__main__":
    print(ensure_projector(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 576))
