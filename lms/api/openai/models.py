"""GET /v1/models: with JIT loading on, every downloaded model (any of them can be asked for), else the loaded;
and the models of the upstream servers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from lms.errors import LmsError
from lms.store import catalog


def _ids(request: Request) -> list[str]:
    manager = request.app.state.manager
    ids = list(manager.loaded)
    if request.app.state.settings.jit_loading:
        ids += [entry.model_key for entry in catalog.models() if entry.model_key not in ids]
    # an upstream's models are served by their server: always available, whether JIT loading is on or not
    ids += [entry.model_key for entry in manager.upstreams.entries() if entry.model_key not in ids]
    return ids


async def list_models(request: Request):
    return JSONResponse({"object": "list", "data": [
        {"id": model_id, "object": "model", "owned_by": "organization_owner"} for model_id in _ids(request)
    ]})


async def get_model(request: Request):
    model_id = request.path_params["model"]
    if model_id not in _ids(request):
        raise LmsError.not_found(f"Model '{model_id}' not found.", "model", code="model_not_found")
    return JSONResponse({"id": model_id, "object": "model", "owned_by": "organization_owner"})
