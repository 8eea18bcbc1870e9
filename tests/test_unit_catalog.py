"""Unit tests of the catalog of models on disk (lms/store/catalog.py): scanning, model and variant keys, model
info, resolving a query, and linking the bundled model. The models are tiny synthetic GGUFs (tests/gguf_files.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gguf_files import CHATML_WITH_TOOLS, F16, Q4_0, Q4_1, Q4_K_M, Q8_0, write_gguf

from lms import config
from lms.store import catalog
from lms.store.catalog import AmbiguousModel, ModelNotFound, models, resolve, scan


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


def test_a_file_the_catalog_cannot_describe_does_not_hide_the_others(tmp_path, monkeypatch):
    root = tmp_path / "models"
    write_gguf(root / "Pub" / "Good-GGUF" / "good-Q4_K_M.gguf")
    odd = write_gguf(root / "Pub" / "Odd-GGUF" / "odd-Q4_K_M.gguf", context_length=4096)
    real_header = catalog.cached_header

    def header(path):
        found = real_header(path)
        if path == odd:
            found.metadata["llama.context_length"] = "not a number"  # metadata of a type nobody expects
            found.metadata["general.file_type"] = {"a": "dict"}
        return found

    monkeypatch.setattr(catalog, "cached_header", header)
    assert [entry.model_key for entry in catalog.scan(root)] == ["pub/good"]
