"""lms get (search and download from the Hugging Face Hub, run by the daemon) and lms rm."""

from __future__ import annotations

import http.client
import os
import re
import time
from typing import Annotated

import typer

from lms.cli.output import ask_choice, fail, file_size, info, interactive, print_json, table

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout (asks nothing).")]


def _hub_options() -> dict:
    return {"endpoint": os.environ.get("HF_ENDPOINT"), "token": os.environ.get("HF_TOKEN")}


def _model_key(repo_id: str, variant: dict, variant_count: int) -> str:
    publisher, name = repo_id.lower().split("/", 1)
    key = f"{publisher}/{re.sub(r'-gguf$', '', name)}"
    return f"{key}@{variant['name']}" if variant_count > 1 and variant["format"] == "gguf" else key


def _tags(variant: dict, downloading: list[str]) -> str:
    tags = ["Won't Fit" if not variant["fits"] else "CPU Fit"]
    if variant["recommended"]:
        tags.append("★ Recommended")
    if variant["downloaded"]:
        tags.append("✓ Downloaded")
    if variant["name"] in downloading:
        tags.append("⌛ Downloading")
    return "  ".join(tags)


def _pick_variant(repo: dict, quant: str | None, filename: str | None, select: bool, yes: bool) -> dict:
    variants = repo["variants"]
    if not variants:
        fail(f"{repo['repo_id']} has no model files in a format this machine runs.")
    chosen = None
    if filename:
        chosen = next((v for v in variants if any(f["path"] == filename for f in v["files"])), None)
        if chosen is None:
            fail(f"{repo['repo_id']} has no model file {filename}.")
    elif quant:
        chosen = next((v for v in variants if v["name"] in (quant, f"mlx-{quant}")), None)
        if chosen is None and (yes or not interactive()):
            fail(f"Cannot find variant {quant}.")
        if chosen is None:
            info(f"Variant {quant} is not offered by {repo['repo_id']}; choose one:")
            select = True
    if chosen is not None and not select:
        return chosen
    default = next((v for v in variants if v["downloaded"]), None) or next(
        (v for v in variants if v["recommended"]), variants[0])
    if not select or yes or not interactive():
        return default
    rows = [[f"{i}.", v["name"], file_size(v["size_bytes"]), f"{repo['repo_id']} [{v['format'].upper()}]",
             _tags(v, repo.get("downloading", []))] for i, v in enumerate(variants, 1)]
    info(table(["", "VARIANT", "SIZE", "MODEL", ""], rows))
    return variants[ask_choice("Variant", len(variants), variants.index(default) + 1)]


def _search(client, query: str, formats: list[str] | None, yes: bool, json_: bool) -> str:
    info(f"Searching the Hugging Face Hub for '{query}'..." if query
         else "The most downloaded models on the Hugging Face Hub:")
    results = client.post("/lms/hub/search", {"query": query, "formats": formats, **_hub_options()})
    if not results:
        fail(f"No models found for '{query}'." if query else "The Hub lists no models.")
    if yes or json_ or not interactive() or (results[0]["exact"] and len(results) == 1):
        return results[0]["repo_id"]
    rows = [[f"{i}.", ("[Exact Match] " if r["exact"] else "") + r["repo_id"], "/".join(r["formats"]).upper(),
             f"{r['downloads']:,} downloads"] for i, r in enumerate(results[:20], 1)]
    info(table(["", "MODEL", "FORMAT", ""], rows))
    return results[ask_choice("Model", min(len(results), 20))]["repo_id"]


def get(
    model: Annotated[str, typer.Argument(help="Words to search for, owner/repo, owner/repo@quantization, or a "
                                              "Hugging Face URL of a repository or of one file. Left out: the "
                                              "most downloaded models to choose from.")] = "",
    gguf: Annotated[bool, typer.Option("--gguf", help="Only GGUF models (llama.cpp).")] = False,
    mlx: Annotated[bool, typer.Option("--mlx", help="Only MLX models.")] = False,
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Ask nothing: the best variant that fits.")] = False,
    select: Annotated[bool, typer.Option("--select", help="Always show the variant picker.")] = False,
    json_: JsonFlag = False,
):
    """Download a model from the Hugging Face Hub (HF_ENDPOINT and HF_TOKEN are honoured).

    The download runs in the daemon: Ctrl+C offers to keep it going in the background, and `lms get` of the same model follows it again. Files appear in `lms ls` only once complete and verified.
    """  # noqa: E501 - Typer keeps the line breaks of a help paragraph
    from lms.client import DaemonError, ensure_daemon
    from lms.store.hub import HubError, parse_target

    if select and yes:
        fail("--select cannot be combined with --yes.")
    if not model.strip() and not yes and (json_ or not interactive()):
        fail("Name the model to download: lms get <search words | owner/repo> (-y takes the most downloaded one).")
    formats = [f for f, on in (("gguf", gguf), ("mlx", mlx)) if on] or None
    try:
        target = parse_target(model, os.environ.get("HF_ENDPOINT"))
    except HubError as exc:
        fail(exc.message)
    client = ensure_daemon()
    try:
        repo_id = target.repo_id or _search(client, target.query, formats, yes, json_)
        repo = client.post("/lms/hub/variants", {"repo_id": repo_id, "formats": formats, **_hub_options()})
    except DaemonError as exc:
        fail(str(exc))
    variant = _pick_variant(repo, target.quant, target.filename, select, yes or json_)
    key = _model_key(repo["repo_id"], variant, len(repo["variants"]))
    if variant["downloaded"]:
        if json_:
            return print_json({"status": "already_downloaded", "model": repo["repo_id"], "variant": variant["name"],
                               "modelKey": key})
        info(f"Model already downloaded. To use, run:\n  lms load {key}")
        info(f"(lms get {repo['repo_id']} --select picks another variant)")
        return
    size = file_size(variant["size_bytes"])
    if not json_:
        info(f"↓ To download: {repo['repo_id']} {variant['name']} [{variant['format'].upper()}] - {size}")
        if not variant["fits"]:
            info("  This variant is larger than the memory available now: it may not load.")
        if yes or not interactive():
            info(f"Resolution completed. Downloading {size}...")
        elif not typer.confirm(f"About to download {size}. Start download?", default=True, err=True):
            return
    try:
        job = client.post("/lms/downloads", {"model": repo["repo_id"], "variant": variant["name"],
                                             "formats": formats, **_hub_options()})
    except DaemonError as exc:
        fail(str(exc))
    if job["status"] == "downloading" and job["downloaded_bytes"] and not json_:
        info("This download is already in progress.")
    job = _follow(client, job, quiet=json_)
    if json_:
        print_json({**job, "modelKey": key})
    if job["status"] == "failed":
        fail(job["error"])
    if job["status"] in ("completed", "already_downloaded") and not json_:
        info(f"Download completed. To use, run:\n  lms load {key}")


def _follow(client, job: dict, quiet: bool) -> dict:
    """Show the job's progress until it ends; Ctrl+C asks whether it goes on in the background."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (SpinnerColumn(), BarColumn(), TaskProgressColumn(), TextColumn("|"), DownloadColumn(), TextColumn("|"),
               TransferSpeedColumn(), TextColumn("| ETA"), TimeRemainingColumn())
    progress = Progress(*columns, console=Console(stderr=True), disable=quiet, transient=True)
    task = progress.add_task("download", total=job["total_size_bytes"], completed=job["downloaded_bytes"])
    try:
        with progress:
            while job["status"] == "downloading":
                time.sleep(0.25)
                job = client.get(f"/lms/downloads/{job['job_id']}")
                progress.update(task, completed=job["downloaded_bytes"])
    except (OSError, http.client.HTTPException):  # the daemon went away under us
        fail(f"The lms daemon stopped during the download. What was fetched is kept: `lms get {job['model']}` "
             "resumes it.")
    except KeyboardInterrupt:
        if not interactive() or typer.confirm("\nContinue to download in the background?", default=True, err=True):
            info(f"The download goes on in the background; `lms get {job['model']}` follows it again.")
            raise typer.Exit(0) from None
        job = client.post(f"/lms/downloads/{job['job_id']}/cancel")
        info("Download cancelled. What was fetched is kept: lms get resumes from there.")
        raise typer.Exit(1) from None
    return job


def rm(
    model: Annotated[str, typer.Argument(help="The model (its key, or a variant key for one variant) to delete.")],
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")] = False,
    json_: JsonFlag = False,
):
    """Delete a downloaded model from disk. A loaded model is not removed: unload it first."""
    from lms.client import DaemonError, ensure_daemon

    client = ensure_daemon()
    try:
        entry = client.post("/lms/resolve", {"model": model})
    except DaemonError as exc:
        fail(str(exc))
    target = model if "@" in model else entry["modelKey"]
    if not yes and not json_:
        if not interactive():
            fail(f"Removing {target} needs confirmation: run lms rm {model} -y")
        if not typer.confirm(f"Delete {target} from disk?", default=False, err=True):
            return
    try:
        result = client.post("/lms/models/remove", {"model": target})
    except DaemonError as exc:
        fail(str(exc))
    if json_:
        return print_json(result)
    info(f"Removed {target} ({len(result['removed'])} file{'s' if len(result['removed']) != 1 else ''}).")


def register(app: typer.Typer) -> None:
    app.command("get")(get)
    app.command("rm")(rm)
