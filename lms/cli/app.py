"""The Typer application: every command group registers itself here."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lms",
    help="lms: load, serve and chat with local language models (compatible with LM Studio's lms).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def build() -> typer.Typer:
    from lms.cli import chat, cluster, daemon, get, log, models, runtime, server, status, upstream

    for module in (get, models, chat, server, log, runtime, daemon, status, cluster, upstream):
        module.register(app)
    return app
