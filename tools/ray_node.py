"""A Ray node for tests and benchmarks: `ray start --block` as a child process (a head, or a node joining one),
stopped by its PID and those of the processes it started (never `ray stop`, which stops every Ray process on the
machine)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


class RayNode:
    def __init__(self, *args: str, env: dict | None = None, prefix: Sequence[str] = ()):
        """`prefix` runs the node through another command, e.g. `ip netns exec NAMESPACE` for a node on a host
        of its own (tools/netns.py; give it `--node-ip-address` too)."""
        self.temp = tempfile.mkdtemp(prefix="lr", dir="/tmp")  # Ray's socket paths must stay short
        self.process = subprocess.Popen([*prefix, RAY, "start", "--block", "--disable-usage-stats", "--temp-dir",
                                         self.temp, "--object-store-memory", "80000000", *args], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    @classmethod
    def head(cls, port: int, cpus: int = 2, *, node_ip: str | None = None, prefix: Sequence[str] = ()) -> RayNode:
        address = ("--node-ip-address", node_ip) if node_ip else ()
        return cls("--head", "--port", str(port), "--num-cpus", str(cpus), "--include-dashboard=false", *address,
                   prefix=prefix)

    def processes(self) -> list:
        """Every process of this node: the `ray start` process and its tree (raylet, workers, replicas), and,
        since Ray's workers rename themselves and its servers may leave the tree, every process that names the
        node's own temporary folder on its command line."""
        import psutil

        try:
            tree = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error, TypeError):
                if self.temp in " ".join(process.info["cmdline"] or ()) and process not in tree:
                    tree.append(process)
        return tree

    def owns(self, pid: int) -> bool:
        """Whether the process runs on this node (a replica's PID, say)."""
        return pid in {process.pid for process in self.processes()}

    def kill(self) -> None:
        """The node dies at once, as a machine that loses power: SIGKILL to every process of it, raylet first
        (nothing is told; the head finds out by its health checks). `stop` still cleans up after it."""
        import psutil

        tree = self.processes()
        tree.sort(key=lambda process: 0 if "raylet" in " ".join(_cmdline(process)) else 1)
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    def stop(self) -> None:
        import psutil

        tree = self.processes()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(20)
        for process in [*tree, *self.processes()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.process.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except Exception:  # noqa: BLE001 - gone, or not ours to read
        return []


def wait_for_nodes(address: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.count("node_") >= count:
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster at {address} did not come up with {count} nodes")
