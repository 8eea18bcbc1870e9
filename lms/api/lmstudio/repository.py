"""The `repository` namespace behind the SDK's `client.repository`: searching the Hugging Face Hub, a repository's
download options, and downloading one of them.

Nothing here talks to the Hub or writes a file itself: the search and the variants are lms/store/hub.py's (the
same as `lms get`), and a download is a job of the daemon's DownloadManager started by lms/store/get.py's
`download`, as LM Studio's REST download route and Ollama's `/api/pull` start theirs. So a download the SDK starts
is listed by `lms get`, resumes after a daemon restart and lands in `lms ls` only once verified. As those routes,
the daemon's own `HF_ENDPOINT` and `HF_TOKEN` are used (huggingface_hub reads them).

A download option's `downloadIdentifier` is `owner/repo@variant`, the form `lms get` takes, so the download
resolves the variant at the repository's current commit.
"""

from __future__ import annotations

import asyncio
import contextlib

from lms.api.auth import require_admin
from lms.api.lmstudio.session import Channel, Namespace, Session
from lms.errors import Kind, LmsError
from lms.store import catalog, hub
from lms.store.catalog import ModelEntry
from lms.store.downloads import ACTIVE, DownloadManager, Job
from lms.store.get import default_formats, download, variants

DEFAULT_SEARCH_LIMIT = 10
MAX_SEARCH_LIMIT = 25  # the SDK's own bound on `limit`
PROGRESS_SECONDS = 0.5  # downloadProgress at least this often (the sync SDK gives up after 60 s of silence)
# LM Studio's compatibility types, as the formats lms downloads: MLX repositories hold safetensors.
FORMAT_OF_COMPATIBILITY = {"gguf": "gguf", "safetensors": "mlx", "mlx_placeholder": "mlx"}


# --- parameters -------------------------------------------------------------------------------------------------


def _object(parameter: object, key: str) -> dict:
    value = parameter.get(key) if isinstance(parameter, dict) else None
    if not isinstance(value, dict):
        raise LmsError.invalid(f"'{key}' must be an object.", key)
    return value


def _string(parameter: dict, key: str) -> str:
    value = parameter.get(key)
    if not isinstance(value, str) or not value.strip():
        raise LmsError.invalid(f"'{key}' must be a non-empty string.", key)
    return value.strip()


def search_limit(value: object) -> int:
    """The number of results asked for, within the SDK's bounds; the SDK leaves it out for its default."""
    if value is None:
        return DEFAULT_SEARCH_LIMIT
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_SEARCH_LIMIT:
        raise LmsError.invalid(f"'limit' must be a whole number from 1 to {MAX_SEARCH_LIMIT}.", "limit")
    return value


def search_formats(compatibility_types: object) -> set[str]:
    """The formats to search: those the client asked for that this machine runs (none asked: all it runs). Asking
    only for formats lms cannot run finds nothing, rather than models the client could not use."""
    runnable = default_formats()
    if not compatibility_types:
        return runnable
    if not isinstance(compatibility_types, list):
        raise LmsError.invalid("'compatibilityTypes' must be a list.", "compatibilityTypes")
    return {FORMAT_OF_COMPATIBILITY[t] for t in compatibility_types if t in FORMAT_OF_COMPATIBILITY} & runnable


def hub_repo_id(identifier: dict) -> str:
    """The Hub repository a search result names: lms's results are all `hf`; LM Studio's own catalog is not
    reachable from lms."""
    if identifier.get("type") != "hf":
        raise LmsError.invalid("lms searches the Hugging Face Hub only: the identifier must have the type 'hf'.",
                               "modelSearchResultIdentifier")
    return hub.safe_repo_id(_string(identifier, "identifier"))


# --- shapes -----------------------------------------------------------------------------------------------------


def search_result(found: dict) -> dict:
    """LM Studio's ModelSearchResultEntryData of one of hub.search's results."""
    return {"name": found["repo_id"], "identifier": {"type": "hf", "identifier": found["repo_id"]},
            "exact": bool(found.get("exact")), "staffPick": False}


def fit_estimation(variant: hub.Variant) -> str:
    """lms estimates against the memory it runs models in, not per GPU offload: a fit is LM Studio's
    'fitWithoutGPU'."""
    return "fitWithoutGPU" if variant.fits else "willNotFit"


def download_option(repo: hub.HubRepo, variant: hub.Variant) -> dict:
    """LM Studio's ModelSearchResultDownloadOptionData: named by its model file (a GGUF) or repository (MLX)."""
    main_file = variant.files[0].path if variant.format == "gguf" else repo.name
    option = {"name": main_file, "sizeBytes": variant.size_bytes, "fitEstimation": fit_estimation(variant),
              "downloadIdentifier": f"{repo.repo_id}@{variant.name}",
              "indexedModelIdentifier": f"{repo.repo_id}/{main_file}", "recommended": variant.recommended}
    if variant.quantization:
        option["quantization"] = variant.quantization
    return option


def progress_update(job: Job) -> dict:
    return {"type": "downloadProgress", "update": {"downloadedBytes": job.downloaded_bytes,
                                                   "totalBytes": job.total_bytes,
                                                   "speedBytesPerSecond": float(job.speed)}}


# --- downloads --------------------------------------------------------------------------------------------------


def installed_entry(job: Job, entries: list[ModelEntry]) -> ModelEntry | None:
    """The model a finished job installed: the entry of its main file (GGUF) or of its folder (MLX)."""
    paths = {job.target_dir} | {job.target_dir / file.path for file in job.files}
    return next((entry for entry in entries if entry.path in paths), None)


async def loadable_identifier(job: Job) -> str:
    """What the client loads the downloaded model by: its variant key (exact, when the repository holds several
    variants), else the repository as `lms get` names it."""
    entry = installed_entry(job, await asyncio.to_thread(catalog.scan))
    return entry.variant_key if entry is not None else job.repo_id.lower()


async def _cancelled_within(channel: Channel, seconds: float) -> bool:
    """Wait up to `seconds` for the client's cancel; whether it came."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(channel.cancelled.wait(), seconds)
    return channel.cancelled.is_set()


async def follow(channel: Channel, downloads: DownloadManager, job: Job) -> None:
    """Report the job's progress until it ends; the client's cancel cancels the job (its part file is kept, so a
    later download resumes). A client that just goes away leaves the job running, as `lms get` can."""
    finalizing = False
    while job.status in ACTIVE:
        await channel.send(progress_update(job))
        if not finalizing and job.total_bytes and job.downloaded_bytes >= job.total_bytes:
            finalizing = True  # every byte is here: what is left is moving the files into the models folder
            await channel.send({"type": "startFinalizing"})
        if await _cancelled_within(channel, PROGRESS_SECONDS):
            await downloads.cancel(job.job_id)
            raise LmsError(f"The download of {job.repo_id}@{job.variant} was cancelled.", Kind.CANCELLED,
                           code="download_cancelled")
    job.raise_if_failed()
    await channel.send(progress_update(job))
    if not finalizing:
        await channel.send({"type": "startFinalizing"})


# --- endpoints --------------------------------------------------------------------------------------------------


async def search_models(_session: Session, parameter) -> dict:
    opts = _object(parameter, "opts")
    term = opts.get("searchTerm") if isinstance(opts.get("searchTerm"), str) else ""
    limit = search_limit(opts.get("limit"))
    formats = search_formats(opts.get("compatibilityTypes"))
    found = await asyncio.to_thread(hub.search, term.strip(), formats, limit=limit) if formats else []
    return {"results": [search_result(entry) for entry in found[:limit]]}


async def get_model_download_options(_session: Session, parameter) -> dict:
    repo_id = hub_repo_id(_object(parameter, "modelSearchResultIdentifier"))
    repo = await variants(repo_id, default_formats(), None, None)
    return {"results": [download_option(repo, variant) for variant in repo.variants]}


async def download_model(session: Session, channel: Channel, parameter) -> None:
    identifier = _string(parameter if isinstance(parameter, dict) else {}, "downloadIdentifier")
    require_admin(session.websocket.scope, "downloading a model")
    downloads = session.app_state.downloads
    job = await download(downloads, identifier)
    await follow(channel, downloads, job)
    await channel.send({"type": "success", "defaultIdentifier": await loadable_identifier(job)})


def namespace() -> Namespace:
    return Namespace("repository",
                     rpcs={"searchModels": search_models, "getModelDownloadOptions": get_model_download_options},
                     channels={"downloadModel": download_model})
