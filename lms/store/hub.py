"""The Hugging Face Hub, reached only through `huggingface_hub`: what `lms get` is asked for, search, and how a
repository's files form downloadable variants.

`HF_ENDPOINT` (a company mirror) and `HF_TOKEN` are honoured; the CLI passes its own values with each request
so that the daemon uses what the user's shell says.

Repository ids, commits and file names become paths under `models/` and the download staging folder, so each is
validated before it is used (`safe_repo_id`, `safe_revision`, `safe_file_path`): a mirror that answers `../x`,
`/etc/x`, a backslash or a NUL cannot make lms write outside those folders.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lms.errors import Kind, LmsError

SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
QUANT = re.compile(r"(?:^|[.\-_])(i?q\d(?:_[a-z0-9]+)*|f16|f32|bf16|fp16|mxfp4)(?=$|[.\-_])", re.IGNORECASE)
MLX_QUANT = re.compile(r"(\d+)[-_]?bit", re.IGNORECASE)
# What "recommended" means when several variants fit: the quantizations most people run.
PREFERRED = ["q4_k_m", "q4_k_s", "q5_k_m", "q4_0", "q4_1", "q5_0", "q6_k", "q8_0", "mlx-4bit", "mlx-8bit"]
HUB_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}
# One part of a repository id (owner or name), in the Hub's own rules: letters, digits, '_', '-' and '.', neither
# '-' nor '.' first or last, at most 96 characters. So never '.', '..' or a separator.
REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?")
REPO_ID_LIKE = re.compile(r"[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+")  # what is meant as owner/name, safe or not
MAX_FILE_PATH = 1024
MAX_PATH_PART_BYTES = 255


class HubError(LmsError):
    pass


@dataclass
class Target:
    """What the user asked `lms get` for: a repository (maybe a quantization or one file in it), or a search."""

    repo_id: str | None = None
    query: str | None = None
    quant: str | None = None
    filename: str | None = None


def _bad(message: str) -> HubError:
    return HubError(message, Kind.INVALID, code="invalid_value", param="model")


def safe_repo_id(repo_id: object) -> str:
    """`repo_id` if it is `owner/name` of the Hub's safe characters, else an error (it becomes a folder)."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(REPO_PART.fullmatch(part) for part in parts):
        raise _bad(f"{_shown(repo_id)} is not a repository id: use owner/name (letters, digits, '-', '_', '.').")
    return repo_id


def path_problem(path: object) -> str | None:
    if not isinstance(path, str) or not path:
        return "it is empty"
    if len(path) > MAX_FILE_PATH:
        return f"it is longer than {MAX_FILE_PATH} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return "it holds a control character"
    if "\\" in path:
        return "it holds a backslash"
    if path.startswith("/"):
        return "it is absolute"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "it has an empty, '.' or '..' part"
    if any(len(part.encode()) > MAX_PATH_PART_BYTES for part in parts):
        return f"a part is longer than {MAX_PATH_PART_BYTES} bytes"
    return None


def safe_file_path(path: object, repo_id: str) -> str:
    """A file name from the Hub if it is a plain relative path that stays inside the repository's folder."""
    reason = path_problem(path)
    if reason:
        raise HubError(f"The Hub answered an unsafe file name {_shown(path)} for {repo_id} ({reason}); nothing was "
                       "downloaded. Check HF_ENDPOINT if you use a mirror.", Kind.UPSTREAM, code="unsafe_hub_answer")
    return path


def safe_revision(commit: object, repo_id: str) -> str:
    """The commit the Hub answered, as one safe folder name (the download staging folder is named by it)."""
    if not isinstance(commit, str) or not re.fullmatch(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}", commit):
        raise HubError(f"The Hub answered an unusable commit {_shown(commit)} for {repo_id}; nothing was downloaded.",
                       Kind.UPSTREAM, code="unsafe_hub_answer")
    return commit


def _shown(value: object) -> str:
    """A value from outside, quoted with control characters escaped and its length bounded."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def parse_target(text: str, endpoint: str | None = None) -> Target:
    text = text.strip()
    if text.count("@") > 1:
        raise _bad(f"'{text}' has more than one '@': use owner/repo@quantization.")
    name, _, quant = text.partition("@")
    quant = quant.lower() or None
    if name.startswith(("http://", "https://")):
        url = urlsplit(name)
        hosts = HUB_HOSTS | ({urlsplit(endpoint).netloc} if endpoint else set())
        parts = [p for p in url.path.split("/") if p]
        if url.netloc not in hosts or len(parts) < 2:
            raise _bad(f"'{name}' is not a Hugging Face model URL.")
        filename = None
        if len(parts) > 4 and parts[2] in ("blob", "resolve", "tree"):
            filename = "/".join(parts[4:]) or None
        return Target(repo_id=safe_repo_id(f"{parts[0]}/{parts[1]}"), quant=quant, filename=filename)
    if REPO_ID_LIKE.fullmatch(name):
        return Target(repo_id=safe_repo_id(name), quant=quant)
    return Target(query=name, quant=quant)


@dataclass
class HubFile:
    path: str
    size: int
    sha256: str | None = None  # LFS files: the Hub's checksum, verified after the download


@dataclass
class Variant:
    name: str  # "q4_k_m", "mlx-4bit"
    format: str  # "gguf" or "mlx"
    files: list[HubFile]
    quantization: str | None
    size_bytes: int = 0
    fits: bool = True
    recommended: bool = False
    downloaded: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class HubRepo:
    repo_id: str
    commit: str
    variants: list[Variant] = field(default_factory=list)

    @property
    def publisher(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def name(self) -> str:
        return self.repo_id.split("/")[1]

    def as_dict(self) -> dict:
        return {"repo_id": self.repo_id, "commit": self.commit, "variants": [v.as_dict() for v in self.variants]}


def _api(endpoint: str | None, token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint or None, token=token or None)


def _hub_failure(exc: Exception, what: str) -> HubError:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return HubError(f"{what} is gated: accept its terms on the Hub and set HF_TOKEN.", Kind.FORBIDDEN,
                        code="gated_repo")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"{what} was not found on the Hub (or is private: set HF_TOKEN).", Kind.NOT_FOUND,
                        code="model_not_found")
    if isinstance(exc, HfHubHTTPError):
        return HubError(f"The Hub refused {what}: {exc}", Kind.UPSTREAM, code="hub_error")
    return HubError(f"Cannot reach the Hub for {what}: {exc}", Kind.UPSTREAM, code="hub_unreachable")


def search(query: str, formats: set[str], *, endpoint: str | None = None, token: str | None = None,
           limit: int = 20) -> list[dict]:
    """Model repositories matching the query, in GGUF or MLX format, most downloaded first."""
    results: dict[str, dict] = {}
    try:
        for fmt in sorted(formats):
            for model in _api(endpoint, token).list_models(search=query, filter=fmt, sort="downloads", limit=limit):
                entry = results.setdefault(model.id, {"repo_id": model.id, "downloads": model.downloads or 0,
                                                      "likes": model.likes or 0, "formats": []})
                entry["formats"].append(fmt)
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one clear message
        raise _hub_failure(exc, f"the search for '{query}'") from None
    ranked = sorted(results.values(), key=lambda e: (-e["downloads"], e["repo_id"]))
    exact = [e for e in ranked if e["repo_id"].split("/")[-1].lower() in (query.lower(), f"{query.lower()}-gguf")]
    for entry in ranked:
        entry["exact"] = entry in exact
    return exact + [e for e in ranked if e not in exact]


def repo_variants(repo_id: str, formats: set[str], *, endpoint: str | None = None, token: str | None = None,
                  available_bytes: int | None = None) -> HubRepo:
    """The repository's variants at its current commit, each tagged with whether it fits this machine. The id,
    commit and file names the Hub answers are validated here, before anything uses them as paths."""
    safe_repo_id(repo_id)
    try:
        info = _api(endpoint, token).model_info(repo_id, files_metadata=True)
    except Exception as exc:  # noqa: BLE001
        raise _hub_failure(exc, f"'{repo_id}'") from None
    try:
        answered_id = safe_repo_id(info.id)
    except HubError:
        raise HubError(f"The Hub answered an unsafe repository id {_shown(info.id)} for {repo_id}; nothing was "
                       "downloaded. Check HF_ENDPOINT if you use a mirror.", Kind.UPSTREAM,
                       code="unsafe_hub_answer") from None
    commit = safe_revision(info.sha, repo_id)
    files = [HubFile(safe_file_path(s.rfilename, repo_id), s.size or (s.lfs.size if s.lfs else 0),
                     s.lfs.sha256 if s.lfs else None) for s in info.siblings or []]
    variants = variants_of(files, set(info.tags or []), repo_id) if formats else []
    variants = [v for v in variants if v.format in formats]
    mark_fit(variants, available_bytes)
    return HubRepo(answered_id, commit, variants)


def contained(base: Path, relative: str) -> Path:
    """`base / relative` for a validated relative path, checked once more to lie inside `base` (symlinks of
    the folder itself are followed: LM Studio users link their models folder elsewhere)."""
    if path_problem(relative):
        raise LmsError.invalid(f"Refusing the path {_shown(relative)}: it would leave {base}.", code="unsafe_path")
    path = base / relative
    if not path.resolve().is_relative_to(base.resolve()):
        raise LmsError.invalid(f"Refusing the path {_shown(relative)}: it would leave {base}.", code="unsafe_path")
    return path


def quantization_of(filename: str) -> str | None:
    stem = SPLIT_PART.sub(".gguf", filename.rsplit("/", 1)[-1])[: -len(".gguf")]
    found = QUANT.findall(stem)
    return found[-1].upper() if found else None


def _projector(files: list[HubFile]) -> list[HubFile]:
    """The vision projector to fetch with every variant (the best precision offered)."""
    projectors = [f for f in files if f.path.lower().endswith(".gguf") and "mmproj" in f.path.lower()]
    order = ["f16", "bf16", "f32", "q8_0"]
    projectors.sort(key=lambda f: next((i for i, q in enumerate(order) if q in f.path.lower()), len(order)))
    return projectors[:1]


def variants_of(files: list[HubFile], tags: set[str], repo_id: str) -> list[Variant]:
    """GGUF files group into one variant per quantization (split parts together); an MLX repository is one
    directory variant."""
    ggufs = [f for f in files if f.path.lower().endswith(".gguf") and "mmproj" not in f.path.lower()]
    projector = _projector(files)
    groups: dict[str, list[HubFile]] = {}
    for file in ggufs:
        quant = quantization_of(file.path) or SPLIT_PART.sub(".gguf", file.path.rsplit("/", 1)[-1])[: -len(".gguf")]
        groups.setdefault(quant.lower(), []).append(file)
    variants = []
    for name, parts in groups.items():
        parts.sort(key=lambda f: f.path)
        whole = [f for f in parts if not SPLIT_PART.search(f.path)]
        chosen = whole[:1] or parts  # split parts make one variant together; a whole file is one by itself
        variants.append(Variant(name, "gguf", chosen + projector, quantization_of(chosen[0].path)))
    has_weights = any(f.path.endswith(".safetensors") for f in files) and any(f.path == "config.json" for f in files)
    if not ggufs and has_weights and ("mlx" in tags or "mlx" in repo_id.lower()):
        bits = MLX_QUANT.search(repo_id)
        name = f"mlx-{bits.group(1)}bit" if bits else "mlx"
        variants.append(Variant(name, "mlx", list(files), f"{bits.group(1)}bit" if bits else None))
    for variant in variants:
        variant.size_bytes = sum(f.size for f in variant.files)
    variants.sort(key=lambda v: v.size_bytes)
    return variants


def memory_needed(variant: Variant) -> int:
    """Until the load estimate exists: the weights plus a margin for the context and compute buffers."""
    return int(variant.size_bytes * 1.1) + 256 * 1024 * 1024


def mark_fit(variants: list[Variant], available_bytes: int | None) -> None:
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    for variant in variants:
        variant.fits = memory_needed(variant) <= available_bytes
    fitting = [v for v in variants if v.fits]
    if fitting:
        best = next((v for name in PREFERRED for v in fitting if v.name == name), fitting[-1])
        best.recommended = True


def choose(variants: list[Variant], quant: str | None, filename: str | None) -> Variant | None:
    """The variant asked for (by quantization or file), else the recommended one, else the smallest."""
    if filename:
        return next((v for v in variants if any(f.path == filename for f in v.files)), None)
    if quant:
        return next((v for v in variants if v.name == quant.lower() or v.name == f"mlx-{quant.lower()}"), None)
    return next((v for v in variants if v.recommended), variants[0] if variants else None)
