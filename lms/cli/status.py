"""lms status and lms version."""

from __future__ import annotations

from typing import Annotated

import typer

from lms import __version__
from lms.cli.output import file_size, info, print_json

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def status(json_: JsonFlag = False):
    """Show the server's state and the loaded models."""
    from lms.client import ensure_daemon

    client = ensure_daemon()
    server = client.get("/lms/server/status")
    loaded = client.get("/lms/ps")
    if json_:
        print_json({"server": server, "loadedModels": [
            {"identifier": m["identifier"], "modelKey": m["modelKey"], "sizeBytes": m["sizeBytes"]} for m in loaded]})
        return
    if server["running"]:
        print(f"Server: ON (port: {server['port']})")
    else:
        print("Server:  OFF \n\n(i) To start the server, run the following command:\n\n    lms server start")
    print()
    if loaded:
        print("Loaded Models")
        for model in loaded:
            print(f"  · {model['identifier']} - {file_size(model['sizeBytes'])}")
    else:
        print("No Models Loaded")


def version(json_: JsonFlag = False):
    """Print the version of lms."""
    if json_:
        print_json({"version": __version__})
        return
    print(f"lms - a CLI-first runtime manager for local language models\nVersion: {__version__}")
    info("Docs: see docs/ in the lms repository")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("version")(version)
