"""Unit tests of the GGUF header reader (lms/store/gguf.py), on tiny synthetic files written with the `gguf`
package (tests/gguf_files.py) and on the header of the bundled SmolLM2 model when its package is installed."""

from __future__ import annotations

import struct

import gguf
import pytest
from gguf_files import CHATML_WITH_TOOLS, F16, Q4_1, Q4_K_M, Q8_0, write_gguf

from lms.store.gguf import GGUFError, read_header


def test_read_header_returns_metadata_of_a_synthetic_llama_file(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", context_length=4096, file_type=Q4_K_M, name="Tiny Llama",
                      chat_template=CHATML_WITH_TOOLS)

    header = read_header(path)

    assert header.version == 3
    assert header.architecture == "llama"
    assert header.metadata["llama.context_length"] == 4096
    assert header.arch_value("context_length") == 4096
    assert header.arch_value("missing", "fallback") == "fallback"
    assert header.metadata["general.file_type"] == Q4_K_M
    assert header.metadata["general.name"] == "Tiny Llama"
    assert header.metadata["tokenizer.chat_template"] == CHATML_WITH_TOOLS


def test_read_header_skips_long_arrays_but_reads_the_keys_after_them(tmp_path):
    path = write_gguf(tmp_path / "vocab.gguf", vocab_size=500)

    header = read_header(path)

    tokens = header.metadata["tokenizer.ggml.tokens"]
    assert tokens == [] and tokens.length == 500  # skipped, length kept
    assert header.metadata["tokenizer.ggml.scores"].length == 500
    assert header.metadata["test.after_vocab"] == 1234


def test_read_header_keeps_short_arrays_and_steps_over_long_nested_arrays(tmp_path):
    path = tmp_path / "arrays.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_array("short.strings", ["en", "fr"])
    writer.add_array("short.ints", [1, 2, 3])
    writer.add_array("long.nested", [[1, 2], ["x"]] * 40)
    writer.add_bool("after.bool", True)
    writer.add_float32("after.float", 0.5)
    writer.add_string("after.string", "done")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    header = read_header(path)

    assert header.metadata["short.strings"] == ["en", "fr"]
    assert header.metadata["short.ints"] == [1, 2, 3]
    assert header.metadata["long.nested"].length == 80
    assert header.metadata["after.bool"] is True
    assert header.metadata["after.float"] == 0.5
    assert header.metadata["after.string"] == "done"
    assert header.tensor_count == 0 and header.param_count == 0


def test_read_header_counts_parameters_and_tensor_types(tmp_path):
    path = write_gguf(tmp_path / "tensors.gguf", tensors=((4, 8), (8,), (2, 3, 5)))

    header = read_header(path)

    assert header.tensor_count == 3
    assert header.param_count == 4 * 8 + 8 + 2 * 3 * 5
    assert header.tensor_types == {"F32": 4 * 8 + 8 + 2 * 3 * 5}


@pytest.mark.parametrize(("file_type", "expected"), [(Q4_K_M, "Q4_K_M"), (Q8_0, "Q8_0"), (Q4_1, "Q4_1"),
                                                     (F16, "F16"), (0, "F32"), (32, "BF16")])
def test_quantization_comes_from_general_file_type(tmp_path, file_type, expected):
    header = read_header(write_gguf(tmp_path / "q.gguf", file_type=file_type))

    assert header.quantization == expected


def test_quantization_falls_back_to_the_most_common_tensor_type(tmp_path):
    header = read_header(write_gguf(tmp_path / "no-file-type.gguf", file_type=None))

    assert "general.file_type" not in header.metadata
    assert header.quantization == "F32"


def test_quantization_is_none_without_file_type_or_tensors(tmp_path):
    header = read_header(write_gguf(tmp_path / "empty.gguf", file_type=None, tensors=()))

    assert header.quantization is None


def test_architecture_defaults_to_unknown_when_absent(tmp_path):
    path = tmp_path / "noarch.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))

    header = read_header(path)

    assert header.architecture == "unknown"
    assert header.metadata == {}


def test_read_header_rejects_a_file_that_is_not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("this is not a model\n")

    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_header(path)


def test_read_header_rejects_an_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")

    with pytest.raises(GGUFError):
        read_header(path)


def test_read_header_rejects_gguf_version_1(tmp_path):
    path = tmp_path / "v1.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))

    with pytest.raises(GGUFError, match="too old"):
        read_header(path)


def test_read_header_rejects_a_truncated_header(tmp_path):
    full = write_gguf(tmp_path / "full.gguf", chat_template=CHATML_WITH_TOOLS).read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(full[:120])  # inside the metadata

    with pytest.raises(GGUFError, match="truncated"):
        read_header(path)


def test_read_header_rejects_an_unknown_value_type(tmp_path):
    key = b"weird.key"
    path = tmp_path / "weird.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                     + struct.pack("<I", 99))

    with pytest.raises(GGUFError, match="unknown GGUF value type 99"):
        read_header(path)


def test_gguf_error_is_a_value_error():
    assert issubclass(GGUFError, ValueError)


def test_read_header_of_the_bundled_smollm2_model(bundled_file):
    header = read_header(bundled_file)

    assert header.architecture == "llama"
    assert header.metadata["general.size_label"] == "135M"
    assert header.arch_value("context_length") == 8192
    assert header.quantization == "Q4_1"
    assert header.param_count == pytest.approx(134.5e6, rel=0.01)
    assert header.metadata["tokenizer.ggml.tokens"].length == 49152
    assert "<|im_start|>" in header.metadata["tokenizer.chat_template"]


def _header_with(key: bytes, kind: int, payload: bytes) -> bytes:
    return (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", kind)
            + payload)


@pytest.mark.parametrize(("payload", "kind"), [
    (struct.pack("<Q", 2**63), 8),  # a string of 2^63 bytes
    (struct.pack("<IQ", 8, 2**62), 9),  # an array of 2^62 strings: would loop for ever
    (struct.pack("<IQ", 6, 2**40), 9),  # an array of 2^40 float32s
    (struct.pack("<IQ", 9, 2**50), 9),  # an array of 2^50 arrays
])
def test_hostile_lengths_are_refused_before_reading(tmp_path, payload, kind):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(_header_with(b"evil", kind, payload))

    with pytest.raises(GGUFError, match="longer than the file"):
        read_header(path)
