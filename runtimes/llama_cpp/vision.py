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
    def __init__(self, model, path: str, threads: int):
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = threads
        self.context = mtmd_cpp.mtmd_init_from_file(path.encode(), model, params)
        if not self.context:
            raise VisionError(f"cannot load the vision projector {path}")
        if not mtmd_cpp.mtmd_support_vision(self.context):
            mtmd_cpp.mtmd_free(self.context)
            raise VisionError(f"{path} is not a vision projector")
        self.marker = mtmd_cpp.mtmd_default_marker().decode()

    def close(self) -> None:
        if self.context:
            mtmd_cpp.mtmd_free(self.context)
            self.context = None

    def evaluate(self, ctx, seq: int, n_ctx: int, n_batch: int, text: str, images: list[bytes],
                 decode_text) -> list[int]:
        """Evaluate a prompt with images into an empty sequence; return its token history (image positions hold
        NOT_A_TOKEN). `decode_text(tokens, position)` evaluates a run of text tokens into the same sequence."""
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
            if total >= n_ctx:
                raise VisionError(f"context:{total}")
            history: list[int] = []
            for index in range(count):
                chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, index)
                if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    size = ctypes.c_size_t()
                    tokens = mtmd_cpp.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(size))
                    run = [tokens[i] for i in range(size.value)]
                    decode_text(run, len(history))
                    history += run
                    continue
                new_past = llama_cpp.llama_pos(0)
                result = mtmd_cpp.mtmd_helper_eval_chunk_single(
                    self.context, ctx, chunk, llama_cpp.llama_pos(len(history)), llama_cpp.llama_seq_id(seq),
                    n_batch, False, ctypes.byref(new_past))
                if result != 0:
                    raise VisionError(f"encoding an image failed (error {result})")
                history += [NOT_A_TOKEN] * (new_past.value - len(history))
            if not history or history[-1] == NOT_A_TOKEN:
                raise VisionError("the prompt must end with text after its images")
            return history
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bitmap)
