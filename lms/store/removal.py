"""Models on disk, from the Hub's side: which of a repository's variants are already here, and removing a model
(all its variants, or one) with its folder once nothing is left in it."""

from __future__ import annotations

import shutil

from lms import config
from lms.store import catalog
from lms.store.catalog import ModelEntry
from lms.store.hub import HubFile


def downloaded(repo_id: str, files: list[HubFile]) -> bool:
    """Every file of a variant is in the models folder, complete."""
    folder = config.models_dir() / repo_id
    return all((folder / f.path).is_file() and (folder / f.path).stat().st_size == f.size for f in files)


def entries_to_remove(entry: ModelEntry, whole_model: bool) -> list[ModelEntry]:
    """The entries `lms rm` deletes: every variant of the model, or just the one asked for."""
    return [e for e in catalog.scan() if e.model_key == entry.model_key
            and (whole_model or e is entry or e.variant_key == entry.variant_key)]


def remove(entry: ModelEntry, doomed: list[ModelEntry]) -> list[str]:
    """Delete the files of `doomed` (entries of `entry`'s model); the folder goes with the last model in it."""
    removed = []
    for victim in doomed:
        for path in catalog.files_of(victim):
            path.unlink(missing_ok=True)
            removed.append(str(path))
    folder = entry.path.parent
    remaining = [p for p in folder.iterdir() if p.suffix.lower() == ".gguf" and "mmproj" not in p.name.lower()] \
        if folder.is_dir() else []
    if folder.is_dir() and not remaining:
        shutil.rmtree(folder, ignore_errors=True)  # projectors and leftovers go with the last model
        if folder.parent != config.models_dir() and not any(folder.parent.iterdir()):
            folder.parent.rmdir()
    return removed
