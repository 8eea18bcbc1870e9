"""Output conventions: data on stdout, messages on stderr, errors as one line and exit code 1."""

from __future__ import annotations

import json
import sys
from typing import NoReturn


def info(message: str = "") -> None:
    print(message, file=sys.stderr)


def warn(message: str) -> None:
    print(f"W {message}", file=sys.stderr)


def fail(message: str) -> NoReturn:
    import typer

    print(f"Error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def print_json(value) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def file_size(size: int | None) -> str:
    """Files and downloads: base 1000, as LM Studio prints them."""
    if size is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.2f} {unit}" if unit != "B" else f"{size} B"
        size /= 1000
    return f"{size:.2f} TB"


def memory_size(size: int | None) -> str:
    """Memory: base 1024."""
    if size is None:
        return ""
    for unit in ("Bytes", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.2f} {unit}" if unit != "Bytes" else f"{size} Bytes"
        size /= 1024
    return f"{size:.2f} TiB"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.2f}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{int(hours)}h {int(minutes)}m {secs:.2f}s"
    if minutes:
        return f"{int(minutes)}m {secs:.2f}s"
    return f"{secs:.2f}s"


def short_ttl(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds >= 60:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain table with LM Studio's four-space column splitter."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["    ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)
