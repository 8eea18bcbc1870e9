"""Human-readable sizes, as LM Studio prints them: files and downloads in base 1000, memory in base 1024."""

from __future__ import annotations


def _scaled(size: int | None, base: int, units: tuple[str, ...]) -> str:
    if size is None:
        return ""
    if size < base:
        return f"{size} {units[0]}"
    for unit in units[1:-1]:
        size /= base
        if size < base:
            return f"{size:.2f} {unit}"
    return f"{size / base:.2f} {units[-1]}"


def file_size(size: int | None) -> str:
    return _scaled(size, 1000, ("B", "KB", "MB", "GB", "TB"))


def memory_size(size: int | None) -> str:
    return _scaled(size, 1024, ("Bytes", "KiB", "MiB", "GiB", "TiB"))
