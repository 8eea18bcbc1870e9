"""Soak: issue #15 item 8's proof as figures. Every fault and load scenario of bench/faults.py against real daemons
with the bundled SmolLM2 (and the MiniLM embedding model, for the fuzz), one table at the end.

    python bench/soak.py            # the issue's sizes: 8 clients x 200 requests, 200 open streams, ...
    python bench/soak.py --quick    # small sizes, a few minutes
    python bench/soak.py --only fuzz,open_streams

Targets: fuzz 0 answers >= 500 and 0 dropped connections; kill -9 of a worker, of the daemon mid-stream,
mid-download and mid-write lose nothing stored and the daemon comes back; a full disk is a clean error with the
store intact; a corrupt db and a bad model file do not stop the daemon; a slow-drip image server and a hanging MCP
server are cut off at their deadlines; N clients x M mixed requests with hang-ups give 0 errors with memory within
10% of the start; /v1/models answers at p99 under 1 s while 200 streams are open. Exit status 1 when any is missed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from bench import faults  # noqa: E402

SCENARIOS = ("fuzz", "mixed_load", "open_streams", "slow_image", "hanging_mcp", "worker_kill", "daemon_kill",
             "store_kill", "download_kill", "disk_full", "corrupt_db", "bad_model")
MCP_CONNECT_SECONDS = 10.0  # the daemon's default mcp_connect_timeout_seconds: the deadline the soak holds it to


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--clients", type=int, help="mixed-load clients (default 8)")
    parser.add_argument("--requests", type=int, help="mixed requests per client (default 200; quick 20)")
    parser.add_argument("--streams", type=int, help="open streaming connections (default 200; quick 50)")
    parser.add_argument("--probes", type=int, help="/v1/models probes under the open streams (default 200)")
    parser.add_argument("--fuzz-cases", type=int, help="fuzz cases per endpoint (default 100; quick 10)")
    parser.add_argument("--write-kills", type=int, help="kill -9 rounds while responses are written (default 5)")
    parser.add_argument("--only", help=f"comma-separated scenarios among: {', '.join(SCENARIOS)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary LMS_HOMEs (for their logs)")
    args = parser.parse_args(argv)
    defaults = dict(clients=8, requests=20 if args.quick else 200, streams=50 if args.quick else 200,
                    probes=50 if args.quick else 200, fuzz_cases=10 if args.quick else 100,
                    write_kills=1 if args.quick else 5)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    unknown = args.only - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def run(args: argparse.Namespace, root: Path) -> list[faults.Outcome]:
    """Each scenario in turn; the ones that need no fresh installation share one served daemon."""
    from tools.minilm_gguf import ensure_minilm_gguf

    outcomes: list[faults.Outcome] = []

    def scenario(name: str, function, *call_args, **call_kwargs) -> None:
        if name not in args.only:
            return
        print(f"[soak] {name} ...", flush=True)
        started = time.monotonic()
        try:
            outcome = function(*call_args, **call_kwargs)
        except Exception as exc:  # a scenario that crashes is a missed target, and the others still run
            outcome = faults.Outcome(name, checks={"ran to the end": False},
                                     notes=[f"{type(exc).__name__}: {exc}", traceback.format_exc()[-1500:]])
        outcome.figures["wall_s"] = round(time.monotonic() - started, 1)
        print(f"[soak] {name}: {'PASS' if outcome.ok else 'FAIL'} {outcome.figures}", flush=True)
        outcomes.append(outcome)

    shared_names = {"fuzz", "mixed_load", "open_streams", "slow_image", "hanging_mcp", "worker_kill"}
    if args.only & shared_names:
        shared = faults.served(root / "shared", remote_mcp=True, vision=True, embedding=ensure_minilm_gguf(),
                               LMS_ALLOWED_FETCH_HOSTS="127.0.0.1",
                               LMS_MCP_CONNECT_TIMEOUT_SECONDS=str(MCP_CONNECT_SECONDS),
                               # every open stream must fit in the model's queue (the default bound is 64)
                               LMS_MAX_QUEUED_REQUESTS=str(max(64, args.streams + 8)))
        try:
            scenario("fuzz", faults.fuzz, shared, args.fuzz_cases)
            scenario("mixed_load", faults.mixed_load, shared, args.clients, args.requests)
            scenario("open_streams", faults.open_streams, shared, args.streams, args.probes)
            scenario("slow_image", faults.slow_image, shared)
            scenario("hanging_mcp", faults.hanging_mcp, shared, MCP_CONNECT_SECONDS)
            scenario("worker_kill", faults.worker_kill, shared)
        finally:
            shared.stop()
    for name, run, extra in (("daemon_kill", faults.daemon_kill, ()),
                             ("store_kill", faults.store_kill, (args.write_kills,))):
        if name in args.only:  # each kills its daemon: an installation of its own
            installation = faults.served(root / name.replace("_", "-"))
            try:
                scenario(name, run, installation, *extra)
            finally:
                installation.stop()
    scenario("download_kill", faults.download_kill, root / "download" / "home")
    scenario("disk_full", faults.disk_full, root / "disk-full")
    scenario("corrupt_db", faults.corrupt_db, root / "corrupt-db")
    scenario("bad_model", faults.bad_model, root / "bad-model")
    return outcomes


def table(outcomes: list[faults.Outcome]) -> str:
    """One row per scenario: its result, its figures, and the checks it missed (every check when it passed)."""
    width = max(len(o.scenario) for o in outcomes)
    lines = [f"{'scenario'.ljust(width)}  result  figures / checks", "-" * (width + 60)]
    for outcome in outcomes:
        figures = ", ".join(f"{k}={v}" for k, v in outcome.figures.items())
        lines.append(f"{outcome.scenario.ljust(width)}  {'PASS' if outcome.ok else 'FAIL':<6}  {figures}")
        for what, held in outcome.checks.items():
            lines.append(f"{''.ljust(width)}  {'':6}  {'ok  ' if held else 'MISS'} {what}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    root = common.temp_folder("lms-soak-")
    started = time.monotonic()
    try:
        outcomes = run(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    sizes = (f"{args.clients} clients x {args.requests} requests, {args.streams} streams, {args.probes} probes, "
             f"{args.fuzz_cases} fuzz cases per endpoint, {args.write_kills} write kills")
    print(f"\nsoak ({'quick' if args.quick else 'full'}: {sizes}) in {time.monotonic() - started:.0f} s\n")
    print(table(outcomes))
    missed = [o for o in outcomes if not o.ok]
    for outcome in missed:
        print(f"\n{outcome.scenario}: missed {outcome.failed}")
        for note in outcome.notes[:8]:
            print(f"    {note}")
    if args.keep:
        print(f"\nLMS_HOMEs kept under {root}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
