"""Downloads over HTTP and the control socket: LM Studio's `POST /api/v1/models/download` and
`GET /api/v1/models/download/status/{job_id}`, and the shared step from "what the user asked for" to a job."""

from __future__ import annotations

import asyncio
import importlib.util

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lms.api.http import read_json
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


async def start_download(request: Request):
    body = await read_json(request)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise LmsError.invalid("'model' is required", "model", code="missing_required_parameter")
    job = await download(request.app.state.downloads, body["model"], quantization=body.get("quantization"))
    status = job.status_dict()
    shown = {k: status[k] for k in ("job_id", "status", "total_size_bytes", "started_at")}
    if job.status == "completed":
        shown["completed_at"] = status["completed_at"]
    return JSONResponse(shown)


async def download_status(request: Request):
    job = request.app.state.downloads.get(request.path_params["job_id"])
    status = job.status_dict()
    return JSONResponse({k: v for k, v in status.items() if v is not None or k in ("job_id", "status")})


def routes() -> list[Route]:
    return [
        Route("/api/v1/models/download", start_download, methods=["POST"]),
        Route("/api/v1/models/download/status/{job_id}", download_status),
    ]
