"""LM Studio's native model endpoints: `/api/v0/models[/{model}]` and `/api/v1/models`, `/load`, `/unload`."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from lms.api.capabilities import description, reasoning_options
from lms.api.http import read_json
from lms.errors import LmsError
from lms.store.catalog import ModelEntry, quant_bits


def _instances(request: Request, entry: ModelEntry) -> list:
    return [m for m in request.app.state.manager.loaded.values() if m.entry.path == entry.path]


def _v0_model(request: Request, entry: ModelEntry) -> dict:
    loaded = _instances(request, entry)
    kind = "embeddings" if entry.type == "embedding" else "vlm" if entry.vision else "llm"
    model = {"id": entry.model_key, "object": "model", "type": kind, "publisher": entry.publisher,
             "arch": entry.architecture,
             "compatibility_type": entry.format, "quantization": entry.quantization,
             "state": "loaded" if loaded else "not-loaded", "max_context_length": entry.max_context_length,
             "capabilities": ["tool_use"] if entry.trained_for_tool_use else []}
    if loaded:
        model["loaded_context_length"] = loaded[0].context_length
    return model


def _selected(entries: list[ModelEntry]) -> list[ModelEntry]:
    return [e for e in entries if e.selected_variant in (None, e.variant_key)]


async def v0_models(request: Request):
    entries = request.app.state.manager.entries()
    return JSONResponse({"object": "list", "data": [_v0_model(request, e) for e in _selected(entries)]})


async def v0_model(request: Request):
    name = request.path_params["model"]
    entry = request.app.state.manager.resolve(name)
    return JSONResponse(_v0_model(request, entry))


def instance_config(model) -> dict:
    """A loaded instance's load settings, under LM Studio's names (and lms's for what LM Studio has none of)."""
    return {"context_length": model.context_length, "parallel": model.parallel, "eval_batch_size": model.batch_size,
            "batch_size": model.batch_size, "flash_attention": model.flash_attention not in (None, "off"),
            "kv_cache_type": model.kv_cache_type, "ttl": model.ttl_seconds, "identifier": model.identifier,
            "draft_model": model.draft_model, "draft_max_tokens": model.draft_max_tokens,
            "draft_min_probability": model.draft_min_probability, "speculative": model.speculative}


def _v1_model(request: Request, entry: ModelEntry, variants: list[ModelEntry]) -> dict:
    model = {"type": entry.type, "publisher": entry.publisher, "key": entry.model_key,
             "display_name": entry.display_name,
             "quantization": {"name": entry.quantization, "bits_per_weight": quant_bits(entry.quantization)},
             "size_bytes": entry.size_bytes, "params_string": entry.params_string,
             "loaded_instances": [{"id": m.identifier, "config": instance_config(m)}
                                  for m in _instances(request, entry)],
             "max_context_length": entry.max_context_length, "format": entry.format}
    if entry.type == "llm":
        model["architecture"] = entry.architecture
        model["capabilities"] = {"vision": entry.vision, "trained_for_tool_use": entry.trained_for_tool_use}
        if reasoning := reasoning_options(entry):
            model["capabilities"]["reasoning"] = reasoning
        model["description"] = description(entry)
    if len(variants) > 1:
        model["variants"] = [v.variant_key for v in variants]
        model["selected_variant"] = entry.variant_key
    return model


async def v1_models(request: Request):
    entries = request.app.state.manager.entries()
    return JSONResponse({"models": [_v1_model(request, e, [v for v in entries if v.model_key == e.model_key])
                                    for e in _selected(entries)]})


# the load settings /api/v1/models/load takes besides LM Studio's own (context_length, eval_batch_size,
# flash_attention): the same as `lms load`'s, checked by the manager
V1_LOAD_SETTINGS = ("parallel", "ttl", "identifier", "kv_cache_type", "batch_size", "draft_model", "draft_max_tokens",
                    "draft_min_probability", "speculative")


def _v1_load_settings(body: dict) -> dict:
    """The manager's load keywords from a v1 load body; a setting left out is the model's load default."""
    settings = {name: body[name] for name in V1_LOAD_SETTINGS if body.get(name) is not None}
    if body.get("context_length") is not None:
        settings["context_length"] = body["context_length"]
    if body.get("eval_batch_size") is not None:  # LM Studio's name
        settings.setdefault("batch_size", body["eval_batch_size"])
    flash = body.get("flash_attention")
    if flash is not None:  # LM Studio's is a boolean; on, off or auto are taken too
        settings["flash_attention"] = ("on" if flash else "off") if isinstance(flash, bool) else flash
    return settings


async def v1_load(request: Request):
    body = await read_json(request)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise LmsError.invalid("'model' is required", "model", code="missing_required_parameter")
    for field in ("replicas", "max_replicas"):
        value = body.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise LmsError.invalid(f"'{field}' must be a positive integer", field)
    started = time.perf_counter()
    model = await request.app.state.manager.load(body["model"], replicas=body.get("replicas"),
                                                 max_replicas=body.get("max_replicas"), **_v1_load_settings(body))
    result = {"type": model.entry.type, "instance_id": model.identifier,
              "load_time_seconds": round(time.perf_counter() - started, 3), "status": "loaded"}
    if body.get("echo_load_config"):  # the context length, and what else the load set, as the model runs it
        config = instance_config(model)
        result["load_config"] = {key: value for key, value in config.items() if key == "context_length" or key in body}
    if model.context_note:
        result["context_length_chosen"] = model.context_note
    return JSONResponse(result)


async def v1_unload(request: Request):
    body = await read_json(request)
    if not isinstance(body.get("instance_id"), str):
        raise LmsError.invalid("'instance_id' is required", "instance_id", code="missing_required_parameter")
    await request.app.state.manager.unload(body["instance_id"])
    return JSONResponse({"instance_id": body["instance_id"]})
