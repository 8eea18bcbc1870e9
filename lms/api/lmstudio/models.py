"""What `llm` and `embedding` share: LM Studio's model and instance info, model specifiers resolved against the
loaded models of the namespace's domain, and the model-management endpoints (listLoaded, getModelInfo,
getLoadConfig, getOrLoad, loadModel, unloadModel)."""

from __future__ import annotations

import asyncio
import contextlib

from lms.api.auth import require_admin
from lms.api.lmstudio import frames
from lms.api.lmstudio.session import Channel, Namespace, Session
from lms.errors import Kind, LmsError
from lms.manager.models import LoadedModel, ModelManager
from lms.store import catalog
from lms.store.catalog import ModelEntry

SAMPLE = 5  # how many loaded or downloaded models an error lists
HEARTBEAT_SECONDS = 2.0  # loadProgress at least this often while a model loads (the sync SDK waits 60 s at most)


def manager_of(session: Session) -> ModelManager:
    return session.app_state.manager


def model_info(entry: ModelEntry) -> dict:
    """LM Studio's ModelInfo of a downloaded model."""
    return entry.info()


def instance_info(model: LoadedModel) -> dict:
    """LM Studio's ModelInstanceInfo of a loaded model."""
    info = model.entry.info()
    info.update({"identifier": model.identifier, "instanceReference": instance_reference(model),
                 "contextLength": model.context_length,
                 "ttlMs": model.ttl_seconds * 1000 if model.ttl_seconds else None, "lastUsedTime": model.last_used})
    return info


def instance_reference(model: LoadedModel) -> str:
    """Unique per load: a reference to an instance that was unloaded (and maybe loaded again) matches nothing."""
    return f"{model.identifier}@{model.worker.pid}"


DEFAULT_BATCH = 512  # the llama.cpp engine's tokens per decode step when the load does not say


def load_config(model: LoadedModel) -> dict:
    """The load config the instance runs with (what lms applies of LM Studio's load settings)."""
    fields: dict = {f"{model.entry.type}.load.contextLength": model.context_length}
    if model.entry.type == "llm":
        fields["llm.load.numParallelSessions"] = model.parallel
    # a llama.cpp chat model's settings, where the load chose other than llama.cpp's defaults
    if model.flash_attention in ("on", "off"):
        fields["llm.load.llama.flashAttention"] = model.flash_attention == "on"
    if model.batch_size and model.batch_size != DEFAULT_BATCH:
        fields["llm.load.llama.evalBatchSize"] = model.batch_size
    if model.kv_cache_type and model.kv_cache_type != "f16":
        for key in ("llm.load.llama.kCacheQuantizationType", "llm.load.llama.vCacheQuantizationType"):
            fields[key] = {"checked": True, "value": model.kv_cache_type}
    return frames.kv_config(fields)


def load_settings(domain: str, stack) -> dict:
    """The load settings lms applies from a load config stack, as the manager's keyword arguments: the context
    length and, for LLMs, the parallel sessions (slots). Others (GPU offload, mmap, RoPE, ...) are ignored: lms
    picks them itself."""
    fields = frames.collapse(stack)
    settings = {}
    for key, name in ((f"{domain}.load.contextLength", "context_length"), ("llm.load.numParallelSessions", "parallel")):
        value = fields.get(key)
        if value is None or (name == "parallel" and domain != "llm"):
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LmsError.invalid(f"'{key}' must be a positive integer.", key)
        settings[name] = value
    if domain == "llm":
        settings.update(_llama_settings(fields))
    return settings


def _llama_settings(fields: dict) -> dict:
    """LM Studio's llama.cpp load fields lms honours: flash attention, eval batch size, and the K and V cache
    quantization (`{"checked", "value"}`; lms stores K and V alike, so both given must agree)."""
    settings: dict = {}
    flash = fields.get("llm.load.llama.flashAttention")
    if isinstance(flash, bool):
        settings["flash_attention"] = "on" if flash else "off"
    batch = fields.get("llm.load.llama.evalBatchSize")
    if isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1:
        settings["batch_size"] = batch
    types = set()
    for key in ("llm.load.llama.kCacheQuantizationType", "llm.load.llama.vCacheQuantizationType"):
        value = fields.get(key)
        if isinstance(value, dict):
            value = value.get("value") if value.get("checked") else None
        if isinstance(value, str) and value:
            types.add(value.lower())
    if len(types) > 1:
        raise LmsError.invalid("lms keeps K and V caches of one type: give kCacheQuantizationType and "
                               "vCacheQuantizationType the same value.", "llm.load.llama.kCacheQuantizationType")
    if types:
        settings["kv_cache_type"] = types.pop()
    return settings


def loaded_in(manager: ModelManager, domain: str) -> list[LoadedModel]:
    return [model for model in manager.loaded.values() if model.entry.type == domain]


def _not_loaded(manager: ModelManager, domain: str, query: str) -> LmsError:
    loaded = [m.identifier for m in loaded_in(manager, domain)]
    what = f"matching '{query}'" if query else "at all"
    return frames.ProtocolError(
        f"No loaded {domain} model {what}. Loaded: {', '.join(loaded) or 'none'}.", Kind.NOT_FOUND,
        {"code": "generic.noModelMatchingQuery", "query": {"identifier": query} if query else {},
         "loadedModelsSample": loaded[:SAMPLE], "totalLoadedModels": len(loaded)}, code="model_not_found",
        param="modelSpecifier")


def find(manager: ModelManager, domain: str, specifier) -> LoadedModel | None:
    """The loaded model a ModelSpecifier names (an instance reference, or a query by identifier, key or path;
    an empty query is any loaded model of the domain)."""
    if not isinstance(specifier, dict):
        raise LmsError.invalid("A model specifier must be an object.", "specifier")
    candidates = loaded_in(manager, domain)
    if specifier.get("type") == "instanceReference":
        reference = specifier.get("instanceReference")
        return next((m for m in candidates if instance_reference(m) == reference), None)
    query = specifier.get("query") if isinstance(specifier.get("query"), dict) else {}
    wanted = query.get("identifier") or query.get("path")
    if not wanted:
        return candidates[0] if candidates else None
    model = manager.find_loaded(wanted)
    if model is None:
        model = next((m for m in candidates if m.entry.rel_path.lower() == str(wanted).lower()), None)
    return model if model is not None and model.entry.type == domain else None


def resolve_loaded(manager: ModelManager, domain: str, specifier) -> LoadedModel:
    model = find(manager, domain, specifier)
    if model is not None:
        return model
    if isinstance(specifier, dict) and specifier.get("type") == "instanceReference":
        raise frames.ProtocolError("The model instance this handle referred to has been unloaded.", Kind.NOT_FOUND,
                                   {"code": "generic.specificModelUnloaded"}, code="model_not_found")
    query = (specifier.get("query") or {}) if isinstance(specifier, dict) else {}
    raise _not_loaded(manager, domain, str(query.get("identifier") or query.get("path") or ""))


def resolve_entry(manager: ModelManager, domain: str, name: str) -> ModelEntry:
    """A downloaded model of this domain, in LM Studio's errors when there is none."""
    try:
        entry = manager.resolve(name)
    except LmsError as exc:
        if exc.code != "model_not_found":
            raise
        available = [e.model_key for e in catalog.scan()]
        raise frames.ProtocolError(exc.message, Kind.NOT_FOUND,
                                   {"code": "generic.pathNotFound", "path": name,
                                    "availablePathsSample": available[:SAMPLE], "totalModels": len(available)},
                                   code="model_not_found", param="modelKey") from exc
    if entry.type != domain:
        raise frames.ProtocolError(f"'{name}' is an {entry.type} model, not an {domain} model.", Kind.INVALID,
                                   {"code": "generic.domainMismatch", "path": name, "actualDomain": entry.type,
                                    "expectedDomain": domain}, code="model_not_supported", param="modelKey")
    return entry


def _text(parameter, key: str, required: bool = True) -> str | None:
    value = parameter.get(key) if isinstance(parameter, dict) else None
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise LmsError.invalid(f"'{key}' must be a non-empty string.", key)
    return value


def _ttl_seconds(milliseconds) -> int | None:
    if isinstance(milliseconds, (int, float)) and not isinstance(milliseconds, bool) and milliseconds > 0:
        return max(1, int(milliseconds // 1000))
    return None


async def _with_heartbeat(work, channel: Channel, progress: list[float], kind: str):
    """Await the work while telling the client its progress every few seconds."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_SECONDS)
            if done:
                return task.result()
            await channel.send({"type": kind, "progress": progress[0]})
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def management(domain: str) -> Namespace:
    """The model-management endpoints of one domain's namespace."""

    async def list_loaded(session: Session, _parameter) -> list[dict]:
        return [instance_info(m) for m in loaded_in(manager_of(session), domain)]

    async def get_model_info(session: Session, parameter) -> object:
        parameter = parameter if isinstance(parameter, dict) else {}
        model = find(manager_of(session), domain, parameter.get("specifier"))
        if model is None:
            if parameter.get("throwIfNotFound", True):
                resolve_loaded(manager_of(session), domain, parameter.get("specifier"))
            return frames.VOID
        return instance_info(model)

    async def get_load_config(session: Session, parameter) -> dict:
        specifier = parameter.get("specifier") if isinstance(parameter, dict) else None
        return load_config(resolve_loaded(manager_of(session), domain, specifier))

    async def unload_model(session: Session, parameter) -> object:
        identifier = _text(parameter, "identifier")
        require_admin(session.websocket.scope, "unloading a model")
        manager = manager_of(session)
        model = manager.loaded.get(identifier)
        if model is None or model.entry.type != domain:
            loaded = [m.identifier for m in loaded_in(manager, domain)]
            raise frames.ProtocolError(f"No loaded {domain} model has the identifier '{identifier}'.",
                                       Kind.NOT_FOUND,
                                       {"code": "generic.identifierNotFound", "identifier": identifier,
                                        "loadedModelsSample": loaded[:SAMPLE], "totalLoadedModels": len(loaded)},
                                       code="model_not_found", param="identifier")
        await manager.unload(identifier)
        return frames.VOID

    async def get_or_load(session: Session, channel: Channel, parameter) -> None:
        name = _text(parameter, "identifier")
        manager = manager_of(session)
        model = find(manager, domain, {"type": "query", "query": {"identifier": name}})
        if model is not None:
            await channel.send({"type": "alreadyLoaded", "info": instance_info(model)})
            return
        entry = resolve_entry(manager, domain, name)
        settings = load_settings(domain, parameter.get("loadConfigStack"))
        await channel.send({"type": "startLoading", "identifier": entry.model_key, "info": model_info(entry)})
        await channel.send({"type": "loadProgress", "progress": 0.0})
        model = await _with_heartbeat(
            # the stack's load settings; the model's load defaults give the rest
            session.app_state.pipeline.model(name, _ttl_seconds(parameter.get("loadTtlMs")),
                                             settings.pop("context_length", None), settings.pop("parallel", None),
                                             load_settings=settings),
            channel, [0.0], "loadProgress")
        await channel.send({"type": "loadProgress", "progress": 1.0})
        await channel.send({"type": "loadSuccess", "info": instance_info(model)})

    async def load_model(session: Session, channel: Channel, parameter) -> None:
        name = _text(parameter, "modelKey")
        require_admin(session.websocket.scope, "loading a model")
        manager = manager_of(session)
        entry = resolve_entry(manager, domain, name)
        settings = load_settings(domain, parameter.get("loadConfigStack"))
        await channel.send({"type": "resolved", "info": model_info(entry)})
        progress = [0.0]
        model = await _with_heartbeat(
            manager.load(entry.variant_key, identifier=_text(parameter, "identifier", required=False),
                         ttl=_ttl_seconds(parameter.get("ttlMs")), progress=lambda p: progress.__setitem__(0, p),
                         **settings),
            channel, progress, "progress")
        await channel.send({"type": "success", "info": instance_info(model)})

    return Namespace(domain,
                     rpcs={"listLoaded": list_loaded, "getModelInfo": get_model_info,
                           "getLoadConfig": get_load_config, "unloadModel": unload_model},
                     channels={"getOrLoad": get_or_load, "loadModel": load_model})
