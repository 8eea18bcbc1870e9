"""Output conventions: data on stdout, messages on stderr, errors as one line and exit code 1."""

from __future__ import annotations

import json
import sys

from lms.sizes import file_size, memory_size  # noqa: F401  (the CLI prints sizes through this module)

TYPE_CHECKING = False  # not typing's own: importing typing costs every command ~3 ms
if TYPE_CHECKING:
    from typing import NoReturn


def info(message: str = "") -> None:
    print(message, file=sys.stderr)


def warn(message: str) -> None:
    print(f"W {message}", file=sys.stderr)


def fail(message: str) -> NoReturn:
    import typer

    print(f"Error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def interactive() -> bool:
    """A person at a terminal, who can answer questions (asked on stderr)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def ask_choice(prompt: str, count: int, default: int = 1) -> int:
    """The index of the option a person picks from a numbered list of `count`."""
    import typer

    answer = typer.prompt(prompt, default=str(default), err=True)
    if not answer.isdigit() or not 1 <= int(answer) <= count:
        fail(f"Choose a number from 1 to {count}.")
    return int(answer) - 1


def print_json(value) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


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
