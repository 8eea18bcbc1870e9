"""Control routes behind `lms get` and `lms rm`: Hub search and variants, download jobs, removing a model."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lms.api.http import optional_text, read_json
from lms.daemon import listings
from lms.errors import LmsError
from lms.store import catalog, hub, removal
from lms.store.get import download, formats_of, variants


def _hub_options(body: dict) -> dict:
    """The CLI sends its own HF_ENDPOINT and HF_TOKEN, so the daemon uses what the user's shell says."""
    return {"endpoint": optional_text(body, "endpoint") or None, "token": optional_text(body, "token") or None}


async def hub_search(request: Request):
    body = await read_json(request)
    options = _hub_options(body)
    results = await asyncio.to_thread(hub.search, optional_text(body, "query") or "", formats_of(body.get("formats")),
                                      **options)
    return JSONResponse(results)


async def hub_variants(request: Request):
    body = await read_json(request)
    repo = await variants(optional_text(body, "repo_id") or "", formats_of(body.get("formats")), **_hub_options(body))
    for variant in repo.variants:
        variant.downloaded = removal.downloaded(repo.repo_id, variant.files)
    active = [j for j in request.app.state.downloads.jobs.values()
              if j.repo_id == repo.repo_id and j.status == "downloading"]
    return JSONResponse({**repo.as_dict(), "downloading": [j.variant for j in active]})


async def start_job(request: Request):
    body = await read_json(request)
    job = await download(request.app.state.downloads, optional_text(body, "model") or "",
                         variant=optional_text(body, "variant") or None,
                         formats=formats_of(body.get("formats")), **_hub_options(body))
    return JSONResponse(job.status_dict())


async def list_jobs(request: Request):
    return JSONResponse(listings.downloads(request.app.state.downloads))


async def job_status(request: Request):
    return JSONResponse(request.app.state.downloads.get(request.path_params["job_id"]).status_dict())


async def cancel_job(request: Request):
    return JSONResponse((await request.app.state.downloads.cancel(request.path_params["job_id"])).status_dict())


async def list_unreadable(request: Request):
    """The model files the catalog cannot read, with the reason (`lms ls` lists them beside the models)."""
    found = await asyncio.to_thread(catalog.unreadable)
    return JSONResponse([{**model.info(), "variantKey": model.model_key, "loadedInstances": 0} for model in found])


async def remove_model(request: Request):
    """Delete a model's files (one variant when a variant key is given). A loaded model is not removed."""
    body = await read_json(request)
    manager = request.app.state.manager
    entry = manager.resolve(str(body.get("model") or ""))
    whole_model = "@" not in str(body.get("model"))
    doomed = removal.entries_to_remove(entry, whole_model)
    loaded = [m.identifier for m in manager.loaded.values() if any(m.entry.path == e.path for e in doomed)]
    if loaded:
        raise LmsError.conflict(f"{entry.model_key} is loaded as {', '.join(loaded)}; unload it first (lms unload).",
                                code="model_loaded")
    return JSONResponse({"removed": removal.remove(entry, doomed), "modelKey": entry.model_key})


def routes() -> list[Route]:
    return [
        Route("/lms/hub/search", hub_search, methods=["POST"]),
        Route("/lms/hub/variants", hub_variants, methods=["POST"]),
        Route("/lms/downloads", start_job, methods=["POST"]),
        Route("/lms/downloads", list_jobs),
        Route("/lms/downloads/{job_id}", job_status),
        Route("/lms/downloads/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/lms/models/remove", remove_model, methods=["POST"]),
        Route("/lms/models/unreadable", list_unreadable),
    ]
