"""lms daemon up|down|status."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from lms.cli.output import fail, info, print_json

daemon_app = typer.Typer(help="Start, stop and inspect the lms daemon.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


@daemon_app.command("up")
def up(json_: JsonFlag = False):
    """Start the daemon if it is not running."""
    from lms.client import connect, start_daemon, this_machine_only

    this_machine_only("daemon up")
    client = connect()
    already = client is not None
    if not already:
        start_daemon()
        client = connect()
    status = client.get("/lms/status")
    if json_:
        print_json({"status": "running", "pid": status["pid"], "isDaemon": True, "version": status["version"]})
    elif already:
        info(f"The daemon is already running (PID: {status['pid']}).")
    else:
        info(f"lms daemon started (PID: {status['pid']}).")


@daemon_app.command("down")
def down(json_: JsonFlag = False):
    """Unload every model and stop the daemon."""
    from lms.client import connect, daemon_pid, this_machine_only

    this_machine_only("daemon down")
    client = connect()
    if client is None:
        fail("Daemon is not running.")
    pid = client.get("/lms/status")["pid"]
    if not json_:
        info("Shutting down the lms daemon...")
    client.post("/lms/shutdown")
    deadline = time.monotonic() + 30
    while daemon_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if daemon_pid() is not None:
        fail(f"The daemon (PID: {pid}) did not stop within 30 seconds.")
    if json_:
        print_json({"status": "not-running", "pid": pid})
    else:
        info("Done.")


@daemon_app.command("status")
def status(json_: JsonFlag = False):
    """Say whether the daemon is running."""
    from lms.cli.fast import daemon_status_json
    from lms.client import connect

    if json_:
        return daemon_status_json()
    client = connect()
    if client is None:
        info("The lms daemon is not running")
        return
    state = client.get("/lms/status")
    info(f"lms daemon v{state['version']} is running (PID: {state['pid']})")


def register(app: typer.Typer) -> None:
    app.add_typer(daemon_app, name="daemon")
