"""From what a user asked for (`owner/repo`, `owner/repo@quant`, a Hugging Face URL) to a download job: the one
step behind `lms get`, LM Studio's `POST /api/v1/models/download` and Ollama's `/api/pull`."""

from __future__ import annotations

import asyncio
import importlib.util

from lms.errors import LmsError
from lms.store import hub
from lms.store.downloads import DownloadManager, Job


def default_formats() -> set[str]:
    """The formats this machine can run: GGUF always, MLX where its engine is installed."""
    return {"gguf", "mlx"} if importlib.util.find_spec("mlx_lm") else {"gguf"}


def formats_of(value) -> set[str]:
    if not value:
        return default_formats()
    formats = {value} if isinstance(value, str) else set(value)
    if not formats <= {"gguf", "mlx"}:
        raise LmsError.invalid("'formats' may hold 'gguf' and 'mlx'.", "formats")
    return formats


async def variants(repo_id: str, formats: set[str], endpoint: str | None, token: str | None) -> hub.HubRepo:
    return await asyncio.to_thread(hub.repo_variants, repo_id, formats, endpoint=endpoint, token=token)


async def download(downloads: DownloadManager, model: str, *, quantization: str | None = None,
                   variant: str | None = None, formats: set[str] | None = None, endpoint: str | None = None,
                   token: str | None = None) -> Job:
    """Start (or join) the download of `model`: "owner/repo", "owner/repo@quant" or a Hugging Face URL."""
    target = hub.parse_target(model, endpoint)
    if target.repo_id is None:
        raise LmsError.invalid("'model' must be owner/repo or a Hugging Face URL; search with `lms get <words>`.",
                               "model")
    repo = await variants(target.repo_id, formats or default_formats(), endpoint, token)
    wanted = variant or quantization or target.quant
    chosen = hub.choose(repo.variants, wanted, None if wanted else target.filename)
    if chosen is None:
        offered = ", ".join(v.name for v in repo.variants) or "none in a format this machine runs"
        what = f"variant '{wanted}'" if wanted else f"file '{target.filename}'" if target.filename else "a model file"
        raise LmsError.not_found(f"Cannot find {what} in {repo.repo_id} (it has: {offered}).", "quantization",
                                 code="variant_not_found")
    return downloads.submit(repo.repo_id, repo.commit, chosen.name, chosen.files, endpoint=endpoint, token=token)
