"""Ollama's model routes: `/`, `/api/version`, `/api/tags`, `/api/show`, `/api/ps`."""

from __future__ import annotations

import asyncio
import hashlib
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from lms.api.capabilities import reasoning_options
from lms.api.http import read_json
from lms.api.ollama import names
from lms.api.ollama.schemas import NamedModelBody
from lms.api.ollama.wire import ollama_route, rfc3339
from lms.manager.models import LoadedModel
from lms.store.catalog import ModelEntry
from lms.store.gguf import GGUFError, cached_header
from lms.store.vocab import fill_in_the_middle_tokens

# The Ollama API version we follow. Clients compare it (GitHub Copilot needs at least 0.6.4).
API_VERSION = "0.12.10"


async def running(_request: Request):
    return PlainTextResponse("Ollama is running")


@ollama_route
async def version(_request: Request):
    return JSONResponse({"version": API_VERSION})


def _digest(entry: ModelEntry) -> str:
    """Stands in for Ollama's manifest digest: the same for the same file, without hashing gigabytes."""
    if entry.format == "upstream":
        return hashlib.sha256(entry.model_key.encode()).hexdigest()
    stat = entry.path.stat()
    return hashlib.sha256(f"{entry.path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()


def _modified(entry: ModelEntry) -> str:
    return rfc3339(time.time() if entry.format == "upstream" else entry.path.stat().st_mtime)


def details(entry: ModelEntry) -> dict:
    return {"parent_model": "", "format": "gguf" if entry.format == "gguf" else "safetensors",
            "family": entry.architecture, "families": [entry.architecture],
            "parameter_size": entry.params_string or "", "quantization_level": entry.quantization or ""}


def _listed(entry: ModelEntry) -> dict:
    name = names.name_of(entry)
    return {"name": name, "model": name, "modified_at": _modified(entry), "size": entry.size_bytes,
            "digest": _digest(entry), "details": details(entry)}


@ollama_route
async def tags(request: Request):
    entries = await asyncio.to_thread(request.app.state.manager.entries)
    return JSONResponse({"models": [_listed(entry) for entry in entries]})


def _fim(entry: ModelEntry) -> tuple[str, str, str] | None:
    return fill_in_the_middle_tokens(entry.path) if entry.format == "gguf" else None


def capabilities(entry: ModelEntry, fim: bool) -> list[str]:
    if entry.type == "embedding":
        return ["embedding"]
    found = ["completion"]
    if entry.trained_for_tool_use:
        found.append("tools")
    if fim:
        found.append("insert")
    if entry.vision:
        found.append("vision")
    if reasoning_options(entry):
        found.append("thinking")
    return found


def _model_info(entry: ModelEntry) -> dict:
    """The GGUF metadata Ollama shows: every scalar key (the long vocabulary arrays are left out, as Ollama does
    unless asked for `verbose`)."""
    info = {"general.architecture": entry.architecture, f"{entry.architecture}.context_length":
            entry.max_context_length}
    if entry.format == "gguf":
        try:
            header = cached_header(entry.path)
        except (OSError, GGUFError):
            return info
        info.update({key: value for key, value in header.metadata.items()
                     if not isinstance(value, list) and key != "tokenizer.chat_template"})
        info["general.parameter_count"] = header.param_count
    info.setdefault("general.basename", entry.display_name)
    return info


def _template(entry: ModelEntry, fim: tuple[str, str, str] | None) -> str:
    """The chat template (Jinja, as the model ships it). For a model with fill-in-the-middle tokens, a last line
    in Ollama's own notation says how a request with `suffix` is laid out (clients such as Continue look for
    `.Suffix` to offer autocomplete)."""
    template = entry.chat_template or ""
    if fim:
        prefix, suffix, middle = fim
        template += f"\n{{{{- if .Suffix }}}}{prefix}{{{{ .Prompt }}}}{suffix}{{{{ .Suffix }}}}{middle}{{{{ end }}}}"
    return template


@ollama_route
async def show(request: Request):
    body = NamedModelBody.model_validate(await read_json(request, any_type_outside_browsers=True))
    manager = request.app.state.manager
    name = body.model_name()
    entry = names.resolve(manager, name)
    loaded = manager.find_loaded(name)
    fim = await asyncio.to_thread(_fim, entry)
    context = loaded.context_length if loaded else entry.max_context_length if entry.type == "embedding" else min(
        request.app.state.settings.default_context_length, entry.max_context_length)
    parameters = f"num_ctx {context}"
    return JSONResponse({
        "license": "", "modelfile": f"# lms: {entry.rel_path}\nFROM {entry.path}\nPARAMETER {parameters}\n",
        "parameters": parameters, "template": _template(entry, fim), "details": details(entry),
        "model_info": await asyncio.to_thread(_model_info, entry), "capabilities": capabilities(entry, bool(fim)),
        "modified_at": _modified(entry),
    })


def _expires_at(model: LoadedModel) -> str:
    if not model.ttl_seconds:
        return "2318-08-24T00:00:00Z"  # loaded until unloaded: far in the future, as Ollama shows keep_alive -1
    idle_since = (model.last_used or int(time.time() * 1000)) / 1000
    start = time.time() if model.active else idle_since
    return rfc3339(start + model.ttl_seconds)


@ollama_route
async def ps(request: Request):
    models = []
    for model in list(request.app.state.manager.loaded.values()):
        name = names.loaded_name(model)
        models.append({"name": name, "model": name, "size": model.estimated_bytes or model.entry.size_bytes,
                       "digest": _digest(model.entry), "details": details(model.entry),
                       "expires_at": _expires_at(model), "size_vram": 0, "context_length": model.context_length})
    return JSONResponse({"models": models})
