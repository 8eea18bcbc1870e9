"""Ollama's model management: `/api/pull` (onto our downloads), `/api/delete`, `/api/copy`, `/api/create` (from an
uploaded GGUF blob or from a local model), `HEAD`/`POST /api/blobs/:digest`, and `/api/push` (not supported)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lms import config, presets
from lms.api.http import read_json
from lms.api.ollama import library, names
from lms.api.ollama.schemas import CopyBody, NamedModelBody, OllamaBody
from lms.api.ollama.wire import error, ndjson, ollama_route
from lms.errors import LmsError
from lms.store import catalog, removal
from lms.store.downloads import ACTIVE, Job
from lms.store.get import download

PROGRESS_SECONDS = 0.5


class PullBody(OllamaBody):
    model: str | None = None
    name: str | None = None  # the older clients' field
    insecure: bool = False
    stream: bool = True


class CreateBody(OllamaBody):
    model: str | None = None
    name: str | None = None
    from_: str | None = Field(None, alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict | None = None
    quantize: str | None = None
    stream: bool = True


def _required(*values: str | None) -> str:
    for value in values:
        if value:
            return value
    raise LmsError.missing("model", "model is required")


def _hub_reference(name: str) -> tuple[str, str | None]:
    """The Hub repository and variant an Ollama name pulls: `hf.co/Owner/Repo-GGUF:Q4_K_M`, `owner/repo:q8_0`."""
    bare = names.HUB_PREFIX.sub("", name.strip())
    repo, tag = bare.rsplit(":", 1) if ":" in bare else (bare, "latest")
    if repo.count("/") != 1:
        raise LmsError.invalid(f"'{name}' does not name a Hugging Face repository: pull hf.co/{{owner}}/{{repo}}"
                               "[:quantization] (the Ollama library is not reachable from lms).", "model",
                               code="invalid_model_name")
    return repo, None if tag.lower() == "latest" else tag


async def _progress(job: Job):
    yield {"status": "pulling manifest"}
    digest = "sha256:" + hashlib.sha256(f"{job.repo_id}@{job.variant}".encode()).hexdigest()
    while job.status in ACTIVE:
        yield {"status": f"pulling {job.variant}", "digest": digest, "total": job.total_bytes,
               "completed": job.downloaded_bytes}
        await asyncio.sleep(PROGRESS_SECONDS)
    job.raise_if_failed()
    yield {"status": f"pulling {job.variant}", "digest": digest, "total": job.total_bytes,
           "completed": job.total_bytes}
    for status in ("verifying sha256 digest", "writing manifest", "success"):
        yield {"status": status}


@ollama_route
async def pull(request: Request):
    body = PullBody.model_validate(await read_json(request, any_type_outside_browsers=True))
    repo, quantization = _hub_reference(_required(body.model, body.name))
    job = await download(request.app.state.downloads, repo, quantization=quantization)
    if body.stream:
        return ndjson(_progress(job))
    statuses = [status async for status in _progress(job)]
    return JSONResponse(statuses[-1])


@ollama_route
async def push(_request: Request):
    return error("lms does not push models to a registry; share the GGUF file or its Hugging Face repository.", 501)


@ollama_route
async def delete(request: Request):
    body = NamedModelBody.model_validate(await read_json(request, any_type_outside_browsers=True))
    manager = request.app.state.manager
    entry = names.resolve(manager, body.model_name())
    doomed = removal.entries_to_remove(entry, whole_model=False)
    for model in [m for m in manager.loaded.values() if any(m.entry.path == e.path for e in doomed)]:
        with contextlib.suppress(LmsError):  # as in Ollama, a deleted model does not stay loaded
            await manager.unload(model.identifier)
    await asyncio.to_thread(removal.remove, entry, doomed)
    library.forget(entry.model_key)
    return Response(status_code=200)


@ollama_route
async def copy(request: Request):
    body = CopyBody.model_validate(await read_json(request, any_type_outside_browsers=True))
    entry = names.resolve(request.app.state.manager, body.source)
    await asyncio.to_thread(library.copy_model, entry, body.destination)
    copied = _entry_named(body.destination)
    preset, template = library.carried(entry.model_key)
    if preset:
        carried = presets.load(preset)
        library.save_carried(copied.model_key, carried.system_prompt, carried.sampling, template)
    return Response(status_code=200)


def _entry_named(name: str):
    publisher, repo = library.folder_for(name)
    folder = config.models_dir() / publisher / repo
    found = [entry for entry in catalog.scan() if entry.path.parent == folder or entry.path == folder]
    if not found:
        raise LmsError.invalid(f"'{name}' holds no model lms can read.", "model", code="invalid_model")
    return found[0]


@ollama_route
async def create(request: Request):
    body = CreateBody.model_validate(await read_json(request, any_type_outside_browsers=True))
    name = _required(body.model, body.name)
    if body.quantize:
        raise LmsError.invalid("lms does not quantize models; pull the quantization you want "
                               "(hf.co/{owner}/{repo}:{quantization}).", "quantize", code="unsupported_parameter")
    if body.adapters:
        raise LmsError.invalid("LoRA adapters are not supported.", "adapters", code="unsupported_parameter")
    statuses = []
    if body.files:
        models = [(filename, digest) for filename, digest in body.files.items() if filename.lower().endswith(".gguf")]
        if len(models) != 1:
            raise LmsError.invalid("files must hold exactly one .gguf model file.", "files")
        for filename, digest in models:
            await asyncio.to_thread(library.model_from_blob, name, filename, digest)
            statuses.append({"status": f"using existing layer {digest}"})
    elif body.from_:
        source = names.resolve(request.app.state.manager, body.from_)
        await asyncio.to_thread(library.copy_model, source, name)
        statuses.append({"status": f"using existing model {names.name_of(source)}"})
    else:
        raise LmsError.invalid("create needs files (an uploaded GGUF blob) or from (a local model).", "from")
    entry = _entry_named(name)
    if body.system or body.parameters or body.template:
        library.save_carried(entry.model_key, body.system, body.parameters, body.template)
        statuses.append({"status": "creating preset with system prompt and parameters"})
    statuses += [{"status": "writing manifest"}, {"status": "success"}]

    async def replay():
        for status in statuses:
            yield status

    return ndjson(replay()) if body.stream else JSONResponse(statuses[-1])


@ollama_route
async def blob(request: Request):
    digest = request.path_params["digest"]
    if request.method == "HEAD":
        return Response(status_code=200 if library.blob_path(digest).is_file() else 404)
    created = await library.save_blob(digest, request.stream())
    return Response(status_code=201 if created else 200)
