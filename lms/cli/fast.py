"""Commands that scripts run often, answered without importing Typer: the read-only listings they poll, and a
plain `lms load`.

Typer builds pydantic adapters for every parameter at start-up (~200 ms); `lms ps --json` in a polling loop
should cost a round trip to the daemon, not that, and a script's `lms load` to first token races llama-server's
start. The Typer commands call these same functions.
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
    if "ui" in state:
        result["ui"] = state["ui"]  # the dashboard at /ui
    print_json(result)


COMMANDS = {
    ("ps", "--json"): ps_json,
    ("ls", "--json"): ls_json,
    ("ls", "--variants", "--json"): lambda: ls_json(variants=True),
    ("ls", "--json", "--variants"): lambda: ls_json(variants=True),
    ("daemon", "status", "--json"): daemon_status_json,
    ("server", "status", "--json"): server_status_json,
}


# `lms load` options a script's load may use here; anything else goes to the Typer command.
LOAD_OPTIONS = {"-c": "context_length", "--context-length": "context_length", "--identifier": "identifier",
                "--ttl": "ttl", "--parallel": "parallel"}
LOAD_FLAGS = {"-y": "yes", "--yes": "yes", "--json": "json"}


def _load_arguments(argv: list[str]) -> dict | None:
    """`KEY [-y] [--json] [-c N|max] [--identifier ID] [--ttl S] [--parallel N]` as a load body, or None."""
    given: dict = {}
    rest = list(argv)
    while rest:
        word = rest.pop(0)
        name, _, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in LOAD_FLAGS and not inline:
            given[LOAD_FLAGS[name]] = True
        elif name in LOAD_OPTIONS and (inline or rest):
            given[LOAD_OPTIONS[name]] = inline or rest.pop(0)
        elif not word.startswith("-") and "model" not in given:
            given["model"] = word
        else:
            return None
    if "model" not in given:
        return None
    for key in ("ttl", "parallel"):
        if key in given:
            if not given[key].isdigit() or int(given[key]) < 1:
                return None  # Typer says what is wrong
            given[key] = int(given[key])
    if "context_length" in given and given["context_length"] != "max":
        if not given["context_length"].isdigit():
            return None
        given["context_length"] = int(given["context_length"])
    return given


def report_load(loaded: dict, elapsed: float, as_json: bool) -> None:
    """What `lms load` prints once its model is loaded."""
    from lms.cli.output import info, memory_size

    if as_json:
        print_json({k: v for k, v in loaded.items() if k != "pid"})
        return
    info(f"Model loaded successfully in {elapsed:.2f}s.")
    if loaded.get("contextLengthChosen"):
        info(loaded["contextLengthChosen"][0].upper() + loaded["contextLengthChosen"][1:] + ".")
    info(f"({memory_size(loaded['sizeBytes'])})")
    info(f'To use the model in the API/SDK, use the identifier "{loaded["identifier"]}".')


def load(argv: list[str]) -> bool:
    """`lms load KEY ...` from a script (no terminal to show a spinner on, nobody to ask): a round trip to the
    daemon, without Typer's ~0.2 s start. Anything else goes to the Typer command."""
    import sys
    import time

    given = _load_arguments(argv)
    if given is None or sys.stderr.isatty() or (sys.stdin.isatty() and not given.get("yes")):
        return False
    from lms.client import ensure_daemon

    body = {key: value for key, value in given.items() if key not in ("yes", "json")} | {"stream": True}
    started = time.perf_counter()
    loaded = None
    try:
        for event in ensure_daemon().stream_lines("/lms/load", body):
            if "error" in event:
                print(f"Error: {event['error']['message']}", file=sys.stderr)
                raise SystemExit(1)
            if "loaded" in event:
                loaded = event["loaded"]
    except KeyboardInterrupt:
        print("Load cancelled.", file=sys.stderr)
        raise SystemExit(1) from None
    if loaded is None:
        print("Error: The daemon ended the load without an answer.", file=sys.stderr)
        raise SystemExit(1)
    report_load(loaded, time.perf_counter() - started, bool(given.get("json")))
    return True


def run(argv: list[str]) -> bool:
    """Run argv here if it is one of the fast commands; say whether it was."""
    if argv[:1] == ["load"]:
        return load(argv[1:])
    command = COMMANDS.get(tuple(argv))
    if command is None:
        return False
    command()
    return True
