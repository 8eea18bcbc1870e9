"""What `lms get` is asked for, and how a repository's files form variants (plain data, no Hub)."""

from __future__ import annotations

import pytest

from lms.store.hub import HubError, HubFile, choose, mark_fit, parse_target, quantization_of, variants_of

MB = 1_000_000


def test_targets():
    assert parse_target("bartowski/Qwen2.5-7B-GGUF").repo_id == "bartowski/Qwen2.5-7B-GGUF"
    at = parse_target("bartowski/Qwen2.5-7B-GGUF@Q4_K_M")
    assert (at.repo_id, at.quant) == ("bartowski/Qwen2.5-7B-GGUF", "q4_k_m")
    url = parse_target("https://huggingface.co/owner/repo/blob/main/sub/model-Q8_0.gguf")
    assert (url.repo_id, url.filename) == ("owner/repo", "sub/model-Q8_0.gguf")
    assert parse_target("https://huggingface.co/owner/repo").repo_id == "owner/repo"
    mirror = parse_target("http://127.0.0.1:9999/owner/repo", endpoint="http://127.0.0.1:9999")
    assert mirror.repo_id == "owner/repo"
    assert parse_target("smollm2 instruct").query == "smollm2 instruct"
    with pytest.raises(HubError):
        parse_target("a/b@q4@q8")
    with pytest.raises(HubError):
        parse_target("https://example.com/owner/repo")


def test_quantization_from_file_names():
    assert quantization_of("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert quantization_of("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") == "Q4_K_M"
    assert quantization_of("Model-IQ4_XS-00001-of-00002.gguf") == "IQ4_XS"
    assert quantization_of("model-bf16.gguf") == "BF16"
    assert quantization_of("model.gguf") is None


def test_variants_group_split_parts_and_carry_the_projector():
    files = [HubFile("model-Q4_K_M.gguf", 400 * MB, "a"), HubFile("model-Q8_0-00001-of-00002.gguf", 300 * MB, "b"),
             HubFile("model-Q8_0-00002-of-00002.gguf", 300 * MB, "c"), HubFile("mmproj-model-f16.gguf", 50 * MB, "d"),
             HubFile("mmproj-model-q8_0.gguf", 30 * MB, "e"), HubFile("README.md", 1000)]
    variants = variants_of(files, {"gguf"}, "owner/model-GGUF")
    assert [v.name for v in variants] == ["q4_k_m", "q8_0"]
    q8 = variants[1]
    assert [f.path for f in q8.files] == ["model-Q8_0-00001-of-00002.gguf", "model-Q8_0-00002-of-00002.gguf",
                                          "mmproj-model-f16.gguf"]
    assert q8.size_bytes == 650 * MB
    mark_fit(variants, available_bytes=900 * MB)
    assert variants[0].fits and variants[0].recommended and not variants[1].fits
    assert choose(variants, "q8_0", None) is q8 and choose(variants, None, None) is variants[0]
    assert choose(variants, None, "model-Q8_0-00002-of-00002.gguf") is q8
    assert choose(variants, "q2_k", None) is None


def test_an_mlx_repository_is_one_directory_variant():
    files = [HubFile("config.json", 900), HubFile("model.safetensors", 80 * MB, "f"), HubFile("tokenizer.json", 2000)]
    [variant] = variants_of(files, {"mlx", "safetensors"}, "mlx-community/SmolLM2-135M-Instruct-4bit")
    assert (variant.name, variant.format, len(variant.files)) == ("mlx-4bit", "mlx", 3)
