"""Write a GGUF model again as a split model (`-00001-of-0000N.gguf`), the way llama.cpp's gguf-split shards:
every part is a GGUF file with `split.*` keys, the first holds all metadata. Used by the tests of `lms get`
for a multi-part variant; runs on the `gguf` package, no llama.cpp tools needed.

    python -m tools.split_gguf SOURCE.gguf OUT_DIR [PARTS]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

INTERNAL_KEYS = ("GGUF.", "general.architecture", "split.")


def copy_into(reader, writer, skip: tuple[str, ...] = INTERNAL_KEYS, extra=None) -> None:
    """Every key of `reader` but those starting with `skip`, then `extra(writer)`'s keys, then every tensor as it
    is, written by `writer` (a gguf.GGUFWriter), which is closed."""
    import gguf

    for field in reader.fields.values():
        if field.name.startswith(skip):
            continue
        kind = field.types[0]
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_type)
    if extra is not None:
        extra(writer)
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                               tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()


def split_gguf(source: Path, out_dir: Path, parts: int = 2) -> list[Path]:
    """The part files, written into out_dir (kept if already there)."""
    import gguf

    stem = source.name[: -len(".gguf")]
    expected = [out_dir / f"{stem}-{index:05d}-of-{parts:05d}.gguf" for index in range(1, parts + 1)]
    if all(path.exists() for path in expected):
        return expected
    reader = gguf.GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(out_dir / source.name, architecture,
                             split_max_tensors=math.ceil(len(reader.tensors) / parts))
    copy_into(reader, writer)
    written = sorted(out_dir.glob(f"{stem}-*-of-*.gguf"))
    if [p.name for p in written] != [p.name for p in expected]:
        raise RuntimeError(f"expected {parts} parts, the writer made {[p.name for p in written]}")
    return expected


if __name__ == "__main__":
    print("\n".join(str(p) for p in split_gguf(Path(sys.argv[1]), Path(sys.argv[2]),
                                               int(sys.argv[3]) if len(sys.argv) > 3 else 2)))
