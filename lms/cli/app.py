"""The Typer application: every command group registers itself here."""

from __future__ import annotations

import os
from typing import Annotated

import typer

app = typer.Typer(
    name="lms",
    help="lms: load, serve and chat with local language models (compatible with LM Studio's lms).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def remote(
    host: Annotated[str | None, typer.Option("--host", envvar="LMS_HOST", show_envvar=False,
                                             help="Run the command against the lms on this host (its HTTP server), "
                                                  "not this machine's daemon. Env: LMS_HOST.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="That server's port (default 1234). Env: LMS_PORT.")]
    = None,
    api_token_file: Annotated[str | None, typer.Option(
        "--api-token-file", help="A file holding an admin API token of that server (else LMS_API_TOKEN).")] = None,
):
    """lms: load, serve and chat with local language models (compatible with LM Studio's lms)."""
    # The client reads these from the environment (lms/client.py), as the fast path does.
    for name, value in (("LMS_HOST", host), ("LMS_PORT", port), ("LMS_API_TOKEN_FILE", api_token_file)):
        if value is not None:
            os.environ[name] = str(value)


def build() -> typer.Typer:
    from lms.cli import chat, cluster, config, daemon, get, log, models, runtime, server, status, upstream

    for module in (get, models, chat, server, log, runtime, daemon, status, cluster, upstream, config):
        module.register(app)
    return app
