"""Ollama's `name:tag` names for our models: `publisher/model:latest` is a model's selected variant and
`publisher/model:q8_0` a variant; `:latest` may be left out; `hf.co/Owner/Repo-GGUF:Q4_K_M`, as Ollama writes Hugging
Face models, names the same files we keep as `owner/repo@q4_k_m`."""

from __future__ import annotations

import contextlib
import re

from lms.errors import LmsError
from lms.manager.models import LoadedModel, ModelManager
from lms.store.catalog import ModelEntry

LOCAL_PUBLISHER = "local"  # the owner folder of models created by name alone ("mymodel" -> models/local/mymodel)
HUB_PREFIX = re.compile(r"^(?:https?://)?(?:hf\.co|huggingface\.co)/", re.IGNORECASE)


def tag_of(entry: ModelEntry) -> str:
    if entry.selected_variant in (None, entry.variant_key) or "@" not in entry.variant_key:
        return "latest"
    return entry.variant_key.split("@", 1)[1]


def name_of(entry: ModelEntry) -> str:
    key = entry.model_key.removeprefix(f"{LOCAL_PUBLISHER}/")  # models created without an owner
    return f"{key}:{tag_of(entry)}"


def query_of(name: str) -> str:
    """The catalog query an Ollama name stands for."""
    name = HUB_PREFIX.sub("", name.strip())
    base, tag = name.rsplit(":", 1) if ":" in name else (name, "")
    base = re.sub(r"-gguf$", "", base, flags=re.IGNORECASE).lower()
    return base if tag.lower() in ("", "latest") else f"{base}@{tag.lower()}"


def not_found(name: str) -> LmsError:
    return LmsError.not_found(f"model '{name}' not found", "model", code="model_not_found")


def resolve(manager: ModelManager, name: object) -> ModelEntry:
    """The model an Ollama request names; a missing one is Ollama's 404 `model 'x' not found`."""
    if not isinstance(name, str) or not name.strip():
        raise LmsError.missing("model", "model is required")
    if loaded := manager.find_loaded(name):
        return loaded.entry
    query = query_of(name)
    if "/" not in query:  # a name created without an owner lives under local/
        with contextlib.suppress(LmsError):
            found = manager.resolve(f"{LOCAL_PUBLISHER}/{query}")
            if found.model_key.startswith(f"{LOCAL_PUBLISHER}/"):
                return found
    try:
        return manager.resolve(query)
    except LmsError as exc:
        if exc.code == "model_not_found":
            raise not_found(name) from None
        raise


def target(manager: ModelManager, name: object) -> str:
    """What to hand the pipeline for an Ollama name: a loaded identifier, or the key of the model it names."""
    entry = resolve(manager, name)
    if manager.find_loaded(name):
        return name
    return entry.variant_key if "@" in query_of(name) else entry.model_key


def loaded_name(model: LoadedModel) -> str:
    """How a loaded model is named in answers: its Ollama name, or the identifier it was loaded under."""
    default = model.entry.model_key
    if model.identifier in (default, model.entry.variant_key):
        return name_of(model.entry)
    return model.identifier
