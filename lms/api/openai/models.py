"""GET /v1/models: with JIT loading on, every downloaded model (any of them can be asked for), else the loaded;
and the models of the upstream servers. Beyond OpenAI's fields each entry says what clients otherwise guess:
the context length a request gets (the loaded one, else the model's maximum), the maximum, the capabilities and
whether it is loaded."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from lms.api.capabilities import capability_names
from lms.errors import LmsError
from lms.manager.models import LoadedModel
from lms.store import catalog
from lms.store.catalog import ModelEntry


def _entry(model_id: str, entry: ModelEntry, loaded: LoadedModel | None) -> dict:
    return {"id": model_id, "object": "model", "owned_by": "organization_owner", "type": entry.type,
            "context_length": loaded.context_length if loaded else entry.max_context_length,
            "max_context_length": entry.max_context_length, "capabilities": capability_names(entry),
            "loaded": loaded is not None}


def _listed(request: Request) -> dict[str, dict]:
    manager = request.app.state.manager
    listed = {model.identifier: _entry(model.identifier, model.entry, model) for model in manager.loaded.values()}
    by_key = {model.entry.model_key: model for model in manager.loaded.values()}
    entries = catalog.models() if request.app.state.settings.jit_loading else []
    # an upstream's models are served by their server: always available, whether JIT loading is on or not
    for entry in [*entries, *manager.upstreams.entries()]:
        if entry.model_key not in listed:
            listed[entry.model_key] = _entry(entry.model_key, entry, by_key.get(entry.model_key))
    return listed


async def list_models(request: Request):
    return JSONResponse({"object": "list", "data": list(_listed(request).values())})


async def get_model(request: Request):
    model_id = request.path_params["model"]
    found = _listed(request).get(model_id)
    if found is None:
        raise LmsError.not_found(f"Model '{model_id}' not found.", "model", code="model_not_found")
    return JSONResponse(found)
