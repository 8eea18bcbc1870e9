"""Control routes behind `lms get` and `lms rm`: Hub search and variants, download jobs, removing a model."""

from __future__ import annotations

import asyncio
import shutil

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lms.api.http import read_json
from lms.api.native.downloads import download, formats_of, variants
from lms.generation.request import GenerationError
from lms.store import catalog, hub


def _hub_options(body: dict) -> dict:
    """The CLI sends its own HF_ENDPOINT and HF_TOKEN, so the daemon uses what the user's shell says."""
    return {"endpoint": body.get("endpoint") or None, "token": body.get("token") or None}


async def hub_search(request: Request):
    body = await read_json(request)
    options = _hub_options(body)
    results = await asyncio.to_thread(hub.search, str(body.get("query") or ""), formats_of(body.get("formats")),
                                      **options)
    return JSONResponse(results)


async def hub_variants(request: Request):
    body = await read_json(request)
    repo = await variants(str(body.get("repo_id") or ""), formats_of(body.get("formats")), **_hub_options(body))
    folder = catalog.config.models_dir() / repo.repo_id
    for variant in repo.variants:
        variant.downloaded = all((folder / f.path).is_file() and (folder / f.path).stat().st_size == f.size
                                 for f in variant.files)
    active = [j for j in request.app.state.downloads.jobs.values()
              if j.repo_id == repo.repo_id and j.status == "downloading"]
    return JSONResponse({**repo.as_dict(), "downloading": [j.variant for j in active]})


async def start_job(request: Request):
    body = await read_json(request)
    job = await download(request.app.state.downloads, str(body.get("model") or ""), variant=body.get("variant"),
                         formats=formats_of(body.get("formats")), **_hub_options(body))
    return JSONResponse(job.status_dict())


async def list_jobs(request: Request):
    return JSONResponse([job.status_dict() for job in request.app.state.downloads.jobs.values()])


async def job_status(request: Request):
    return JSONResponse(request.app.state.downloads.get(request.path_params["job_id"]).status_dict())


async def cancel_job(request: Request):
    return JSONResponse((await request.app.state.downloads.cancel(request.path_params["job_id"])).status_dict())


async def remove_model(request: Request):
    """Delete a model's files (one variant when a variant key is given). A loaded model is not removed."""
    body = await read_json(request)
    manager = request.app.state.manager
    entry = manager.resolve(str(body.get("model") or ""))
    whole_model = "@" not in str(body.get("model"))
    doomed = [e for e in catalog.scan() if e.model_key == entry.model_key and (whole_model or e is entry
                                                                              or e.variant_key == entry.variant_key)]
    loaded = [m.identifier for m in manager.loaded.values() if any(m.entry.path == e.path for e in doomed)]
    if loaded:
        raise GenerationError(f"{entry.model_key} is loaded as {', '.join(loaded)}; unload it first (lms unload).",
                              status=409, code="model_loaded")
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
        if folder.parent != catalog.config.models_dir() and not any(folder.parent.iterdir()):
            folder.parent.rmdir()
    return JSONResponse({"removed": removed, "modelKey": entry.model_key})


def routes() -> list[Route]:
    return [
        Route("/lms/hub/search", hub_search, methods=["POST"]),
        Route("/lms/hub/variants", hub_variants, methods=["POST"]),
        Route("/lms/downloads", start_job, methods=["POST"]),
        Route("/lms/downloads", list_jobs),
        Route("/lms/downloads/{job_id}", job_status),
        Route("/lms/downloads/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/lms/models/remove", remove_model, methods=["POST"]),
    ]
