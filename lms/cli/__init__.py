"""The `lms` command line: small commands over the daemon's control API.

Typer is imported only when a command needs it: the fast path (lms.cli.fast) answers the commands scripts
poll without it.
"""

from __future__ import annotations

import sys


def main() -> None:
    from lms.cli import fast
    from lms.client import DaemonError

    try:
        if fast.run(sys.argv[1:]):
            return
        from lms.cli.app import build

        build()()
    except DaemonError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
