"""The models Ollama's clients create and name: copies under new names (links to the same files), models created
from uploaded GGUF blobs, and the system prompt, parameters and template a created model carries (kept as a
preset of the pipeline, applied whenever the model is asked for by that name)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from lms import config, presets
from lms.api.ollama.names import LOCAL_PUBLISHER
from lms.errors import LmsError
from lms.store import catalog
from lms.store.catalog import ModelEntry
from lms.store.mlx_dirs import is_mlx_folder

DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Ollama's parameters that become preset fields (the others have no meaning here)
PRESET_PARAMETERS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                     "repeat_penalty": "repeat_penalty", "num_predict": "max_tokens", "stop": "stop"}


def blobs_dir() -> Path:
    path = config.home() / "blobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def blob_path(digest: str) -> Path:
    match = DIGEST.match(digest)
    if match is None:
        raise LmsError.invalid(f"'{digest}' is not a digest of the form sha256:<64 hex digits>", "digest")
    return blobs_dir() / f"sha256-{match.group(1)}"


async def save_blob(digest: str, chunks) -> bool:
    """Write an uploaded blob, checked against its digest; False when it was there already."""
    target = blob_path(digest)
    if target.is_file():
        return False
    partial = target.with_suffix(".partial")
    hasher = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            async for chunk in chunks:
                hasher.update(chunk)
                out.write(chunk)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise LmsError.storage(f"The blob cannot be written: {exc.strerror or exc}", code="disk_full") from exc
    if f"sha256:{hasher.hexdigest()}" != digest.replace("sha256-", "sha256:"):
        partial.unlink(missing_ok=True)
        raise LmsError.invalid("The uploaded data does not match its digest.", "digest", code="digest_mismatch")
    os.replace(partial, target)
    return True


def folder_for(name: str) -> tuple[str, str]:
    """(publisher, repo) folders of a new model name: `owner/model:tag` or `model:tag` (under `local/`); a tag
    other than `latest` becomes part of the folder name."""
    base, tag = name.rsplit(":", 1) if ":" in name else (name, "latest")
    parts = base.split("/")
    if len(parts) == 1:
        parts = [LOCAL_PUBLISHER, parts[0]]
    if len(parts) != 2 or not all(SAFE_PART.match(part) for part in parts) or ".." in base:
        raise LmsError.invalid(f"'{name}' is not a model name lms can keep: use model[:tag] or owner/model[:tag] "
                               "with letters, digits, '.', '_' and '-'.", "model", code="invalid_model_name")
    if tag != "latest":
        if not SAFE_PART.match(tag):
            raise LmsError.invalid(f"'{tag}' is not a tag lms can keep.", "model", code="invalid_model_name")
        parts[1] = f"{parts[1]}-{tag}"
    return parts[0], parts[1]


def _link(source: Path, target: Path) -> None:
    """The same file under a second name: a hard link where the file system allows it, else a symbolic link."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source.resolve(), target)
    except OSError:
        target.symlink_to(source.resolve())


def copy_model(entry: ModelEntry, name: str) -> Path:
    """A new name for the same files (nothing is duplicated on disk)."""
    publisher, repo = folder_for(name)
    folder = config.models_dir() / publisher / repo
    if folder.resolve() == entry.path.parent.resolve():
        return folder
    if entry.format == "mlx" or is_mlx_folder(entry.path if entry.path.is_dir() else entry.path.parent):
        source_folder = entry.path if entry.path.is_dir() else entry.path.parent
        for file in catalog.files_in(source_folder):
            if file.is_file():
                _link(file, folder / file.name)
        return folder
    for file in catalog.files_of(entry) + ([entry.projector] if entry.projector else []):
        _link(file, folder / file.name)
    return folder


def model_from_blob(name: str, filename: str, digest: str) -> Path:
    if not SAFE_PART.match(filename) or not filename.lower().endswith(".gguf"):
        raise LmsError.invalid(f"'{filename}' is not a GGUF file name lms can keep (letters, digits, '.', '_', "
                               "'-', ending in .gguf).", "files", code="invalid_file_name")
    blob = blob_path(digest)
    if not blob.is_file():
        raise LmsError.invalid(f"No blob {digest} was uploaded: POST it to /api/blobs/{digest} first.", "files",
                               code="blob_not_found")
    publisher, repo = folder_for(name)
    folder = config.models_dir() / publisher / repo
    _link(blob, folder / filename)
    return folder


# --- what a created model carries ---------------------------------------------------------------------------

def _registry_path() -> Path:
    return config.internal_dir() / "ollama-models.json"


def _registry() -> dict:
    return config.read_json(_registry_path(), {})


def preset_name(model_key: str) -> str:
    return "ollama-" + re.sub(r"[^A-Za-z0-9._-]", "-", model_key)


def save_carried(model_key: str, system: str | None, parameters: dict | None, template: str | None) -> None:
    """Keep a created model's system prompt and parameters as its preset, and its template beside it."""
    values = {"name": preset_name(model_key)}
    if system:
        values["system_prompt"] = system
    for key, value in (parameters or {}).items():
        if key in PRESET_PARAMETERS:
            values[PRESET_PARAMETERS[key]] = value
    folder = presets.presets_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{values['name']}.preset.json").write_text(json.dumps(values, indent=2))
    registry = _registry()
    registry[model_key] = {"preset": values["name"], "template": template}
    config.write_json(_registry_path(), registry)


def carried(model_key: str) -> tuple[str | None, str | None]:
    """(preset, template) a created model carries, or (None, None)."""
    found = _registry().get(model_key) or {}
    preset = found.get("preset")
    if preset and not (presets.presets_dir() / f"{preset}.preset.json").is_file():
        preset = None
    return preset, found.get("template")


def forget(model_key: str) -> None:
    registry = _registry()
    found = registry.pop(model_key, None)
    if found:
        config.write_json(_registry_path(), registry)
        (presets.presets_dir() / f"{found['preset']}.preset.json").unlink(missing_ok=True)
