"""lms runtime ls | get | update | select | remove | survey: the engine versions models run on."""

from __future__ import annotations

from typing import Annotated

import typer

from lms.cli.output import fail, file_size, info, print_json, table

runtime_app = typer.Typer(help="List, install, update and select inference engines.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def _store():
    from lms.store import runtimes

    return runtimes


def _or_fail(call, *args):
    from lms.errors import LmsError

    try:
        return call(*args)
    except LmsError as exc:
        fail(exc.message)


@runtime_app.command("ls")
def ls(json_: JsonFlag = False):
    """List installed engine versions and the selected one of each."""
    rows = _store().listing()
    if json_:
        return print_json(rows)
    print(table(["LLM ENGINE", "SELECTED", "MODEL FORMAT"],
                [[f"{r['name']}@{r['version']}" + (" (bundled)" if r["bundled"] else ""), "✓" if r["selected"]
                  else "", r["modelFormat"]] for r in rows]))


@runtime_app.command("get")
def get(
    query: Annotated[str, typer.Argument(help="engine or engine@version, e.g. mlx@0.32.1 (default: llama.cpp)")]
    = "llama.cpp",
    list_: Annotated[bool, typer.Option("--list", help="List the versions the package index offers.")] = False,
    json_: JsonFlag = False,
):
    """Install an engine version from the package index (the newest when no version is given)."""
    runtimes = _store()
    item, version = _or_fail(runtimes.parse, query)
    if list_:
        versions = _or_fail(runtimes.available, item)
        return print_json(versions) if json_ else print("\n".join(f"{item.name}@{v}" for v in versions))
    version = version or _or_fail(runtimes.available, item)[0]
    info(f"Installing {item.name}@{version} ({item.package})...")
    path = _or_fail(runtimes.install, item, version)
    if json_:
        return print_json({"name": item.name, "version": version, "path": str(path)})
    info(f"Installed {item.name}@{version}. Select it with: lms runtime select {item.name}@{version}")


def _versioned(spec: str, command: str):
    item, version = _or_fail(_store().parse, spec)
    if not version:
        fail(f"Name a version: lms runtime {command} engine@version (see lms runtime ls).")
    return item, version


@runtime_app.command("select")
def select(spec: Annotated[str, typer.Argument(help="engine@version")], json_: JsonFlag = False):
    """Select the version new models of that engine load with (loaded models keep theirs until reloaded)."""
    item, version = _versioned(spec, "select")
    _or_fail(_store().select, item, version)
    if json_:
        print_json({"engine": item.name, "version": version, "selected": True})
    else:
        info(f"Selected {item.name}@{version}.")


@runtime_app.command("remove")
def remove(spec: Annotated[str, typer.Argument(help="engine@version")], json_: JsonFlag = False):
    """Remove an installed engine version (not the bundled one, nor one selected or in use)."""
    from lms.client import connect

    item, version = _versioned(spec, "remove")
    client = connect()
    in_use = {f"{m['engine'].get('name')}@{m['engine'].get('version')}" for m in (client.get("/lms/ps") if client
                                                                                   else []) if m.get("engine")}
    _or_fail(_store().remove, item, version, in_use)
    if json_:
        print_json({"engine": item.name, "version": version, "removed": True})
    else:
        info(f"Removed {item.name}@{version}.")


@runtime_app.command("update")
def update(
    name: Annotated[str | None, typer.Argument(help="llama.cpp or mlx")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Update every engine.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan; change nothing.")] = False,
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")] = False,
    json_: JsonFlag = False,
):
    """Install the newest version of an engine and select it; a failed update keeps the current version."""
    runtimes = _store()
    items = list(runtimes.ENGINES.values()) if all_ or name is None else [_or_fail(runtimes.engine, name)]
    plan = []
    for item in items:
        current, newest = runtimes.selected(item), _or_fail(runtimes.available, item)[0]
        plan.append({"name": item.name, "current": current, "latest": newest, "update": current != newest})
    if json_ and dry_run:
        return print_json(plan)
    for step in plan:
        action = f"{step['current']} -> {step['latest']}" if step["update"] else f"{step['current']} is the latest"
        info(f"{step['name']}: {action}")
    todo = [step for step in plan if step["update"]]
    if dry_run or not todo:
        return print_json(plan) if json_ else None
    if not yes and not typer.confirm(f"Install and select {len(todo)} engine version(s)?", default=True, err=True):
        return
    for step in todo:
        item = runtimes.engine(step["name"])
        _or_fail(runtimes.install, item, step["latest"])
        runtimes.select(item, step["latest"])
        info(f"Updated {item.name} to {step['latest']}.")
    if json_:
        print_json(plan)


@runtime_app.command("survey")
def survey(json_: JsonFlag = False):
    """Show the CPU, its vector extensions, memory and GPUs as the engines see them."""
    facts = _store().survey()
    if json_:
        return print_json(facts)
    cpu, memory = facts["cpu"], facts["memory"]
    print(f"CPU: {cpu['name']} ({cpu['architecture']}, {cpu['cores']} cores, {cpu['threads']} threads)")
    print(f"  extensions: {', '.join(cpu['extensions']) or 'none detected'}")
    print(f"Memory: {file_size(memory['totalBytes'])} ({file_size(memory['availableBytes'])} available)")
    gpus = facts["gpus"]
    print("GPUs: " + (", ".join(f"{g['name']} ({file_size(g['memoryBytes'])})" for g in gpus) if gpus
                      else "none (models run on the CPU)"))


def register(app: typer.Typer) -> None:
    app.add_typer(runtime_app, name="runtime")
