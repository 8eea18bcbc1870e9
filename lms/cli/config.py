"""lms config ls|get|set|unset: the daemon's settings, from the terminal; lms config model: a model's load defaults."""

from __future__ import annotations

from typing import Annotated

import typer

from lms.cli.output import fail, info, print_json, table

config_app = typer.Typer(help="See and change the daemon's settings (kept in settings.json, applied at once where "
                              "they can be) and each model's load defaults.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _call(method: str, path: str, body: dict | None = None):
    from lms.client import DaemonError, ensure_daemon

    client = ensure_daemon()
    try:
        return client.post(path, body or {}) if method == "post" else client.get(path)
    except DaemonError as exc:
        fail(str(exc))


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return '""' if value == "" else str(value)


@config_app.command("ls")
def ls(json_: JsonFlag = False):
    """Every setting: its value, where it comes from (default, settings.json, env) and whether a change applies
    live or after a restart."""
    rows = _call("get", "/lms/config")
    if json_:
        return print_json(rows)
    print(table(["KEY", "VALUE", "SOURCE", "APPLIES"],
                [[r["key"], _text(r["value"]) + (f" (saved: {_text(r['pending'])})" if "pending" in r else ""),
                  r["source"], r["applies"]] for r in rows]))


@config_app.command("get")
def get(key: Annotated[str, typer.Argument(help="The setting (lms config ls lists them).")], json_: JsonFlag = False):
    """One setting's value."""
    row = _call("post", "/lms/config/get", {"key": key})
    if json_:
        return print_json(row)
    print(_text(row["value"]))
    if row.get("note"):
        info(f"Saved {_text(row['pending'])}: {row['note']}.")


def _report(answer: dict, verb: str) -> None:
    info(f"{answer['key']} {verb} {_text(answer['saved'])} in settings.json.")
    if answer["applied"]:
        info("Applied to the running daemon now.")
    elif answer.get("note"):
        info(f"Note: it {answer['note']}.")


@config_app.command("set")
def set_(key: Annotated[str, typer.Argument(help="The setting.")],
         value: Annotated[str, typer.Argument(help="Its new value (checked like settings.json's).")],
         json_: JsonFlag = False):
    """Change a setting: checked, kept in settings.json, and applied to the running daemon where it can be."""
    answer = _call("post", "/lms/config/set", {"key": key, "value": value})
    if json_:
        return print_json(answer)
    _report(answer, "set to")


@config_app.command("unset")
def unset(key: Annotated[str, typer.Argument(help="The setting.")], json_: JsonFlag = False):
    """Remove a setting from settings.json: its default applies again."""
    answer = _call("post", "/lms/config/unset", {"key": key})
    if json_:
        return print_json(answer)
    _report(answer, "removed; now")


@config_app.command("model")
def model(
    model_key: Annotated[str, typer.Argument(help="The model (its key or a unique part of it).")],
    context_length: Annotated[str | None, typer.Option("-c", "--context-length",
                                                       help="Context length in tokens, or max.")] = None,
    parallel: Annotated[int | None, typer.Option("--parallel", min=1, help="Parallel slots.")] = None,
    ttl: Annotated[int | None, typer.Option("--ttl", min=1, help="Idle seconds before it unloads.")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="GPU offload: off, max or 0..1.")] = None,
    kv_cache_type: Annotated[str | None, typer.Option("--kv-cache-type", help="f16, q8_0 or q4_0.")] = None,
    flash_attention: Annotated[str | None, typer.Option("--flash-attention", help="on, off or auto.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Tokens per decode step.")] = None,
    draft_model: Annotated[str | None, typer.Option("--draft-model", "--speculative-draft-model",
                                                    help="Speculative-decoding draft model.")] = None,
    draft_max_tokens: Annotated[int | None, typer.Option("--speculative-draft-max-tokens", min=1)] = None,
    speculative: Annotated[str | None, typer.Option("--speculative", help="ngram (prompt-lookup drafts) or "
                                                                          "off.")] = None,
    draft_min_probability: Annotated[float | None, typer.Option("--speculative-draft-min-probability", min=0.0,
                                                                max=1.0)] = None,
    identifier: Annotated[str | None, typer.Option("--identifier", help="The identifier to serve it as.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Show the model's load defaults.")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="Forget the model's load defaults (before any given "
                                                        "here).")] = False,
    json_: JsonFlag = False,
):
    """A model's load defaults: what `lms load`, JIT loads and every load route use unless the load says otherwise."""
    changes = {"context_length": _context_length(context_length), "parallel": parallel, "ttl": ttl,
               "gpu": _gpu(gpu), "kv_cache_type": kv_cache_type, "flash_attention": flash_attention,
               "batch_size": batch_size, "draft_model": draft_model, "draft_max_tokens": draft_max_tokens,
               "draft_min_probability": draft_min_probability, "identifier": identifier, "speculative": speculative}
    changes = {k: v for k, v in changes.items() if v is not None}
    if show and (changes or reset):
        fail("--show only shows: leave out the settings and --reset.")
    answer = _call("post", "/lms/config/model", {"model": model_key, "set": changes, "reset": reset})
    if json_:
        return print_json(answer)
    values = answer["loadDefaults"]
    if reset and not changes:
        info(f"Load defaults of {answer['modelKey']} reset.")
    if not values:
        info(f"{answer['modelKey']} has no load defaults: loads use the daemon's settings.")
        return
    if changes or reset:
        info(f"Load defaults of {answer['modelKey']} saved; the next load uses them.")
    print(table(["SETTING", "VALUE"], [[k, _text(v)] for k, v in values.items()]))


def _context_length(value: str | None):
    if value is None or value == "max":
        return value
    try:
        return int(value)
    except ValueError:
        fail("--context-length must be a number of tokens or max.")


def _gpu(value: str | None):
    if value is None or value in ("off", "max"):
        return value
    try:
        return float(value)
    except ValueError:
        fail("--gpu must be off, max or a number from 0 to 1.")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
