"""lms ls, ps, load, unload, import."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from lms.cli.output import ask_choice, fail, file_size, info, interactive, print_json, short_ttl, table, warn

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]


def ls(
    model_key: Annotated[str | None, typer.Argument(help="List the variants of this model.")] = None,
    llm: Annotated[bool, typer.Option("--llm", help="Only language models.")] = False,
    embedding: Annotated[bool, typer.Option("--embedding", help="Only embedding models.")] = False,
    variants: Annotated[bool, typer.Option("--variants", help="Show every variant of multi-variant models.")] = False,
    json_: JsonFlag = False,
):
    """List the models you have downloaded (and the model files that cannot be read, with the reason)."""
    from lms.cli.fast import load_defaults_of, ls_json, unreadable_models
    from lms.client import ensure_daemon

    if model_key and variants:
        fail("Cannot combine a model key argument with --variants.")
    if json_ and not model_key:
        return ls_json({"llm", "embedding"} if llm == embedding else {"llm"} if llm else {"embedding"}, variants)
    client = ensure_daemon()
    entries = client.get("/lms/models")
    unreadable = unreadable_models(client)
    if json_:
        defaults = load_defaults_of(client)
        for entry in entries:
            entry["loadDefaults"] = defaults.get(entry["modelKey"], {})
    if model_key:
        wanted = model_key.lower()
        entries = [e for e in entries + unreadable if e["modelKey"] == wanted] or [
            e for e in entries + unreadable if wanted in e["modelKey"]]
        if not entries:
            fail(f"No model found matching '{model_key}'.")
        if json_:
            print_json(entries)
            return
        info(f"Listing variants for {entries[0]['modelKey']}:")
        print(_variant_table(entries))
        return
    total = len({e["modelKey"] for e in entries})
    kinds = {k for k, on in (("llm", llm), ("embedding", embedding)) if on} or {"llm", "embedding"}
    shown = [e for e in entries if e["type"] in kinds]
    selected = [e for e in shown if e.get("selectedVariant", e["variantKey"]) == e["variantKey"]]
    bad = [] if llm or embedding else unreadable  # an unreadable file's type is not known
    if not entries and not unreadable:
        print("You have not downloaded any models yet.")
        return
    if not selected and not bad:
        print(f"You have {total} models, but none of them match the filter.")
        return
    disk = sum(e["sizeBytes"] for e in entries)
    print(f"\nYou have {total} models, taking up {file_size(disk)} of disk space.\n")
    for kind, title in (("llm", "LLM"), ("embedding", "EMBEDDING")):
        rows = []
        for entry in (e for e in selected if e["type"] == kind):
            count = len(entry.get("variants") or [])
            name = entry["modelKey"] + (f" ({count} variants)" if count > 1 else "")
            rows.append([name, entry.get("paramsString") or "", entry.get("architecture") or "",
                         file_size(entry["sizeBytes"]), _device(entry), _loaded_mark(entry["loadedInstances"])])
            if variants and count > 1:
                for variant in (v for v in shown if v["modelKey"] == entry["modelKey"]):
                    mark = " * " if variant["variantKey"] == entry["selectedVariant"] else "   "
                    rows.append([mark + variant["variantKey"], variant.get("paramsString") or "",
                                 variant.get("architecture") or "", file_size(variant["sizeBytes"]), "Local", ""])
        if rows:
            print(table([title, "PARAMS", "ARCH", "SIZE", "DEVICE", ""], rows))
            print()
    if bad:
        rows = [[f"✗ {b['modelKey']}", b["path"], file_size(b["sizeBytes"]), b["error"]] for b in bad]
        print(table(["UNREADABLE (cannot be loaded)", "PATH", "SIZE", "REASON"], rows))
        print()


def _device(info: dict) -> str:
    """Where a model runs: this machine, the Ray cluster, or an upstream server (named by its publisher)."""
    if info.get("format") == "upstream":
        return f"Upstream ({info['publisher']})"
    return "Cluster" if info.get("location") == "cluster" else "Local"


def _loaded_mark(count: int) -> str:
    return "" if not count else "✓ LOADED" if count == 1 else f"✓ LOADED ({count})"


def _variant_table(entries: list[dict]) -> str:
    rows = [[e["variantKey"], "✗ UNREADABLE: " + e["error"] if e.get("unreadable") else
             (e.get("quantization") or {}).get("name") or "", file_size(e["sizeBytes"]), e["path"]] for e in entries]
    return table(["VARIANT", "QUANT", "SIZE", "PATH"], rows)


def ps(json_: JsonFlag = False):
    """List the models loaded in memory."""
    from lms.client import ensure_daemon

    if json_:
        from lms.cli.fast import ps_json

        return ps_json()
    loaded = ensure_daemon().get("/lms/ps")
    if not loaded:
        info("No models are currently loaded.\n\nTo load a model, run: lms load <model path>")
        return
    now = time.time() * 1000
    rows = []
    for m in loaded:
        ttl = ""
        if m["ttlMs"]:
            remaining = m["ttlMs"] - (now - m["lastUsedTime"]) if m["lastUsedTime"] else m["ttlMs"]
            ttl = f"{short_ttl(remaining / 1000)} / {short_ttl(m['ttlMs'] / 1000)}"
        rows.append([m["identifier"], m["modelKey"], m["status"].upper(), file_size(m["sizeBytes"]),
                     str(m["contextLength"]), str(m["parallel"] or "-"), _device(m), ttl])
    print(table(["IDENTIFIER", "MODEL", "STATUS", "SIZE", "CONTEXT", "PARALLEL", "DEVICE", "TTL"], rows))


def _model_to_load(client, model_key: str | None, yes: bool) -> str:
    """The key as given when it names a downloaded model; else, for a person at a terminal, the one they pick."""
    from lms.client import DaemonError

    if model_key is not None:
        if yes or not interactive():
            return model_key  # nobody to ask: the load itself says when the key names nothing
        try:
            client.post("/lms/resolve", {"model": model_key})
            return model_key
        except DaemonError as exc:
            if exc.status != 404:
                fail(str(exc))
        warn(f"Cannot find a model matching the provided model key ({model_key}). Please select one from the list "
             "below.")
    elif not interactive():
        fail("Name the model to load: lms load <model-key> (lms ls lists them).")
    # one line per variant where a model has several (the key then names the variant)
    choices = sorted((m["variantKey"] if m.get("variants") else m["modelKey"], m.get("sizeBytes"))
                     for m in client.get("/lms/models"))
    if not choices:
        fail("You have no models yet: download one with lms get.")
    for number, (key, size) in enumerate(choices, 1):
        info(f"{number:>3}. {key} ({file_size(size)})")
    return choices[ask_choice("Select a model to load", len(choices))][0]


def load(
    model_key: Annotated[str | None, typer.Argument(
        help="The model to load: its key, a variant key or a unique part of it. At a terminal, leave it out (or "
             "name none that matches) to pick from the downloaded models.")] = None,
    identifier: Annotated[str | None, typer.Option("--identifier", help="The identifier to serve it as.")] = None,
    context_length: Annotated[str | None, typer.Option(
        "-c", "--context-length", help="Context length in tokens, or max: the longest that fits the memory "
                                       "guardrails.")] = None,
    ttl: Annotated[int | None, typer.Option("--ttl", min=1, help="Unload after this many idle seconds.")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="GPU offload: off, max or a ratio 0..1 (this machine has "
                                                          "no GPU: everything runs on the CPU).")] = None,
    parallel: Annotated[int | None, typer.Option(
        "--parallel", min=1, help="Predictions the model runs at once, batched (default 4; each has the whole "
                                  "context, so KV-cache memory grows with it).")] = None,
    draft_model: Annotated[str | None, typer.Option(
        "--speculative-draft-model", help="Speculative decoding: a smaller model with the same vocabulary that "
                                          "drafts tokens for this one to check.")] = None,
    speculative: Annotated[str | None, typer.Option(
        "--speculative", help="ngram: speculative decoding with drafts taken from the prompt and the text so far "
                              "(no draft model; fast when the answer repeats its input, as in edits); off: none. "
                              "llama.cpp models.")] = None,
    draft_max_tokens: Annotated[int | None, typer.Option(
        "--speculative-draft-max-tokens", min=1, help="Tokens the draft model proposes per step (default 8).")] = None,
    draft_min_probability: Annotated[float | None, typer.Option(
        "--speculative-draft-min-probability", min=0.0, max=1.0,
        help="The draft stops proposing when its top token's probability falls below this (0..1; default 0).")]
    = None,
    kv_cache_type: Annotated[str | None, typer.Option(
        "--kv-cache-type", help="K and V cache type: f16 (default), q8_0 (about half the memory) or q4_0 (about a "
                                "quarter); quantized ones turn flash attention on. llama.cpp models.")] = None,
    flash_attention: Annotated[str | None, typer.Option(
        "--flash-attention", help="on, off or auto (default: llama.cpp decides). llama.cpp models.")] = None,
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", min=1, help="Tokens per decode step (llama.cpp's n_batch; default 512).")] = None,
    replicas: Annotated[int | None, typer.Option(
        "--replicas", min=1, help="Load it on the connected Ray cluster (lms cluster connect) as this many "
                                  "replicas, on the nodes Ray picks.")] = None,
    max_replicas: Annotated[int | None, typer.Option(
        "--max-replicas", min=1, help="With --replicas: scale up to this many replicas when requests queue, and "
                                      "back down when idle.")] = None,
    estimate_only: Annotated[bool, typer.Option("--estimate-only", help="Print the memory the model would need "
                                                                        "and whether it may load; load nothing.")]
    = False,
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Answer yes to every question.")] = False,
    json_: JsonFlag = False,
):
    """Load a model into memory (this machine's, or the Ray cluster's with --replicas)."""
    from rich.console import Console

    from lms.client import DaemonError, ensure_daemon

    ratio = _gpu_ratio(gpu) if gpu is not None else None
    context = _context_length(context_length)
    for flag, value, allowed in (("--kv-cache-type", kv_cache_type, ("f16", "q8_0", "q4_0")),
                                 ("--speculative", speculative, ("ngram", "off")),
                                 ("--flash-attention", flash_attention, ("on", "off", "auto"))):
        if value is not None and value not in allowed:
            fail(f"{flag} must be {', '.join(allowed[:-1])} or {allowed[-1]}.")
    client = ensure_daemon()
    model_key = _model_to_load(client, model_key, yes)
    if estimate_only:
        try:
            plan = client.post("/lms/estimate", {"model": model_key, "context_length": context,
                                                 "gpu_ratio": ratio, "parallel": parallel,
                                                 "kv_cache_type": kv_cache_type, "batch_size": batch_size,
                                                 "flash_attention": flash_attention})
        except DaemonError as exc:
            fail(str(exc))
        return print_json(plan) if json_ else _print_estimate(plan)
    body = {"model": model_key, "identifier": identifier, "context_length": context, "ttl": ttl,
            "parallel": parallel, "draft_model": draft_model, "draft_max_tokens": draft_max_tokens,
            "replicas": replicas, "max_replicas": max_replicas, "stream": True}
    extra = {"draft_min_probability": draft_min_probability, "kv_cache_type": kv_cache_type,
             "speculative": speculative,
             "flash_attention": flash_attention, "batch_size": batch_size, "gpu": gpu if gpu in ("off", "max")
             else ratio}
    body.update({k: v for k, v in extra.items() if v is not None})  # an older daemon takes a load without them
    console = Console(stderr=True)
    started = time.perf_counter()
    loaded = None
    try:
        with console.status(f"Loading {model_key}", spinner="dots") as spinner:
            for event in client.stream_lines("/lms/load", body):
                if "progress" in event:
                    spinner.update(f"Loading {model_key} {event['progress'] * 100:.0f}%")
                elif "error" in event:
                    fail(event["error"]["message"])
                else:
                    loaded = event["loaded"]
    except KeyboardInterrupt:
        info("Load cancelled.")
        raise typer.Exit(1) from None
    if loaded is None:
        fail("The daemon ended the load without an answer.")
    from lms.cli.fast import report_load

    report_load(loaded, time.perf_counter() - started, json_)


def _context_length(value: str | None) -> int | str | None:
    if value is None or value == "max":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        fail("--context-length must be a positive number of tokens or max.")
    return number


def _gpu_ratio(value: str | None) -> float:
    if value is None or value == "off":
        return 0.0
    if value == "max":
        return 1.0
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        fail("--gpu must be off, max or a number from 0 to 1.")
    return ratio


def _print_estimate(plan: dict) -> None:
    from lms.cli.output import memory_size

    memory = plan["memory"]
    info(f"Model: {plan['model']}")
    info(f"Context Length: {plan['contextLength']:,}")
    if plan.get("contextLengthChosen"):
        info(plan["contextLengthChosen"][0].upper() + plan["contextLengthChosen"][1:] + ".")
    if plan.get("kvCacheType", "f16") != "f16":
        info(f"KV Cache: {plan['kvCacheType']}")
    if plan.get("parallel", 1) > 1:
        info(f"Parallel: {plan['parallel']} (each with the whole context)")
    if plan["gpuRatio"]:
        info(f"GPU Offload: {plan['gpuRatio'] * 100:.0f}% requested; no GPU on this machine: CPU only")
    info(f"Estimated GPU Memory:   {memory_size(memory['totalVramBytes'])}")
    info(f"Estimated Total Memory: {memory_size(memory['totalBytes'])}")
    info("")
    verdict = "may be loaded" if plan["passesGuardrails"] else "will fail to load"
    info(f"Estimate: This model {verdict} based on your resource guardrails settings.")


def unload(
    identifier: Annotated[str | None, typer.Argument(help="The identifier of the model to unload.")] = None,
    all_: Annotated[bool, typer.Option("-a", "--all", help="Unload every loaded model.")] = False,
    json_: JsonFlag = False,
):
    """Unload a model from memory."""
    from lms.client import ensure_daemon

    if all_ and identifier:
        fail("Invalid Usage: --all cannot be combined with an identifier.")
    client = ensure_daemon()
    if all_:
        for model in client.get("/lms/ps"):
            info(f'Unloading "{model["identifier"]}"...')
        unloaded = client.post("/lms/unload", {"all": True})["unloaded"]
        if json_:
            print_json(unloaded)
        elif not unloaded:
            info("No models to unload.")
        else:
            info(f"Unloaded {len(unloaded)} model{'s' if len(unloaded) != 1 else ''}.")
        return
    if identifier is None:
        loaded = client.get("/lms/ps")
        if not loaded:
            fail('You don\'t have any models loaded. Use "lms load" to load a model.')
        chosen = 0
        if len(loaded) > 1:
            if not interactive():
                fail("Several models are loaded: name one (see lms ps), or use --all to unload them all.")
            for number, model in enumerate(loaded, 1):
                info(f"{number:>3}. {model['identifier']}")
            chosen = ask_choice("Select a model to unload", len(loaded))
        identifier = loaded[chosen]["identifier"]
    from lms.client import DaemonError

    try:
        client.post("/lms/unload", {"identifier": identifier})
    except DaemonError as exc:
        if exc.status == 404:
            fail(f'Model Not Found: no loaded model has the identifier "{identifier}". '
                 "To see a list of loaded models, run: lms ps")
        raise
    if json_:
        print_json([identifier])
    else:
        info(f'Model "{identifier}" unloaded.')


def import_(
    file_path: Annotated[Path, typer.Argument(help="The GGUF file to import.")],
    user_repo: Annotated[str | None, typer.Option("--user-repo", help="Put it under models/<user>/<repo>.")] = None,
    copy: Annotated[bool, typer.Option("-c", "--copy", help="Copy the file instead of moving it.")] = False,
    hard_link: Annotated[bool, typer.Option("-L", "--hard-link", help="Create a hard link.")] = False,
    symbolic_link: Annotated[bool, typer.Option("-l", "--symbolic-link", help="Create a symbolic link.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would happen; change nothing.")] = False,
    yes: Annotated[bool, typer.Option("-y", "--yes", help="Guess user/repo from the file name; do not ask.")] = False,
    json_: JsonFlag = False,
):
    """Import a model file into the models folder (moves it unless told otherwise)."""
    from lms.store.importer import ImportError_, plan_import, run_import

    if sum((copy, hard_link, symbolic_link)) > 1:
        fail("Choose at most one of --copy, --hard-link and --symbolic-link.")
    mode = "copy" if copy else "hard-link" if hard_link else "symbolic-link" if symbolic_link else "move"
    try:
        plan = plan_import(file_path, user_repo, mode)
    except ImportError_ as exc:
        fail(str(exc))
    result = {"source": str(plan.source), "target": str(plan.target), "mode": mode, "dryRun": dry_run}
    if dry_run:
        if json_:
            return print_json(result)
        info(plan.describe(future=True))
        info("But not actually doing it because of --dry-run")
        return
    if mode == "move" and not yes and not json_:
        warn("lms import moves the file (use --copy, --hard-link or --symbolic-link to keep the original).")
    run_import(plan)
    if json_:
        print_json(result)
    else:
        info(plan.describe(future=False))


def register(app: typer.Typer) -> None:
    app.command("ls")(ls)
    app.command("ps")(ps)
    app.command("load")(load)
    app.command("unload")(unload)
    app.command("import")(import_)
