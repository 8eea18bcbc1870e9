"""A small reader of GGUF headers: the key/value metadata and tensor shapes, never the weights.

The catalog needs architecture, context length, chat template and parameter count for every file on disk,
so this reads only the header and skips large arrays (the tokenizer vocabulary) without keeping them.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Arrays longer than this are skipped (their length is kept); only the vocabulary is that long.
_MAX_KEPT_ARRAY = 64

# llama.cpp's LLAMA_FTYPE values, as written to general.file_type.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}
# ggml tensor type ids, used when general.file_type is absent.
TENSOR_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 10: "Q2_K",
                11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16"}


class GGUFError(ValueError):
    pass


@dataclass
class GGUFHeader:
    version: int
    metadata: dict = field(default_factory=dict)
    tensor_count: int = 0
    param_count: int = 0
    tensor_types: dict[str, int] = field(default_factory=dict)  # type name -> element count

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str, default=None):
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def quantization(self) -> str | None:
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int) and file_type in FILE_TYPES:
            return FILE_TYPES[file_type]
        if self.tensor_types:
            return max(self.tensor_types, key=self.tensor_types.get)
        return None


class _Reader:
    """Reads a header that may be hostile: every length is checked against what is left of the file before it
    is read or skipped, so a corrupt count cannot allocate gigabytes or loop for hours."""

    def __init__(self, handle):
        self.handle = handle
        self.size = os.fstat(handle.fileno()).st_size

    def _fits(self, count: int, item_bytes: int, what: str) -> None:
        if count * item_bytes > self.size - self.handle.tell():
            raise GGUFError(f"truncated or corrupt GGUF header: a {what} of {count} items is longer than the file")

    def read(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise GGUFError("truncated GGUF header")
        return data

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        self._fits(length, 1, "string")
        return self.read(length).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.unpack("<Q")
        self._fits(length, 1, "string")
        self.handle.seek(length, 1)

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            self._fits(count, struct.calcsize(_SCALARS[item_kind]) if item_kind in _SCALARS else 8, "array")
            if count <= _MAX_KEPT_ARRAY:
                return [self.value(item_kind) for _ in range(count)]
            self.skip_array(item_kind, count)
            return _SkippedArray(count)
        raise GGUFError(f"unknown GGUF value type {kind}")

    def skip_array(self, item_kind: int, count: int) -> None:
        if item_kind in _SCALARS:
            self.handle.seek(struct.calcsize(_SCALARS[item_kind]) * count, 1)
        elif item_kind == _STRING:
            for _ in range(count):
                self.skip_string()
        else:
            for _ in range(count):
                self.value(item_kind)


class _SkippedArray(list):
    """Stands in for a long array: empty, but remembers how long the real one was."""

    def __init__(self, length: int):
        super().__init__()
        self.length = length


def read_header(path: str | Path) -> GGUFHeader:
    with open(path, "rb") as handle:
        reader = _Reader(handle)
        if reader.read(4) != MAGIC:
            raise GGUFError(f"{path} is not a GGUF file")
        version = reader.unpack("<I")
        if version < 2:
            raise GGUFError(f"GGUF version {version} is too old")
        tensor_count, kv_count = reader.unpack("<Q"), reader.unpack("<Q")
        header = GGUFHeader(version=version, tensor_count=tensor_count)
        for _ in range(kv_count):
            key = reader.string()
            header.metadata[key] = reader.value(reader.unpack("<I"))
        for _ in range(tensor_count):
            reader.skip_string()
            dims = [reader.unpack("<Q") for _ in range(reader.unpack("<I"))]
            tensor_type = reader.unpack("<I")
            reader.unpack("<Q")  # data offset
            elements = 1
            for dim in dims:
                elements *= dim
            header.param_count += elements
            name = TENSOR_TYPES.get(tensor_type, str(tensor_type))
            header.tensor_types[name] = header.tensor_types.get(name, 0) + elements
        return header


def find_strings(path: str | Path, key: str, wanted: set[str]) -> dict[str, int]:
    """Where each wanted string sits in the string array `key` (e.g. a token's id in `tokenizer.ggml.tokens`),
    read without keeping the array."""
    found: dict[str, int] = {}
    with open(path, "rb") as handle:
        reader = _Reader(handle)
        if reader.read(4) != MAGIC or reader.unpack("<I") < 2:
            raise GGUFError(f"{path} is not a GGUF file")
        _tensor_count, kv_count = reader.unpack("<Q"), reader.unpack("<Q")
        for _ in range(kv_count):
            name, kind = reader.string(), reader.unpack("<I")
            if name != key or kind != _ARRAY:
                reader.value(kind)  # long arrays are skipped, not kept
                continue
            item_kind, count = reader.unpack("<I"), reader.unpack("<Q")
            if item_kind != _STRING:
                raise GGUFError(f"{key} is not an array of strings")
            reader._fits(count, 8, "array")
            for index in range(count):
                text = reader.string()
                if text in wanted:
                    found[text] = index
            return found
    return found


_headers: dict[tuple[str, int, int], GGUFHeader | Exception] = {}


def cached_header(path: str | Path) -> GGUFHeader:
    """A file's header, read once per version of the file (its size and mtime); a bad one fails again without a
    second read. Skipping a vocabulary of 150,000 strings costs a tenth of a second, and every load, estimate and
    listing asks."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _headers:
        try:
            _headers[key] = read_header(path)
        except (OSError, ValueError) as exc:  # GGUFError is a ValueError
            _headers[key] = exc
    found = _headers[key]
    if isinstance(found, Exception):
        raise found
    return found
