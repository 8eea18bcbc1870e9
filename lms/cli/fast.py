"""Read-only commands that scripts poll often, answered without importing Typer.

Typer builds pydantic adapters for every parameter at start-up (~200 ms); `lms ps --json` in a polling loop
should cost a round trip to the daemon, not that. The Typer commands call these same functions.
"""

from __future__ import annotations

from lms.cli.output import print_json


def ps_json() -> None:
    from lms.client import ensure_daemon

    print_json([{k: v for k, v in m.items() if k != "pid"} for m in ensure_daemon().get("/lms/ps")])


def unreadable_models(client) -> list[dict]:
    """The model files the daemon cannot read; none from a daemon that does not list them."""
    from lms.client import DaemonError

    try:
        return client.get("/lms/models/unreadable")
    except DaemonError as exc:
        if exc.status == 404:
            return []
        raise


def load_defaults_of(client) -> dict:
    """Each model's load defaults (lms config model); none from a daemon that does not keep them."""
    from lms.client import DaemonError

    try:
        return client.get("/lms/config/models")
    except DaemonError as exc:
        if exc.status == 404:
            return {}
        raise


def _listed(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in ("loadedInstances", "variantKey")}


def ls_json(kinds: set[str] | None = None, variants: bool = False) -> None:
    """`lms ls --json [--llm|--embedding] [--variants]`: the selected variant of each model (with --variants, each
    model with all of its variants), its load defaults, and the files that cannot be read (their type unknown,
    so only when no type is asked for)."""
    from lms.client import ensure_daemon

    kinds = kinds or {"llm", "embedding"}
    client = ensure_daemon()
    entries = client.get("/lms/models")
    bad = unreadable_models(client) if kinds == {"llm", "embedding"} else []
    defaults = load_defaults_of(client)
    for entry in entries:
        entry["loadDefaults"] = defaults.get(entry["modelKey"], {})
    shown = [e for e in entries if e["type"] in kinds]
    selected = [e for e in shown if e.get("selectedVariant", e["variantKey"]) == e["variantKey"]]
    if variants:
        print_json([{"model": _listed(m), "variants": [_listed(v) for v in shown if v["modelKey"] == m["modelKey"]]}
                    for m in selected] + [{"model": _listed(b), "variants": [_listed(b)]} for b in bad])
    else:
        print_json([_listed(e) for e in selected + bad])


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
    ("ls", "--json"): ls_json,
    ("ls", "--variants", "--json"): lambda: ls_json(variants=True),
    ("ls", "--json", "--variants"): lambda: ls_json(variants=True),
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
