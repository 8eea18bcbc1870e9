"""Images into a llama.cpp context through the multimodal library (mtmd) and a vision projector (mmproj).

The prompt text holds one marker per image; mtmd splits it into text and image chunks, the image chunks are
encoded by the projector and evaluated into the context, and decoding then goes on as for any prompt.
"""

from __future__ import annotations

import ctypes

import llama_cpp
from llama_cpp import mtmd_cpp

from lms.generation.request import IMAGE_MARKER

NOT_A_TOKEN = -1  # stands in the token history where image embeddings sit, so prefix reuse never matches them


class VisionError(Exception):
    pass


class Projector:
    def __init__(self, llm: llama_cpp.Llama, path: str, threads: int):
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = threads
        self.context = mtmd_cpp.mtmd_init_from_file(path.encode(), llm.model, params)
        if not self.context:
            raise VisionError(f"cannot load the vision projector {path}")
        if not mtmd_cpp.mtmd_support_vision(self.context):
            mtmd_cpp.mtmd_free(self.context)
            raise VisionError(f"{path} is not a vision projector")
        self.marker = mtmd_cpp.mtmd_default_marker().decode()
        llm._stack.callback(self.close)

    def close(self) -> None:
        if self.context:
            mtmd_cpp.mtmd_free(self.context)
            self.context = None

    def evaluate(self, llm: llama_cpp.Llama, text: str, images: list[bytes]) -> list[int]:
        """Evaluate a prompt with images into a fresh context; return the token history to sample after."""
        if text.count(IMAGE_MARKER) != len(images):
            raise VisionError(f"the prompt has {text.count(IMAGE_MARKER)} image places for {len(images)} images")
        bitmaps = []
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            for data in images:
                buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                bitmap = mtmd_cpp.mtmd_helper_bitmap_init_from_buf(self.context, buffer, len(data), False)
                if not bitmap:
                    raise VisionError("an image could not be decoded (supported: PNG, JPEG, BMP, GIF)")
                bitmaps.append(bitmap)
            encoded = text.replace(IMAGE_MARKER, self.marker).encode()
            prompt = mtmd_cpp.mtmd_input_text()
            prompt.text, prompt.text_len = encoded, len(encoded)
            prompt.add_special, prompt.parse_special = True, True
            array = (mtmd_cpp.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            if mtmd_cpp.mtmd_tokenize(self.context, chunks, ctypes.byref(prompt), array, len(bitmaps)) != 0:
                raise VisionError("the prompt with images could not be tokenized")
            count = mtmd_cpp.mtmd_input_chunks_size(chunks)
            total = sum(mtmd_cpp.mtmd_input_chunk_get_n_tokens(mtmd_cpp.mtmd_input_chunks_get(chunks, i))
                        for i in range(count))
            if total >= llm.n_ctx():
                raise VisionError(f"context:{total}")
            llm.reset()
            llm._ctx.kv_cache_clear()
            for index in range(count):
                self._evaluate_chunk(llm, mtmd_cpp.mtmd_input_chunks_get(chunks, index))
            return llm.input_ids[: llm.n_tokens].tolist()
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bitmap)

    def _evaluate_chunk(self, llm: llama_cpp.Llama, chunk) -> None:
        if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
            size = ctypes.c_size_t()
            tokens = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(size))
            llm.eval([tokens[i] for i in range(size.value)])
            return
        start = llm.n_tokens
        new_past = llama_cpp.llama_pos(0)
        result = mtmd_cpp.mtmd_helper_eval_chunk_single(self.context, llm._ctx.ctx, chunk, llama_cpp.llama_pos(start),
                                                        llama_cpp.llama_seq_id(0), llm.n_batch, False,
                                                        ctypes.byref(new_past))
        if result != 0:
            raise VisionError(f"encoding an image failed (error {result})")
        llm.n_tokens = new_past.value
        llm.input_ids[start: llm.n_tokens] = NOT_A_TOKEN
