"""Models on disk, from the Hub's side: which of a repository's variants are already here, and removing a model
(all its variants, or one) with its folder once nothing is left in it."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from lms import config
from lms.errors import LmsError
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
    """Delete the files of `doomed` (entries of `entry`'s model); a GGUF folder goes with the last model in it,
    an MLX model is its folder. Nothing above or beside a model's own folder is touched (an empty publisher
    folder is taken away, as LM Studio does)."""
    removed = []
    for victim in doomed:
        if victim.format == "mlx":
            removed.append(_remove_mlx_folder(victim.path))
            continue
        for path in catalog.files_of(victim):
            path.unlink(missing_ok=True)
            removed.append(str(path))
    if entry.format != "mlx":
        _remove_emptied_folder(entry.path.parent)
    return removed


def _inside_models(folder: Path, depth: int) -> bool:
    """`folder` lies inside the models folder at least `depth` levels down (publisher/repo is 2), by name:
    what rm removes is a folder the catalog listed there, never the models folder or a publisher's."""
    try:
        parts = folder.relative_to(config.models_dir()).parts
    except ValueError:
        return False
    return len(parts) >= depth and not any(part in ("", ".", "..") for part in parts)


def _remove_mlx_folder(folder: Path) -> str:
    """Exactly `models/<publisher>/<repo>/`: a link is unlinked (what it points to is not ours to delete), a
    folder removed with what is in it, links inside it unlinked, not followed."""
    if folder.parent.parent != config.models_dir() or not _inside_models(folder, 2):
        raise LmsError.invalid(f"Refusing to remove {folder}: it is not a model folder of {config.models_dir()}.",
                               "model", code="unsafe_path")
    if folder.is_symlink():
        folder.unlink()
    elif folder.is_dir():
        shutil.rmtree(folder)
    _remove_if_empty(folder.parent)
    return str(folder)


def _holds_models(folder: Path) -> bool:
    return any(p.suffix.lower() in (".gguf", ".safetensors") and "mmproj" not in p.name.lower()
               for p in folder.rglob("*"))


def _remove_emptied_folder(folder: Path) -> None:
    """A GGUF model's folder once it holds no model (projectors and leftovers go with it); one that still holds
    a model, in it or in a subfolder, stays."""
    if not folder.is_dir() or folder.is_symlink() or not _inside_models(folder, 2) or _holds_models(folder):
        return
    shutil.rmtree(folder, ignore_errors=True)
    _remove_if_empty(folder.parent)


def _remove_if_empty(folder: Path) -> None:
    if folder != config.models_dir() and _inside_models(folder, 1):
        with contextlib.suppress(OSError):
            folder.rmdir()  # fails, as it should, unless empty
