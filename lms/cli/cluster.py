"""lms cluster connect|status|disconnect: the Ray cluster that `lms load --replicas` places models on."""

from __future__ import annotations

from typing import Annotated

import typer

from lms.cli.output import fail, info, print_json, table

cluster_app = typer.Typer(help="Join a Ray cluster, see its nodes and replicas, leave it. Models go onto it with "
                               "`lms load KEY --replicas N`.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _client():
    from lms.client import ensure_daemon

    return ensure_daemon()


def _call(method: str, path: str, body: dict | None = None) -> dict:
    from lms.client import DaemonError

    client = _client()
    try:
        return client.post(path, body or {}) if method == "post" else client.get(path)
    except DaemonError as exc:
        fail(str(exc))


def _print_nodes(status: dict) -> None:
    rows = [[node["address"], "alive" if node["alive"] else "DEAD", f"{node['cpus']:g}",
             f"{node['memoryBytes'] / 2**30:.1f} GiB",
             ", ".join(r["application"].removeprefix("lms-") for r in node["replicas"]) or "-"]
            for node in status.get("nodes", [])]
    info(table(["NODE", "STATE", "CPUS", "MEMORY", "REPLICAS"], rows))


@cluster_app.command("connect")
def connect(
    address: Annotated[str, typer.Argument(help="The Ray cluster: host:6379 (a `ray start --head`), "
                                                "ray://host:10001 (Ray Client), or auto (a head on this machine).")],
    json_: JsonFlag = False,
):
    """Join the cluster (checked now) and remember it, so the daemon rejoins it when it starts again."""
    status = _call("post", "/lms/cluster/connect", {"address": address})
    if json_:
        return print_json(status)
    info(f"Connected to the Ray cluster at {address} ({len(status.get('nodes', []))} nodes).")
    _print_nodes(status)


@cluster_app.command("status")
def status(json_: JsonFlag = False):
    """The cluster's nodes (CPUs, memory, alive) and the replicas of lms's models on each."""
    state = _call("get", "/lms/cluster/status")
    if json_:
        return print_json(state)
    if not state["connected"]:
        info("Not connected to a cluster (lms cluster connect ADDRESS).")
    elif not state.get("reachable"):
        info(f"The cluster at {state['address']} is DOWN: {state.get('error')}")
        if state.get("models"):
            info(f"Models placed on it: {', '.join(state['models'])}")
    else:
        info(f"Ray cluster at {state['address']}:")
        _print_nodes(state)


@cluster_app.command("disconnect")
def disconnect(json_: JsonFlag = False):
    """Leave the cluster: models loaded on it are unloaded; models on this machine stay."""
    result = _call("post", "/lms/cluster/disconnect")
    if json_:
        return print_json(result)
    unloaded = result.get("unloaded") or []
    info("Disconnected from the cluster" + (f"; unloaded {', '.join(unloaded)}." if unloaded else "."))


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
