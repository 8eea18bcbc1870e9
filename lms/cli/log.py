"""lms log stream: watch what the models are asked and answer, and what the server and runtime log."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated

import typer

from lms.cli.output import fail, info

log_app = typer.Typer(help="Watch the logs of the models, the server and the runtime.", no_args_is_help=True)


def _print_human(event: dict, stats: bool) -> None:
    data = event["data"]
    kind = data["type"]
    if kind == "server.log":
        print(data["content"])
        return
    if kind == "log.dropped":
        info(f"({data['count']} events were dropped: this reader fell behind)")
        return
    stamp = datetime.fromtimestamp(event["timestamp"] / 1000).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"timestamp: {stamp}", f"type: {kind}"]
    if kind == "runtime.log":
        lines.append(f"{data['level']}: {data['message']}")
    else:
        lines.append(f"modelIdentifier: {data['modelIdentifier']}")
        if kind == "llm.prediction.input":
            lines += [f"modelPath: {data['modelPath']}", f"input: {data['input']}"]
        else:
            lines.append(f"output: {data['output']}")
            if stats:
                lines += [f"{k}: {v}" for k, v in data["stats"].items() if v is not None] or ["No stats available"]
    print("\n".join(lines) + "\n\n", flush=True)


@log_app.command("stream")
def stream(
    source: Annotated[str, typer.Option("-s", "--source", help="model, server or runtime.")] = "model",
    filter_: Annotated[str | None, typer.Option("--filter", help="Model events: input, output or input,output.")]
    = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Show prediction statistics with model output.")] = False,
):
    """Stream log events as they happen (Ctrl+C to stop)."""
    from lms.client import DaemonError, ensure_daemon

    if source not in ("model", "server", "runtime"):
        fail("--source must be model, server or runtime.")
    query = f"source={source}" + (f"&filter={filter_}" if filter_ else "")
    info("Streaming logs from LM Studio")
    try:
        for event in ensure_daemon().stream_lines(f"/lms/log/stream?{query}", {}):
            if event["data"]["type"] == "log.subscribed":
                continue
            if json_:
                sys.stdout.write(json.dumps(event) + "\n")
                sys.stdout.flush()
            else:
                _print_human(event, stats)
    except KeyboardInterrupt:
        return
    except DaemonError as exc:
        fail(str(exc))


def register(app: typer.Typer) -> None:
    app.add_typer(log_app, name="log")
