"""How much memory a model needs loaded, from its GGUF metadata, before any of it is spent.

peak RSS of the worker ≈ process baseline + weights (the file, memory-mapped) + KV cache + compute buffers:
- KV cache: 2 (K and V) × layers × KV heads × head size × the bytes of one element of the cache type (f16: 2;
  q8_0: 34 per block of 32, about half; q4_0: 18 per block of 32, a quarter plus the block scales) per token of
  context, for each of the model's parallel slots (each slot has the whole context);
- prefix cache: finished sequences kept in host memory for reuse, at most one context's KV (filled as used);
- compute buffers: measured on llama.cpp's CPU backend at the default batch of 512 tokens, they grow with the
  vocabulary (the logits and output projection of a batch): about 12 MiB + 172 bytes per vocabulary entry
  (SmolLM2: 20 MiB, Gemma 3: 55 MiB); each token of batch above (or below) 512 adds (or saves) the activations of
  one token, about 4 bytes × (3 × feed-forward length + 6 × embedding length) (measured at batches of 64, 512 and
  2048: SmolLM2 32 KiB, Qwen2.5 0.5B 77 KiB a token). Without flash attention a step also holds its attention
  scores, 4 bytes × heads × context × batch tokens (SmolLM2 at 4k context, batch 2048: 288 MiB estimated, 248 MiB
  measured with a 3,800-token prompt).
The benchmark (`make bench`) prints this estimate against the measured peak RSS of real workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from lms.store.catalog import ModelEntry
from lms.store.gguf import GGUFHeader, cached_header

MiB = 1024 * 1024
WORKER_BASELINE = 46 * MiB  # Python, llama_cpp and numpy in a worker that holds no model
COMPUTE_BASE = 12 * MiB
COMPUTE_PER_VOCAB = 172  # bytes per vocabulary entry
COMPUTE_BATCH = 512  # the batch (n_batch = n_ubatch) the two figures above were measured at
COMPUTE_FLOOR = 4 * MiB
KV_ELEMENT_BYTES = 2  # f16
# bytes per element of each KV cache type llama.cpp offers here: q8_0 and q4_0 store blocks of 32 values with one
# f16 scale each (34 and 18 bytes a block)
KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@dataclass
class Estimate:
    model_key: str
    context_length: int
    gpu_ratio: float  # the share asked to go to a GPU; this machine has none, so it stays on the CPU
    model_bytes: int
    context_bytes: int
    compute_bytes: int
    baseline_bytes: int
    parallel: int = 1
    prefix_cache_bytes: int = 0
    kv_cache_type: str = "f16"

    @property
    def total_bytes(self) -> int:
        return self.model_bytes + self.context_bytes + self.compute_bytes + self.baseline_bytes + \
            self.prefix_cache_bytes

    def as_dict(self, available: int | None = None, passes: bool | None = None) -> dict:
        """LM Studio's EstimatedResourcesUsage shape, plus the parts it is made of."""
        result = {"model": self.model_key, "contextLength": self.context_length, "gpuRatio": self.gpu_ratio,
                  "parallel": self.parallel, "kvCacheType": self.kv_cache_type,
                  "gpu": "none (CPU only)",
                  "memory": {"confidence": "high", "modelVramBytes": 0, "contextVramBytes": 0, "totalVramBytes": 0,
                             "modelBytes": self.model_bytes,
                             "contextBytes": self.context_bytes + self.compute_bytes + self.prefix_cache_bytes,
                             "totalBytes": self.total_bytes},
                  "parts": {"weights": self.model_bytes, "kvCache": self.context_bytes,
                            "computeBuffers": self.compute_bytes, "process": self.baseline_bytes,
                            "prefixCache": self.prefix_cache_bytes}}
        if passes is not None:
            result["passesGuardrails"] = passes
        if available is not None:
            result["availableBytes"] = available
        return result


def kv_bytes_per_token(header: GGUFHeader, kv_cache_type: str = "f16") -> int:
    layers = int(header.arch_value("block_count", 0) or 0)
    heads = int(header.arch_value("attention.head_count", 1) or 1)
    kv_heads = header.arch_value("attention.head_count_kv", heads)
    element = KV_TYPE_BYTES[kv_cache_type]
    if isinstance(kv_heads, list):  # some architectures give one value per layer
        return round(sum(2 * int(n) * _head_size(header, heads) * element for n in kv_heads))
    return round(2 * layers * int(kv_heads) * _head_size(header, heads) * element)


def _head_size(header: GGUFHeader, heads: int) -> int:
    size = header.arch_value("attention.key_length")
    if size:
        return int(size)
    return int(header.arch_value("embedding_length", 0) or 0) // max(heads, 1)


def vocabulary_size(header: GGUFHeader) -> int:
    size = header.arch_value("vocab_size")
    if size:
        return int(size)
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    return int(getattr(tokens, "length", None) or len(tokens or []))


MLX_BASELINE = 140 * MiB  # mlx, mlx-lm and the tokenizer libraries in a worker
MLX_COMPUTE = 48 * MiB


def _mlx_estimate(entry: ModelEntry, context_length: int, gpu_ratio: float) -> Estimate:
    from lms.store.mlx_dirs import describe

    config = describe(entry.path)["config"]
    heads = int(config.get("num_attention_heads", 1))
    head_dim = int(config.get("head_dim") or int(config.get("hidden_size", 0)) // max(heads, 1))
    per_token = 2 * int(config.get("num_hidden_layers", 0)) * int(config.get("num_key_value_heads", heads)) \
        * head_dim * KV_ELEMENT_BYTES
    return Estimate(entry.model_key, context_length, gpu_ratio, entry.size_bytes, per_token * context_length,
                    MLX_COMPUTE, MLX_BASELINE)


def estimate(entry: ModelEntry, context_length: int, gpu_ratio: float = 0.0, parallel: int = 1,
             kv_cache_type: str = "f16", batch_size: int | None = None, flash_attention: str | None = None,
             header: GGUFHeader | None = None) -> Estimate:
    """The memory a load needs; the KV cache (and the prefix cache, which holds copies of it) in `kv_cache_type`,
    compute buffers for `batch_size` tokens a step, with or without flash attention ("off" adds the scores)."""
    if entry.format == "mlx":
        return _mlx_estimate(entry, context_length, gpu_ratio)
    header = header or cached_header(entry.path)
    if entry.type == "embedding":
        context = prefix_cache = 0
        compute = compute_bytes(header)
    else:
        prefix_cache = kv_bytes_per_token(header, kv_cache_type) * context_length
        context = prefix_cache * parallel
        compute = compute_bytes(header, batch_size or COMPUTE_BATCH, flash_attention != "off", context_length)
    return Estimate(entry.model_key, context_length, gpu_ratio, entry.size_bytes, context, compute, WORKER_BASELINE,
                    parallel, prefix_cache, kv_cache_type)


def compute_bytes(header: GGUFHeader, batch: int = COMPUTE_BATCH, flash_attention: bool = True,
                  context_length: int = 0) -> int:
    """llama.cpp's compute buffers for one decode step of `batch` tokens (see the module's notes)."""
    per_token = 4 * (3 * int(header.arch_value("feed_forward_length", 0) or 0)
                     + 6 * int(header.arch_value("embedding_length", 0) or 0))
    size = max(COMPUTE_BASE + COMPUTE_PER_VOCAB * vocabulary_size(header) + per_token * (batch - COMPUTE_BATCH),
               COMPUTE_FLOOR)
    if not flash_attention and context_length:
        heads = int(header.arch_value("attention.head_count", 1) or 1)
        size += 4 * heads * context_length * min(batch, context_length)
    return size


def largest_context(entry: ModelEntry, room: int, parallel: int = 1, kv_cache_type: str = "f16",
                    granularity: int = 256, batch_size: int | None = None, flash_attention: str | None = None) -> int:
    """The longest context (a multiple of `granularity` when above it, at most the model's maximum) whose estimate
    fits in `room` bytes; 0 when not even one token does. The estimate grows with the context, so a bisection
    finds it."""
    header = cached_header(entry.path) if entry.format != "mlx" else None

    def fits(n: int) -> bool:
        return estimate(entry, n, 0.0, parallel, kv_cache_type, batch_size, flash_attention, header).total_bytes \
            <= room

    if not fits(1):
        return 0
    if fits(entry.max_context_length):
        return entry.max_context_length
    low, high = 1, entry.max_context_length  # fits(low), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low - low % granularity if low > granularity else low


def available_memory(limit: int = 0) -> tuple[int, int]:
    """(available now, total) bytes of memory for models: the machine's, or `limit` when one is set."""
    import psutil

    memory = psutil.virtual_memory()
    if limit:
        return min(limit, memory.available), min(limit, memory.total)
    return memory.available, memory.total


def check(estimate_: Estimate, mode: str, limit: int = 0, loaded_bytes: int = 0,
          reserved_bytes: int = 0) -> tuple[bool, int]:
    """Guardrails: `strict` needs the memory available now; `relaxed` (the default) needs it to fit the
    machine's memory beside the models already loaded; `off` checks nothing. `reserved_bytes` is memory promised
    to loads still under way: not spent yet (nor seen as used by the system), but no longer room for this one.
    Returns (passes, room)."""
    available, total = available_memory(limit)
    if mode == "off":
        return True, available
    if mode == "strict":
        room = min(available, limit - loaded_bytes) if limit else available
    else:
        room = (limit or total) - loaded_bytes
    room -= reserved_bytes
    return estimate_.total_bytes <= room, room
