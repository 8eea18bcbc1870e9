"""The overhead of a Ray Serve replica against a local worker, same model, same machine, in one run: streamed
decode tok/s and time to first token through /v1/chat/completions, alternating the two over the rounds. Both share
this machine's cores, so no speedup is expected: the figure is what the cluster path costs (the handle, Ray's
object transfer of each event). Target (issue 18): decode ratio >= 0.9.

    python bench/cluster.py       (also part of `make bench` when ray[serve] is installed)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _common as common  # noqa: E402
from lms.store.catalog import BUNDLED_KEY  # noqa: E402
from tools.ray_node import RayNode, wait_for_nodes  # noqa: E402

TOKENS = 128
ROUNDS = 3


def _stream(port: int, model: str, seed: str) -> tuple[float, float]:
    return common.streamed_chat(port, model, common.story(seed), TOKENS)


def measure() -> dict:
    port = common.free_port()
    head = RayNode.head(port)
    home = common.temp_folder("lms-bench-cluster-")
    env = common.lms_env(home, LMS_THREADS=str(common.threads()))

    def lms(*args: str) -> str:
        return common.lms_cli(env, *args)

    try:
        wait_for_nodes(f"127.0.0.1:{port}", 1)
        lms("server", "start", "-p", "0")
        api = common.server_port(env)
        lms("cluster", "connect", f"127.0.0.1:{port}")
        lms("load", BUNDLED_KEY, "--identifier", "replica", "--replicas", "1", "--parallel", "1", "-y")
        lms("load", BUNDLED_KEY, "--identifier", "local", "--parallel", "1", "-y")
        _stream(api, "local", "warm"), _stream(api, "replica", "warm")
        local, remote = [], []
        for round_ in range(ROUNDS):
            local.append(_stream(api, "local", f"local {round_}"))
            remote.append(_stream(api, "replica", f"replica {round_}"))
    finally:
        common.daemon_down(env)
        head.stop()
    local_speed, remote_speed = (statistics.median(s for _t, s in runs) for runs in (local, remote))
    local_ttft, remote_ttft = (statistics.median(t for t, _s in runs) for runs in (local, remote))
    return {"local_tokens_per_second": local_speed, "replica_tokens_per_second": remote_speed,
            "ratio": remote_speed / local_speed, "local_ttft": local_ttft, "replica_ttft": remote_ttft,
            "local": local, "replica": remote}


def rows(result: dict) -> list[tuple[str, str, str]]:
    return [("cluster: decode tok/s, local worker", f"{result['local_tokens_per_second']:.1f}", ""),
            ("cluster: decode tok/s, Ray Serve replica", f"{result['replica_tokens_per_second']:.1f}", ""),
            ("cluster: decode ratio replica / local", f"{result['ratio']:.3f}", ">= 0.9"),
            ("cluster: TTFT ms, local worker", f"{result['local_ttft'] * 1000:.0f}", ""),
            ("cluster: TTFT ms, Ray Serve replica", f"{result['replica_ttft'] * 1000:.0f}", "")]


if __name__ == "__main__":
    common.print_rows(rows(measure()), 45, 10)
