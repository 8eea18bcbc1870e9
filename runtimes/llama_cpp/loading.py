"""Loading a GGUF model and making a context for it, with llama.cpp's own load-progress callback."""

from __future__ import annotations

import contextlib

import llama_cpp
from llama_cpp._logger import set_verbose

from lms.errors import LmsError
from runtimes.common import Progress

set_verbose(False)  # llama.cpp's own log: errors only (workers.log would get every load's tensor list)


@contextlib.contextmanager
def reporting_progress(progress: Progress | None):
    """llama-cpp-python's `Llama` has no load-progress option; give llama.cpp's own callback to the model params it
    creates, for the duration of one load."""
    if progress is None:
        yield
        return
    library = llama_cpp.llama_cpp
    original = library.llama_model_default_params
    callback = library.llama_progress_callback(lambda value, _data: bool(progress(value)))

    def params_with_progress():
        params = original()
        params.progress_callback = callback
        return params

    library.llama_model_default_params = params_with_progress
    try:
        yield
    finally:
        library.llama_model_default_params = original


def load_model(path: str, progress: Progress | None = None, repack: bool = True):
    """The model's weights and vocabulary (llama-cpp-python's thin `LlamaModel` wrapper, freed with the process).
    `repack=False` keeps the weights as the file has them: the CPU backend's repacked layouts have one kernel for
    a single token and another for a batch, which sum in different orders."""
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = repack
    if progress is not None:
        callback = llama_cpp.llama_progress_callback(lambda value, _data: bool(progress(value)))
        params.progress_callback = callback
    try:
        return LlamaModel(path_model=path, params=params, verbose=False)
    except ValueError as exc:
        raise LmsError.internal(f"llama.cpp could not load {path}: {exc}", code="model_load_failed") from exc


KV_CACHE_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}
FLASH_ATTENTION = {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                   "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}


def new_context(model, n_ctx: int, n_seq: int, n_batch: int, threads: int, max_outputs: int = 0,
                kv_cache_type: str = "f16", flash_attention: str = "auto"):
    """A context of `n_seq` sequences, each in its own KV stream of `n_ctx` cells: every request may use the whole
    context, and a sequence's attention reads only its own cells (a shared pool makes each token attend over every
    sequence's cells, masked: about 7% slower at 4 streams here). KV memory is n_seq times one context, as in
    Ollama; flash attention is llama.cpp's automatic choice unless the load says (as in llama-server). K and V are
    stored as `kv_cache_type`; a quantized V cache needs flash attention, so it is turned on with one."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = n_ctx * n_seq, n_batch, n_batch
    params.n_seq_max, params.kv_unified = n_seq, False
    # Logits rows one step may ask for (a token per slot plus draft checks): the output buffer and the compute
    # buffers are sized for this, not for a whole batch of logits (50k floats a row).
    params.n_outputs_max = max_outputs or n_batch
    params.n_threads = params.n_threads_batch = threads
    params.type_k = params.type_v = KV_CACHE_TYPES[kv_cache_type]
    if kv_cache_type != "f16" and flash_attention == "off":
        raise LmsError.invalid(f"A {kv_cache_type} KV cache needs flash attention.", "flash_attention")
    params.flash_attn_type = FLASH_ATTENTION["on" if kv_cache_type != "f16" else flash_attention]
    params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model.model, params)
    if not ctx:
        raise LmsError.internal("llama.cpp could not create a context for the model", code="model_load_failed")
    return ctx
