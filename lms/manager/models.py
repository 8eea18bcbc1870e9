"""The model manager: which models are loaded, in which worker, and for how long.

API code asks it for a model by name and gets a handle; it never loads anything itself. JIT loads are
serialized per model key so concurrent first requests share one load instead of racing to load N copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lms import config
from lms.errors import LmsError
from lms.generation.finish import lmstudio_stop_reason
from lms.generation.request import DraftSpec, EmbeddingRequest, GenerationRequest
from lms.logs import LogBus
from lms.manager import cluster, load_defaults
from lms.manager.spare import SpareWorker
from lms.manager.worker import WorkerHandle, resident_bytes
from lms.settings import Settings
from lms.store import catalog, runtimes
from lms.store.catalog import ModelEntry
from lms.store.estimate import check, largest_context
from lms.store.estimate import estimate as memory_estimate
from lms.upstream.directory import UpstreamDirectory

log = logging.getLogger("lms.manager")

# How the manager starts a worker: (log file, called when it exits, folder first on its import path) -> handle.
# A handle has `pid`, `exit_detail`, `call(op, **payload)` (an async iterator of events), `request(op, **payload)`
# and `stop()`; tests pass a fake one.
SpawnWorker = Callable[[Path, Callable[[WorkerHandle], None], Path | None], Awaitable[WorkerHandle]]


UNSERVED_GRACE_SECONDS = 30  # an evicted JIT model whose request never came is unloaded after this long


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class LoadedModel:
    identifier: str
    entry: ModelEntry
    worker: WorkerHandle
    context_length: int
    ttl_seconds: int | None
    jit: bool
    last_used: int | None = None  # unix ms
    active: int = 0  # requests queued or running, including the current one
    status: str = "idle"
    load_seconds: float = 0.0
    evict_when_idle: bool = False  # auto-evicted while requests were in flight: unloaded after the last one
    served: bool = False  # has taken a request: a JIT model is loaded for one, so until then it counts as busy
    estimated_bytes: int = 0
    parallel: int = 1
    draft_model: str | None = None  # the speculative-decoding draft loaded with the model
    draft_max_tokens: int | None = None
    draft_min_probability: float | None = None
    speculative: str | None = None  # "ngram": prompt-lookup drafts when a request names no draft model
    kv_cache_type: str | None = None  # llama.cpp chat models: the K and V cache type (f16, q8_0, q4_0)
    flash_attention: str | None = None  # on, off or auto
    batch_size: int | None = None  # tokens per decode step (n_batch)
    prefix_cache_bytes: int = 0  # host memory held by finished sequences kept for prefix reuse (last reported)
    engine: dict = field(default_factory=dict)  # the engine and version this model runs on
    placement: cluster.Placement | None = None  # on the Ray cluster (the worker drives its replicas)
    context_note: str | None = None  # how a context length of "max" was chosen
    upstream: str | None = None  # served by this upstream server (lms upstream add), not by a local engine
    tasks: set = field(default_factory=set, repr=False)

    def ps_info(self) -> dict:
        info = self.entry.info()
        info.update({
            "identifier": self.identifier,
            "ttlMs": self.ttl_seconds * 1000 if self.ttl_seconds else None,
            # the TTL only runs while the model is idle
            "ttlRemainingMs": None if not self.ttl_seconds else self.ttl_seconds * 1000 if self.active else
            max(self.ttl_seconds * 1000 - (now_ms() - (self.last_used or now_ms())), 0),
            "lastUsedTime": self.last_used,
            "contextLength": self.context_length,
            "status": self.status,
            # requests waiting for one of the model's parallel slots
            "queued": max(self.active - self.parallel, 0),
            "slotsInUse": min(self.active, self.parallel),
            "memoryBytes": resident_bytes(self.worker.pid),  # the worker process's resident memory
            "parallel": self.parallel if self.entry.type == "llm" else None,
            "prefixCacheBytes": self.prefix_cache_bytes if self.entry.type == "llm" else None,
            "draftModel": self.draft_model,
            "speculative": self.speculative,
            "kvCacheType": self.kv_cache_type,
            "flashAttention": self.flash_attention,
            "batchSize": self.batch_size,
            "pid": self.worker.pid,
            "engine": self.engine,
            "location": "cluster" if self.placement else "upstream" if self.upstream else "local",
        })
        if self.context_note:
            info["contextLengthChosen"] = self.context_note
        if self.placement:
            info.update(self.placement.public())
        return info

    def expired(self, now: int) -> bool:
        if self.active:
            return False
        if self.evict_when_idle and not self.served:  # its request never came (the client left during the load)
            return now - (self.last_used or 0) >= UNSERVED_GRACE_SECONDS * 1000
        if not self.ttl_seconds:
            return False
        reference = self.last_used or 0
        return now - reference >= self.ttl_seconds * 1000


def _flash_attention(kv_cache_type: str, wanted: str | None) -> str:
    """llama.cpp reads a quantized V cache only with flash attention: such a cache turns it on."""
    return "on" if kv_cache_type != "f16" else wanted or "auto"


def local_bytes(planned: dict, where: cluster.Placement | None) -> int:
    """The memory of this machine a load takes: none when the model is placed on the cluster."""
    return 0 if where is not None else planned["memory"]["totalBytes"]


def runtime_for(entry: ModelEntry) -> str:
    """The engine a model's format needs; an MLX model without the MLX engine installed says how to get it."""
    if entry.format != "mlx":
        return "llama.cpp"
    if importlib.util.find_spec("mlx_lm") is None:
        raise LmsError.invalid(f"'{entry.model_key}' is an MLX model and the MLX engine is not installed: "
                               "pip install 'mlx[cpu]' mlx-lm (on Apple silicon: pip install mlx mlx-lm).", "model",
                               code="engine_not_installed")
    return "mlx"


def unreadable_error(model_key: str, rel_path: str, reason: str) -> LmsError:
    """A model whose file cannot be read is listed by `lms ls` but cannot load: a 400 that says why."""
    return LmsError.invalid(f"Model '{model_key}' cannot be loaded: its file {rel_path} is unreadable ({reason}). "
                            "Download it again or remove it.", "model", code="model_unreadable")


QUEUE_RETRY_AFTER_SECONDS = 2  # what a client turned away by a full queue is told to wait
UPSTREAM_SLOTS = 64  # requests lms sends an upstream at once; the upstream queues (or refuses) beyond its own


def _mib(count: int) -> str:
    return f"{count / (1024 * 1024):,.0f} MiB"


def prediction_stats(done: dict) -> dict:
    """LM Studio's LLMPredictionStats from an engine's done event."""
    stats, usage = done.get("stats") or {}, done.get("usage") or {}
    return {"stopReason": lmstudio_stop_reason(done.get("finish_reason")),
            "tokensPerSecond": stats.get("tokens_per_second"), "timeToFirstTokenSec": stats.get("time_to_first_token"),
            "totalTimeSec": stats.get("generation_time"), "promptTokensCount": usage.get("prompt_tokens"),
            "predictedTokensCount": usage.get("completion_tokens"), "totalTokensCount": usage.get("total_tokens"),
            **_draft_stats(stats)}


def _draft_stats(stats: dict) -> dict:
    """The speculative-decoding counters, under LM Studio's names, when a draft model ran."""
    if not stats.get("draft_model"):
        return {}
    return {"usedDraftModelKey": stats["draft_model"],
            **{name: stats.get(key) for key, name in (("total_draft_tokens_count", "totalDraftTokensCount"),
                                                      ("accepted_draft_tokens_count", "acceptedDraftTokensCount"),
                                                      ("rejected_draft_tokens_count", "rejectedDraftTokensCount"),
                                                      ("ignored_draft_tokens_count", "ignoredDraftTokensCount"))}}


class ModelManager:
    def __init__(self, settings: Settings, bus: LogBus | None = None, metrics=None,
                 spawn_worker: SpawnWorker | None = None):
        self.settings = settings
        self.bus = bus or LogBus()
        self.metrics = metrics
        self._spawn_worker: SpawnWorker = spawn_worker or WorkerHandle.spawn
        # a worker started ahead of the next load (not with a stand-in spawn: those are tests of this layer)
        self.spare = SpareWorker(self._spawn_worker, self._on_worker_exit,
                                 lambda: spawn_worker is None and self.settings.spare_worker)
        self.loaded: dict[str, LoadedModel] = {}
        # Memory promised to loads under way: the guardrail check of the next load counts it, so two loads
        # started at once cannot both pass a check only one of them fits in.
        self._reserved: dict[int, int] = {}
        self._reservations = itertools.count(1)
        self._loading: set[str] = set()  # identifiers of loads under way, taken like loaded ones
        self._locks: dict[str, asyncio.Lock] = {}
        self._reaper: asyncio.Task | None = None
        self.upstreams = UpstreamDirectory()
        self._upstream_refresher: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        """Started: requests can be served."""
        return self._reaper is not None

    def loading(self) -> list[str]:
        """The identifiers of the loads under way."""
        return sorted(self._loading)

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_expired())
        self._upstream_refresher = asyncio.create_task(self.upstreams.keep_fresh())
        self.spare.fill()

    # --- lookup -------------------------------------------------------------------------------------

    def find_loaded(self, name: str) -> LoadedModel | None:
        if name in self.loaded:
            return self.loaded[name]
        wanted = name.lower()
        for model in self.loaded.values():
            if wanted in (model.identifier.lower(), model.entry.model_key, model.entry.variant_key):
                return model
        return None

    def entries(self) -> list[ModelEntry]:
        """Every model a request may name: those on disk, then those of the upstream servers."""
        return catalog.scan() + self.upstreams.entries()

    def resolve(self, name: str) -> ModelEntry:
        if self.upstreams.owner(name) and (entry := self.upstreams.cached(name)):
            return entry
        try:
            return catalog.resolve(name)
        except catalog.ModelNotFound as exc:
            raise LmsError.not_found(
                f"Model '{name}' not found. Available models: {', '.join(exc.available) or 'none'}.", "model",
                code="model_not_found") from exc
        except catalog.AmbiguousModel as exc:
            raise LmsError.invalid(str(exc), "model", code="ambiguous_model") from exc
        except catalog.UnreadableModelError as exc:
            raise unreadable_error(exc.model.model_key, exc.model.rel_path, exc.model.error) from exc

    # --- load and unload ------------------------------------------------------------------------------

    def _new_identifier(self, entry: ModelEntry, wanted: str | None) -> str:
        if wanted:
            if wanted in self.loaded or wanted in self._loading:
                raise LmsError.conflict(f"A model with identifier '{wanted}' is already loaded.", "identifier",
                                        code="identifier_in_use")
            return wanted
        return self._numbered(entry.model_key)

    def _numbered(self, base: str) -> str:
        """`base`, or `base:2`, `base:3`... when instances hold it already."""
        identifier, n = base, 2
        while identifier in self.loaded or identifier in self._loading:
            identifier, n = f"{base}:{n}", n + 1
        return identifier

    def estimate(self, entry: ModelEntry, context_length: int | str | None = None, gpu_ratio: float | None = None,
                 parallel: int | None = None, kv_cache_type: str | None = None, defaults: bool = True,
                 batch_size: int | None = None, flash_attention: str | None = None) -> dict:
        """The memory estimate of loading `entry` (with the model's load defaults for what is not given), and
        whether the guardrails let it load. A context length of "max" is the longest that fits them."""
        given = load_defaults.of(entry.model_key) if defaults else {}
        if context_length is None:
            context_length = given.get("context_length")
        if gpu_ratio is None:
            gpu = given.get("gpu", 0.0)
            gpu_ratio = 1.0 if gpu == "max" else 0.0 if gpu == "off" else float(gpu)
        parallel = self._parallel(entry, parallel or given.get("parallel"))
        kv_cache_type = self._kv_cache_type(entry, kv_cache_type or given.get("kv_cache_type"))
        step = {"batch_size": batch_size or given.get("batch_size"),
                "flash_attention": _flash_attention(kv_cache_type, flash_attention or given.get("flash_attention"))}
        chosen_max = context_length == "max"
        if chosen_max:
            context_length = self._max_context(entry, parallel, kv_cache_type, **step)
        try:
            planned = memory_estimate(entry, self._context_length(entry, context_length), gpu_ratio, parallel,
                                      kv_cache_type, **step)
        except (OSError, ValueError) as exc:  # the file went bad (or away) since the catalog read it
            raise unreadable_error(entry.model_key, entry.rel_path, catalog.describe_failure(exc, entry.path,
                                                                                          entry.rel_path)) from exc
        passes, room = self._check(planned)
        result = {**planned.as_dict(room, passes), "guardrails": self.settings.guardrails}
        if chosen_max:
            result["contextLengthChosen"] = self._max_context_note(entry, planned.context_length)
        return result

    def _check(self, planned) -> tuple[bool, int]:
        return check(planned, self.settings.guardrails, self.settings.memory_limit_bytes,
                     sum(m.estimated_bytes for m in self.loaded.values()), sum(self._reserved.values()))

    def _max_context(self, entry: ModelEntry, parallel: int, kv_cache_type: str, batch_size: int | None = None,
                     flash_attention: str | None = None) -> int:
        """`--context-length max`: the model's maximum with guardrails off, else the longest context whose estimate
        fits the room the guardrails leave now."""
        if self.settings.guardrails == "off" or entry.type == "embedding":
            return entry.max_context_length
        try:
            _, room = self._check(memory_estimate(entry, 1, 0.0, parallel, kv_cache_type))
            fits = largest_context(entry, room, parallel, kv_cache_type, batch_size=batch_size,
                                   flash_attention=flash_attention)
        except (OSError, ValueError) as exc:
            raise unreadable_error(entry.model_key, entry.rel_path, catalog.describe_failure(exc, entry.path,
                                                                                          entry.rel_path)) from exc
        if fits < 1:
            raise LmsError.storage(f"{entry.model_key} does not fit in the memory the guardrails "
                                   f"({self.settings.guardrails}) leave, even with a 1-token context: unload a "
                                   "model or turn guardrails off.", "context_length", code="insufficient_memory")
        return fits

    def _max_context_note(self, entry: ModelEntry, context_length: int) -> str:
        if self.settings.guardrails == "off" or entry.type == "embedding":
            return f"context length max: {context_length} tokens, the model's maximum"
        why = "the model's maximum, which fits" if context_length >= entry.max_context_length else \
            "the largest that fits"
        return f"context length max: {context_length} tokens, {why} the memory guardrails ({self.settings.guardrails})"

    def _kv_cache_type(self, entry: ModelEntry, wanted: str | None) -> str:
        """The KV cache type of a load: quantized ones are for llama.cpp chat models."""
        if wanted in (None, "f16"):
            return "f16"
        if entry.type != "llm" or entry.format != "gguf":
            kind = "an MLX model" if entry.format == "mlx" else "an embedding model" if entry.type == "embedding" \
                else "this model"
            raise LmsError.invalid(f"A {wanted} KV cache is for llama.cpp (GGUF) chat models; {entry.model_key} is "
                                   f"{kind}. Leave kv_cache_type out (or f16).", "kv_cache_type",
                                   code="model_not_supported")
        return wanted

    def _parallel(self, entry: ModelEntry, wanted: int | None) -> int:
        """Slots of a model: MLX and embedding models serve one request at a time."""
        if entry.type != "llm" or entry.format == "mlx":
            return 1
        return wanted or self.settings.default_parallel

    def _llama_options(self, entry: ModelEntry, kv_cache_type: str, flash_attention: str | None,
                       batch_size: int | None) -> dict:
        """The engine options of a llama.cpp chat model's context; other engines refuse them (clearly)."""
        if entry.type != "llm" or entry.format != "gguf":
            for name, value in (("flash_attention", flash_attention), ("batch_size", batch_size)):
                if value is not None and not (name == "flash_attention" and value == "auto"):
                    raise LmsError.invalid(f"'{name}' is for llama.cpp (GGUF) chat models; {entry.model_key} is "
                                           f"{'an MLX' if entry.format == 'mlx' else 'an embedding'} model.", name,
                                           code="model_not_supported")
            return {}
        if kv_cache_type != "f16" and flash_attention == "off":
            raise LmsError.invalid(f"A {kv_cache_type} KV cache needs flash attention in llama.cpp (its quantized V "
                                   "cache is read by the flash-attention kernel only): use --flash-attention on or "
                                   "auto, or an f16 KV cache.", "flash_attention", code="invalid_load_settings")
        return {"kv_cache_type": kv_cache_type, "flash_attention": _flash_attention(kv_cache_type, flash_attention),
                **({"batch_size": batch_size} if batch_size else {})}

    def _draft(self, name: str, model_entry: ModelEntry, max_tokens: int | None) -> DraftSpec:
        """The worker's description of a draft model named by a load or a request."""
        if model_entry.format != "gguf":
            raise LmsError.invalid("Speculative decoding (draft_model) is available for llama.cpp (GGUF) models.",
                                   "draft_model", code="model_not_supported")
        try:
            entry = self.resolve(name)
        except LmsError as exc:
            raise LmsError.not_found(f"Draft model '{name}' was not found.", "draft_model",
                                     code="model_not_found") from exc
        if entry.type != "llm" or entry.format == "mlx":
            raise LmsError.invalid(f"Draft model '{name}' must be a GGUF text model.", "draft_model")
        return DraftSpec(path=str(entry.path), name=entry.model_key, max_tokens=max_tokens)

    def _context_length(self, entry: ModelEntry, wanted: int | None) -> int:
        if wanted is not None:
            if not isinstance(wanted, int) or isinstance(wanted, bool):
                raise LmsError.invalid("'context_length' must be a positive integer or max.", "context_length")
            if not 1 <= wanted <= entry.max_context_length:
                raise LmsError.invalid(f"A context length of {wanted} tokens is outside what {entry.model_key} "
                                       f"takes: 1 to {entry.max_context_length}.", "context_length")
            return wanted
        return entry.max_context_length if entry.type == "embedding" else min(
            self.settings.default_context_length, entry.max_context_length)

    async def load(self, name: str, *, identifier: str | None = None, context_length: int | str | None = None,
                   ttl: int | None = None, jit: bool = False, parallel: int | None = None,
                   draft_model: str | None = None, draft_max_tokens: int | None = None,
                   progress: Callable[[float], None] | None = None, replicas: int | None = None,
                   max_replicas: int | None = None, kv_cache_type: str | None = None,
                   flash_attention: str | None = None, batch_size: int | None = None,
                   draft_min_probability: float | None = None, gpu: str | float | None = None,
                   speculative: str | None = None) -> LoadedModel:
        """Load a model in a new worker (with `replicas`: on the Ray cluster, driven by that worker). What the
        load leaves out comes from the model's load defaults (`lms config model`), else the daemon's settings.
        `context_length="max"`: the longest context the guardrails let load. Cancelling this (a client that gives
        up) stops the load. An upstream's model is attached, not loaded."""
        if upstream_entry := await self.upstreams.find(name):
            return self._attach_upstream(upstream_entry, identifier)
        entry = self.resolve(name)
        given = load_defaults.LoadSettings(**load_defaults.of(entry.model_key))
        asked = load_defaults.checked({"context_length": context_length, "ttl": None if jit else ttl,
                                       "parallel": parallel,
                                       "draft_model": draft_model, "draft_max_tokens": draft_max_tokens,
                                       "kv_cache_type": kv_cache_type, "flash_attention": flash_attention,
                                       "batch_size": batch_size, "draft_min_probability": draft_min_probability,
                                       "gpu": gpu, "identifier": identifier, "speculative": speculative})
        options = {**given.given(), **asked.given()}  # the load's own settings win over the model's defaults
        where = cluster.placement(self.settings.cluster_address, replicas, max_replicas)
        runtime_for(entry)  # an engine that is not installed fails here, before anything starts
        parallel = self._parallel(entry, options.get("parallel"))
        kv_type = self._kv_cache_type(entry, options.get("kv_cache_type"))
        flash_attention = options.get("flash_attention")
        speculates = options.get("draft_model") or options.get("speculative") == "ngram"
        if speculates and flash_attention in (None, "auto") and kv_type == "f16" and entry.format == "gguf" \
                and entry.type == "llm":
            # llama.cpp's CPU flash attention sums a one-token step in another order than a batch: checking drafts
            # in a batch could then pick another token than decoding alone. Without it the text is exact.
            flash_attention = "off"
        engine_options = self._llama_options(entry, kv_type, flash_attention, options.get("batch_size"))
        if speculates and engine_options:
            engine_options["batch_invariant"] = True
        context_length = options.get("context_length")
        chosen_max = context_length == "max"
        step = {key: engine_options.get(key) for key in ("batch_size", "flash_attention")}
        if chosen_max:
            context_length = self._max_context(entry, parallel, kv_type, **step)
        context_length = self._context_length(entry, context_length)
        draft_max_tokens, min_probability = options.get("draft_max_tokens"), options.get("draft_min_probability")
        draft = self._draft(options["draft_model"], entry, draft_max_tokens) if options.get("draft_model") else None
        if min_probability is not None and entry.format == "gguf" and entry.type == "llm":
            engine_options["draft_min_probability"] = min_probability
        if options.get("speculative") == "ngram":
            if entry.format != "gguf" or entry.type != "llm":
                raise LmsError.invalid("Prompt-lookup speculation (speculative: ngram) is for llama.cpp (GGUF) chat "
                                       "models.", "speculative", code="model_not_supported")
            if draft is not None:
                raise LmsError.invalid("Name a draft model or speculative: ngram, not both.", "speculative",
                                       code="invalid_load_settings")
            engine_options["speculative"] = "ngram"
        planned = self.estimate(entry, context_length, parallel=parallel, kv_cache_type=kv_type, defaults=False,
                                **step)
        if where is None and not planned["passesGuardrails"]:  # a cluster model is held by the cluster's memory
            need, room = planned["memory"]["totalBytes"], planned["availableBytes"]
            raise LmsError.storage(
                f"Loading {entry.model_key} with a {context_length}-token context needs about {_mib(need)} of memory "
                f"but {_mib(max(room, 0))} is available ({_mib(need - room)} short, guardrails: "
                f"{self.settings.guardrails}). Use a shorter context (-c), unload a model, or turn guardrails off.",
                "context_length", code="insufficient_memory")
        if chosen_max:
            log.info("%s", self._max_context_note(entry, context_length))
        # No await between the check above and these reservations: the next load's check already counts them.
        # a model's default identifier is numbered like a model key when an instance holds it already
        identifier = self._new_identifier(entry, identifier) if identifier or not given.identifier else \
            self._numbered(given.identifier)
        ttl = options.get("ttl") if not jit else ttl
        reservation = next(self._reservations)
        self._reserved[reservation] = local_bytes(planned, where)
        self._loading.add(identifier)
        try:
            model = await self._start(entry, identifier, context_length, ttl, jit, parallel, draft, draft_max_tokens,
                                      planned, progress, where, engine_options)
            if chosen_max:
                model.context_note = self._max_context_note(entry, model.context_length)
            self.loaded[identifier] = model
        finally:
            del self._reserved[reservation]
            self._loading.discard(identifier)
        return model

    async def _start(self, entry: ModelEntry, identifier: str, context_length: int, ttl: int | None, jit: bool,
                     parallel: int, draft: DraftSpec | None, draft_max_tokens: int | None, planned: dict,
                     progress: Callable[[float], None] | None, where: cluster.Placement | None = None,
                     engine_options: dict | None = None) -> LoadedModel:
        """Start a worker and load the model in it; the worker is stopped again if that fails."""
        log.info("loading %s as %s (context %d)", entry.rel_path, identifier, context_length)
        started = time.perf_counter()
        runtime = runtime_for(entry)
        import_path = runtimes.import_path(runtimes.engine(runtime))
        worker = None if where else await self.spare.take(runtime, import_path)
        if worker is None:
            worker = await self._spawn_worker(config.logs_dir() / "workers.log", self._on_worker_exit, import_path)
        options = {"path": str(entry.path), "context_length": context_length,
                   "embedding": entry.type == "embedding", "threads": self.settings.threads,
                   "chat_template": entry.chat_template,
                   "projector": str(entry.projector) if entry.projector else None}
        if runtime == "llama.cpp" and entry.type == "llm":
            options.update(parallel=parallel, draft=asdict(draft) if draft else None,
                           host_cache_bytes=planned["parts"]["prefixCache"], **(engine_options or {}))
            if where is None:  # a cluster replica's disk is its node's
                options["disk_cache"] = {"dir": str(config.home() / "kv-cache"),
                                         "bytes": self.settings.kv_disk_cache_bytes}
        if where is not None:
            options = cluster.worker_options(where, identifier, runtime, options, parallel)
        loaded = None
        try:
            async for event in worker.call("load", runtime="cluster" if where else runtime, options=options):
                if event["type"] == "progress" and progress:
                    progress(event["progress"])
                elif event["type"] == "loaded":
                    loaded = event
        except LmsError as exc:
            await worker.stop()
            raise LmsError.internal(f"Failed to load model '{entry.model_key}': {exc.message}",
                                    code="model_load_failed") from exc
        except BaseException:
            await worker.stop()
            raise
        if loaded is None:
            await worker.stop()
            raise LmsError.internal(f"Failed to load model '{entry.model_key}'.", code="model_load_failed")
        model = LoadedModel(identifier=identifier, entry=entry, worker=worker,
                            context_length=loaded["info"]["context_length"], ttl_seconds=ttl, jit=jit,
                            last_used=now_ms(), load_seconds=time.perf_counter() - started,
                            estimated_bytes=local_bytes(planned, where), parallel=parallel,
                            draft_model=draft.name if draft else None, draft_max_tokens=draft_max_tokens,
                            draft_min_probability=(engine_options or {}).get("draft_min_probability"),
                            speculative=(engine_options or {}).get("speculative"),
                            kv_cache_type=(engine_options or {}).get("kv_cache_type"),
                            flash_attention=(engine_options or {}).get("flash_attention"),
                            batch_size=loaded["info"].get("batch_size") if engine_options else None,
                            engine={"name": runtime, "version": loaded["info"].get("engine_version")},
                            placement=where)
        if self.metrics is not None:
            self.metrics.load_seconds.labels(entry.model_key).observe(model.load_seconds)
        return model

    def _attach_upstream(self, entry: ModelEntry, identifier: str | None = None) -> LoadedModel:
        """An upstream model, ready to serve: nothing loads here, and it takes none of this machine's memory."""
        if identifier is None and (model := self.loaded.get(entry.model_key)) and model.upstream:
            return model
        identifier = self._new_identifier(entry, identifier)
        model = LoadedModel(identifier=identifier, entry=entry, worker=self.upstreams.worker(entry),
                            context_length=entry.max_context_length, ttl_seconds=None, jit=False,
                            last_used=now_ms(), parallel=UPSTREAM_SLOTS,
                            engine={"name": "upstream", "url": self.upstreams.upstreams()[entry.publisher].url},
                            upstream=entry.publisher)
        self.loaded[identifier] = model
        log.info("attached %s from upstream %s", identifier, entry.publisher)
        return model

    async def get_or_load(self, name: str | None, ttl: int | None = None, context_length: int | None = None,
                          parallel: int | None = None, progress: Callable[[float], None] | None = None,
                          load_settings: dict | None = None) -> LoadedModel:
        """The model a request names: loaded already (whatever its context length), or loaded now (JIT) with an
        idle TTL, and the context length and slots asked for, else the model's load defaults (lms config model),
        else the daemon's; `progress` hears 0..1 of such a load. Under auto-evict, the least recently used JIT models
        beyond `max_jit_models` - 1 go first."""
        if not name:
            if len(self.loaded) == 1:
                return next(iter(self.loaded.values()))
            raise LmsError.invalid("you must provide a model parameter", "model", code="missing_required_parameter")
        if model := self.find_loaded(name):
            return model
        if upstream_entry := await self.upstreams.find(name):  # served by its server: no JIT load, no eviction
            return self._attach_upstream(upstream_entry)
        if not self.settings.jit_loading:
            raise LmsError.not_found(
                f"Model '{name}' is not loaded. Loaded models: {', '.join(self.loaded) or 'none'}.", "model",
                code="model_not_found")
        entry = self.resolve(name)
        lock = self._locks.setdefault(entry.model_key, asyncio.Lock())
        async with lock:
            if model := self.find_loaded(entry.model_key) or self.find_loaded(name):
                return model
            if self.settings.jit_auto_evict:
                await self._evict_jit_models(self.settings.max_jit_models - 1)
            # the request's TTL, else the model's load default, else the JIT default (0: none)
            ttl = ttl or load_defaults.of(entry.model_key).get("ttl") or self.settings.jit_ttl_seconds or None
            # Shielded: a client that disconnects must not abort a load other requests may be waiting for.
            model = await asyncio.shield(self.load(entry.variant_key, ttl=ttl, jit=True, progress=progress,
                                                   context_length=context_length, parallel=parallel,
                                                   **(load_settings or {})))
            if self.settings.jit_auto_evict:  # JIT loads of other models may have run alongside this one
                await self._evict_jit_models(self.settings.max_jit_models)
            return model

    async def _evict_jit_models(self, keep: int = 0) -> None:
        """Auto-evict (LM Studio's "only keep last JIT loaded model", with `max_jit_models` N): before a new JIT
        load the JIT-loaded models beyond the N - 1 most recently used go (after it, beyond the N: loads that ran
        alongside); one that is serving requests, or has yet to take the request it was loaded for, goes when its
        last request ends. Explicit loads always stay."""
        staying = sorted((m for m in self.loaded.values() if m.jit and not m.evict_when_idle),
                         key=lambda m: m.last_used or 0)
        for model in staying[:max(len(staying) - keep, 0)]:
            if model.active or not model.served:
                model.evict_when_idle = True
                log.info("auto-evict: %s goes when its %d request(s) end", model.identifier, model.active)
            else:
                log.info("auto-evict: unloading %s for a new JIT load", model.identifier)
                with contextlib.suppress(LmsError):
                    await self.unload(model.identifier)

    async def unload(self, identifier: str) -> LoadedModel:
        model = self.loaded.pop(identifier, None)
        if model is None:
            raise LmsError.not_found(f"No loaded model has the identifier '{identifier}'.", "identifier",
                                     code="model_not_found")
        log.info("unloading %s", identifier)
        await model.worker.stop()
        return model

    async def unload_all(self) -> list[str]:
        identifiers = list(self.loaded)
        for identifier in identifiers:
            await self.unload(identifier)
        return identifiers

    async def _unload_quietly(self, identifier: str) -> None:
        with contextlib.suppress(LmsError):
            await self.unload(identifier)

    def _on_worker_exit(self, worker: WorkerHandle) -> None:
        for identifier, model in list(self.loaded.items()):
            if model.worker is worker:
                log.error("worker of %s (pid %d) stopped: %s", identifier, worker.pid, worker.exit_detail)
                del self.loaded[identifier]

    async def _reap_expired(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.unload_expired(now_ms())

    async def unload_expired(self, now: int) -> list[str]:
        """Unload the models whose idle TTL has run out at `now` (unix ms), and evicted JIT models whose request
        never came; returns their identifiers."""
        expired = [m for m in self.loaded.values() if m.expired(now)]
        for model in expired:
            if model.evict_when_idle and not model.served:
                log.info("auto-evict: unloading %s, loaded for a request that never came", model.identifier)
            else:
                log.info("TTL of %s expired after %ss idle", model.identifier, model.ttl_seconds)
            with contextlib.suppress(LmsError):
                await self.unload(model.identifier)
        return [m.identifier for m in expired]

    async def close(self) -> None:
        for task in (self._reaper, self._upstream_refresher):
            if task:
                task.cancel()
        await self.unload_all()
        await self.spare.close()
        await self.upstreams.close()

    # --- work -----------------------------------------------------------------------------------------

    def _admit(self, model: LoadedModel) -> None:
        """The bounded queue of a model: beyond its parallel slots at most `max_queued_requests` wait; the next
        is turned away at once with a 503 and Retry-After rather than piling up memory and latency."""
        waiting = model.active - model.parallel
        limit = self.settings.max_queued_requests
        if waiting >= limit:
            raise LmsError.unavailable(
                f"'{model.identifier}' is busy: its {model.parallel} slot(s) are in use and {max(waiting, 0)} "
                f"request(s) are queued (max_queued_requests: {limit}). Retry later.", "model",
                code="queue_full", retry_after=QUEUE_RETRY_AFTER_SECONDS)

    @contextlib.asynccontextmanager
    async def _busy(self, model: LoadedModel, status: str):
        self._admit(model)
        model.active += 1
        model.served = True
        model.status = status if model.active == 1 else model.status
        model.last_used = now_ms()
        try:
            yield
        finally:
            model.active -= 1
            model.last_used = now_ms()
            if model.active == 0:
                model.status = "idle"
                if model.evict_when_idle and self.loaded.get(model.identifier) is model:
                    task = asyncio.create_task(self._unload_quietly(model.identifier))
                    model.tasks.add(task)
                    task.add_done_callback(model.tasks.discard)

    async def generate(self, model: LoadedModel, request: GenerationRequest) -> AsyncIterator[dict]:
        """Run one request on the model's worker and yield its events (lms/generation/request.py). The manager
        fills in the resolved draft model and whether the engine echoes the templated prompt (for the log bus)."""
        if model.entry.type != "llm":
            raise LmsError.invalid(f"'{model.identifier}' is an embedding model and cannot generate text.", "model",
                                   code="model_not_supported")
        bus = self.bus
        draft = self._draft(request.draft_model, model.entry, model.draft_max_tokens) if request.draft_model else None
        request = replace(request, draft=draft, echo_prompt=bus.wants("llm.prediction.input"))
        texts: list[str] | None = [] if bus.wants("llm.prediction.output") else None
        async with self._busy(model, "processingPrompt"):
            async for event in model.worker.call("generate", request=request.to_dict()):
                kind = event["type"]
                if kind == "prompt":
                    model.status = "generating"
                    if "prompt_text" in event:
                        bus.publish({"type": "llm.prediction.input", "input": event.pop("prompt_text"),
                                     "modelPath": model.entry.rel_path, "modelIdentifier": model.identifier})
                elif kind == "text" and texts is not None:
                    texts.append(event["text"])
                if kind == "done" and "prefix_cache_bytes" in event:
                    model.prefix_cache_bytes = event.pop("prefix_cache_bytes")
                if kind == "done" and self.metrics is not None:
                    self.metrics.generation_done(model.identifier, event)
                if kind == "done" and texts is not None:
                    bus.publish({"type": "llm.prediction.output", "output": "".join(texts),
                                 "modelIdentifier": model.identifier,
                                 "stats": prediction_stats(event)})
                yield event

    async def count_tokens(self, model: LoadedModel, request: GenerationRequest) -> int:
        """Prompt tokens of a chat request (its template, tools and images), as its generation would report them."""
        return (await model.worker.request("count", request=request.to_dict()))["prompt_tokens"]

    async def tokenize(self, model: LoadedModel, text: str, add_special: bool | None = None,
                       with_pieces: bool = False) -> dict:
        """{"tokens": [id]} of raw text under the model's tokenizer (no chat template; BOS as for a prompt unless
        `add_special` says), with {"pieces"} when asked."""
        options = {"add_special": add_special} if add_special is not None else {}
        if with_pieces:
            options["with_pieces"] = True
        async with self._busy(model, "processingPrompt"):
            return await model.worker.request("tokenize", text=text, **options)

    async def detokenize(self, model: LoadedModel, tokens: list[int]) -> str:
        """The text of token ids under the model's tokenizer (special tokens as their text)."""
        async with self._busy(model, "processingPrompt"):
            return (await model.worker.request("detokenize", tokens=tokens))["content"]

    async def render_prompt(self, model: LoadedModel, messages: list[dict], tools: list[dict] | None = None,
                            template_options: dict | None = None) -> str:
        """The messages under the model's chat template, as the text a generation would start from (the start of
        the assistant's turn included), without generating."""
        if model.entry.type != "llm":
            raise LmsError.invalid(f"'{model.identifier}' is an embedding model: it has no chat template.", "model",
                                   code="model_not_supported")
        request = GenerationRequest(messages=messages, tools=tools, template_options=template_options or {})
        async with self._busy(model, "processingPrompt"):
            return (await model.worker.request("render_prompt", request=request.to_dict()))["text"]

    async def embed(self, model: LoadedModel, inputs: list[str], truncate: bool = False) -> dict:
        if model.entry.type != "embedding" and not model.upstream:  # an upstream's list may not tell the type
            raise LmsError.invalid(f"'{model.identifier}' is not an embedding model.", "model",
                                   code="model_not_supported")
        async with self._busy(model, "computingEmbedding"):
            return await model.worker.request("embed", request=EmbeddingRequest(inputs, truncate).to_dict())
