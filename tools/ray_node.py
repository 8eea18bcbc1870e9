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
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


class RayNode:
    def __init__(self, *args: str, env: dict | None = None):
        self.temp = tempfile.mkdtemp(prefix="lr", dir="/tmp")  # Ray's socket paths must stay short
        self.process = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", "--temp-dir", self.temp,
                                         "--object-store-memory", "80000000", *args], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    @classmethod
    def head(cls, port: int, cpus: int = 2) -> RayNode:
        return cls("--head", "--port", str(port), "--num-cpus", str(cpus), "--include-dashboard=false")

    def stop(self) -> None:
        import psutil

        try:
            tree = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(20)
        # Ray's workers rename themselves and its servers may leave the tree: what is left goes by PID, and by the
        # node's own temporary folder, which every process of this node names on its command line.
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error, TypeError):
                if self.temp in " ".join(process.info["cmdline"] or ()):
                    tree.append(process)
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.process.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


def wait_for_nodes(address: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run([RAY, "status", "--address", address], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.count("node_") >= count:
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster at {address} did not come up with {count} nodes")
