"""lms upstream add|ls|rm: OpenAI-compatible servers (vLLM, llama-server, another lms) whose models this lms
serves as NAME/<model>, through every API it speaks."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from lms.cli.output import fail, info, print_json, table

upstream_app = typer.Typer(help="Serve the models of another OpenAI-compatible server (vLLM, llama-server, another "
                                "lms) as NAME/<model>.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _daemon():
    from lms.client import ensure_daemon

    return ensure_daemon()


@upstream_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A short name: its models are listed as NAME/<model>.")],
    url: Annotated[str, typer.Argument(help="The server's OpenAI base URL, e.g. http://gpu-box:8000/v1.")],
    api_key_env: Annotated[str | None, typer.Option("--api-key-env", metavar="VAR",
                                                    help="The environment variable holding the server's API key "
                                                         "(the key itself is never written to disk).")] = None,
    json_: JsonFlag = False,
):
    """Register a server (its model list is checked now) and serve its models from here on."""
    body = {"name": name, "url": url, "api_key_env": api_key_env}
    if api_key_env:
        if not os.environ.get(api_key_env):
            fail(f"The environment variable {api_key_env} is not set: export the API key in it first.")
        body["api_key"] = os.environ[api_key_env]
    added = _daemon().post("/lms/upstreams/add", body)
    if json_:
        return print_json(added)
    info(f"Added upstream {name} at {added['url']} with {len(added['models'])} model(s):")
    for model in added["models"]:
        info(f"  {model}")


@upstream_app.command("ls")
def ls(json_: JsonFlag = False):
    """The upstreams, whether each answers now, and their models."""
    upstreams = _daemon().get("/lms/upstreams")["upstreams"]
    if json_:
        return print_json(upstreams)
    if not upstreams:
        return info("No upstreams (lms upstream add NAME URL).")
    info(table(["NAME", "URL", "STATE", "MODELS"],
               [[u["name"], u["url"], "up" if u["reachable"] else f"DOWN: {u['error']}", str(len(u["models"]))]
                for u in upstreams]))
    for upstream in upstreams:
        for model in upstream["models"]:
            info(f"  {model}")


@upstream_app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="The upstream's name.")], json_: JsonFlag = False):
    """Forget an upstream: its models leave every list (nothing on its server changes)."""
    removed = _daemon().post("/lms/upstreams/remove", {"name": name})
    if json_:
        return print_json(removed)
    info(f"Removed upstream {name}.")


def register(app: typer.Typer) -> None:
    app.add_typer(upstream_app, name="upstream")
