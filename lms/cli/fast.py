"""Read-only commands that scripts poll often, answered without importing Typer.

Typer builds pydantic adapters for every parameter at start-up (~200 ms); `lms ps --json` in a polling loop
should cost a round trip to the daemon, not that. The Typer commands call these same functions.
"""

from __future__ import annotations

from lms.cli.output import print_json


def ps_json() -> None:
    from lms.client import ensure_daemon

    print_json([{k: v for k, v in m.items() if k != "pid"} for m in ensure_daemon().get("/lms/ps")])


def daemon_status_json() -> None:
    from lms.client import connect

    client = connect()
    if client is None:
        print_json({"status": "not-running"})
        return
    state = client.get("/lms/status")
    print_json({"status": "running", "pid": state["pid"], "isDaemon": True})


def server_status_json() -> None:
    from lms import config
    from lms.client import connect

    client = connect()
    state = client.get("/lms/server/status") if client else {"running": False}
    result = {"running": state["running"]}
    port = state.get("port", config.read_json(config.server_config_path(), {}).get("port"))
    if port is not None:
        result["port"] = port
    if "token_required" in state:
        result["tokenRequired"] = state["token_required"]
    if state.get("sdk_port") is not None:
        result["sdkPort"] = state["sdk_port"]  # where LM Studio's SDKs find it with no host
    print_json(result)


COMMANDS = {
    ("ps", "--json"): ps_json,
    ("daemon", "status", "--json"): daemon_status_json,
    ("server", "status", "--json"): server_status_json,
}


def run(argv: list[str]) -> bool:
    """Run argv here if it is one of the fast commands; say whether it was."""
    command = COMMANDS.get(tuple(argv))
    if command is None:
        return False
    command()
    return True
