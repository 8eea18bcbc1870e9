"""The `lms` command line: small commands over the daemon's control API."""

from __future__ import annotations

import typer

from lms import __version__

app = typer.Typer(
    name="lms",
    help="lms: load, serve and chat with local language models (compatible with LM Studio's lms).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from lms.cli import chat, daemon, models, server, status

    for module in (models, chat, server, daemon, status):
        module.register(app)


def main() -> None:
    from lms.cli.output import fail
    from lms.client import DaemonError

    _register()
    try:
        app()
    except DaemonError as exc:
        try:
            fail(str(exc))
        except typer.Exit as exit_:
            raise SystemExit(exit_.exit_code) from None


__all__ = ["app", "main", "__version__"]
