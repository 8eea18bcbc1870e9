"""Separate hosts on one machine, for tests: each host is a network namespace with its own address, ports and
loopback, and a bridge in the root namespace joins them as one private network, with the root namespace on it too
(at the bridge's address). A process started in a host (`Network.prefix`, `Network.popen`) sees only that host's
network, as on a machine of its own; the filesystem and the process table stay shared.

Each network has its own /24 (10.213.N.0/24: the root namespace is .1, the hosts .11, .12, ...) and its own names
(bridge `lmsbrN`, namespaces `lmsN-HOST`, the root side of each veth pair `lmsN-HOST`), N picked free for this run, so
concurrent runs do not collide. The bridge's alias names the process that made it; a network whose maker is gone (a
run that crashed) is torn down by the next one. `close()` kills every process in each namespace and deletes the
veths, the namespaces and the bridge; it also runs at interpreter exit.

`PidNamespace` gives a host that stays in the root network namespace (the bridge's address) a process table of its
own, for programs that look for their "local" processes (a Ray driver looks for its node's raylet); everything in
it dies with it, and it dies with the process that made it, however that ends.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip` (util-linux's unshare and nsenter for
`PidNamespace`); `unavailable_reason()` says why not, if not. `python -m tools.netns sweep` tears down what crashed
runs left behind."""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

IP = shutil.which("ip") or "/usr/sbin/ip"
NETWORK = "10.213"  # 10.213.N.0/24, one N per network
ALIAS = "lms-netns owner="
_BRIDGE = re.compile(r"^lmsbr(\d+)$")
_NAMESPACE = re.compile(r"^lms(\d+)-[a-z0-9]+$")
_HOST = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # the veth's name must fit in 15 characters


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {(result.stderr or result.stdout).strip()}")
    return result


def unavailable_reason(pid_namespaces: bool = False) -> str | None:
    """Why network namespaces (and, asked, PID namespaces) cannot be made here (None when they can): tried by making
    a throwaway namespace and bridge, and deleting them."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "not a POSIX system"
    if os.geteuid() != 0:
        return "not running as root"
    if not os.path.exists(IP):
        return "iproute2's `ip` is not installed"
    probe = f"lmsprobe{os.getpid() % 10_000_000}"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` is not permitted: {made.stderr.strip()}"
        _ip("netns", "del", probe, check=False)
        bridge = f"lmsp{os.getpid() % 10_000_000}"
        made = _ip("link", "add", bridge, "type", "bridge", check=False)
        if made.returncode != 0:
            return f"a bridge cannot be made: {made.stderr.strip()}"
        _ip("link", "del", bridge, check=False)
        if pid_namespaces:
            if not shutil.which("unshare") or not shutil.which("nsenter"):
                return "util-linux's unshare and nsenter are not installed"
            made = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True,
                                  text=True, timeout=30)
            if made.returncode != 0:
                return f"a PID namespace cannot be made: {made.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip` failed: {exc}"
    return None


def available() -> bool:
    return unavailable_reason() is None


def namespace_pids(namespace: str) -> list[int]:
    result = _ip("netns", "pids", namespace, check=False)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()] if result.returncode == 0 else []


def kill_namespace(namespace: str, first: str = "raylet", timeout: float = 10) -> list[int]:
    """SIGKILL every process in the namespace, those whose program's name contains `first` before the others, and
    again until none is left (a dying parent may still have started one): the PIDs killed."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while (pids := namespace_pids(namespace)) and time.monotonic() < deadline:
        pids.sort(key=lambda pid: 0 if first and first in os.path.basename(_cmdline(pid).split(" ")[0]) else 1)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.1)
    return killed


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _bridges() -> dict[int, str]:
    """N -> the alias of each bridge `lmsbrN` in the root namespace."""
    found: dict[int, str] = {}
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        parts = line.split(":", 2)
        name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        if match := _BRIDGE.match(name):
            alias = re.search(r"alias (.*)$", line)
            found[int(match.group(1))] = alias.group(1).strip() if alias else ""
    return found


def namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.split()]


def _teardown(number: int, namespaces: Sequence[str]) -> None:
    for namespace in namespaces:
        kill_namespace(namespace)
        _ip("netns", "del", namespace, check=False)  # takes its end of the veth pair, and so the pair, with it
        _ip("link", "del", namespace, check=False)  # the root side, were it still there
    _ip("link", "del", f"lmsbr{number}", check=False)


def sweep_stale() -> list[int]:
    """Tear down the networks of runs that are gone (a bridge whose maker's PID is dead, or namespaces of ours
    without their bridge, which a live run never leaves): the numbers swept."""
    bridges = _bridges()
    by_number: dict[int, list[str]] = {}
    for namespace in namespaces():
        if match := _NAMESPACE.match(namespace):
            by_number.setdefault(int(match.group(1)), []).append(namespace)
    swept = []
    for number in sorted(set(bridges) | set(by_number)):
        alias = bridges.get(number)
        if alias is not None:
            owner = alias[len(ALIAS):] if alias.startswith(ALIAS) else ""
            if not owner.isdigit() or _alive(int(owner)):
                continue  # a live run's, or not one of ours
        _teardown(number, by_number.get(number, []))
        swept.append(number)
    return swept


class Network:
    """Hosts (network namespaces) on a bridge; use as a context manager, or call close()."""

    def __init__(self, hosts: Sequence[str] = ("h1", "h2")):
        if len(hosts) > 100 or len(set(hosts)) != len(hosts) or not all(_HOST.match(h) for h in hosts):
            raise ValueError("hosts: up to 100 distinct names of 1-8 lowercase letters and digits")
        sweep_stale()
        self.number = self._claim()
        self.bridge = f"lmsbr{self.number}"
        self.gateway = f"{NETWORK}.{self.number}.1"  # the root namespace, on the bridge
        self.hosts = list(hosts)
        self._made: list[str] = []
        self.closed = False
        atexit.register(self.close)
        try:
            _ip("link", "set", self.bridge, "alias", f"{ALIAS}{os.getpid()}")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for host in self.hosts:
                self._add(host)
        except BaseException:
            self.close()
            raise

    def _claim(self) -> int:
        """A free N: its bridge made by us (making it is the lock against a concurrent run)."""
        used = set(_bridges())
        addresses = _ip("-o", "-4", "addr", "show", check=False).stdout
        used |= {int(n) for n in re.findall(rf"inet {re.escape(NETWORK)}\.(\d+)\.", addresses)}
        free = [n for n in range(1, 255) if n not in used]
        random.shuffle(free)
        for number in free:
            if _ip("link", "add", f"lmsbr{number}", "type", "bridge", check=False).returncode == 0:
                return number
        raise RuntimeError(f"no free {NETWORK}.N.0/24 for a test network")

    def _add(self, host: str) -> None:
        namespace = self.namespace(host)
        _ip("netns", "add", namespace)
        self._made.append(namespace)
        _ip("link", "add", namespace, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", namespace, "master", self.bridge)
        _ip("link", "set", namespace, "up")
        _ip("-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")

    def namespace(self, host: str) -> str:
        return f"lms{self.number}-{host}"

    def address(self, host: str) -> str:
        return f"{NETWORK}.{self.number}.{11 + self.hosts.index(host)}"

    def prefix(self, host: str) -> list[str]:
        """The command prefix that runs a program in the host: `ip netns exec NAMESPACE`."""
        return [IP, "netns", "exec", self.namespace(host)]

    def run(self, host: str, command: Sequence[str], **options) -> subprocess.CompletedProcess:
        return subprocess.run([*self.prefix(host), *command], **options)

    def popen(self, host: str, command: Sequence[str], **options) -> subprocess.Popen:
        return subprocess.Popen([*self.prefix(host), *command], **options)

    def pids(self, host: str) -> list[int]:
        return namespace_pids(self.namespace(host))

    def kill(self, host: str) -> list[int]:
        """The host loses power: SIGKILL to every process in it (a raylet first), none told."""
        return kill_namespace(self.namespace(host))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        _teardown(self.number, self._made)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PidNamespace:
    """A process table of its own (`unshare --pid --fork --mount-proc`), for the processes of one more host that
    stays in the root network namespace: what runs in it (`prefix`) sees only its own processes in /proc, as on a
    machine of its own, and the others cannot be mistaken for its own. (A Ray driver picks its local node by
    looking for raylet processes; with one process table it would take another namespace's head for its own.)
    Its first process reaps orphans (a daemon that forked away), and `close()` kills it, and so, by the kernel,
    every process in the namespace; also at interpreter exit."""

    _REAPER = "import os, time\nwhile True:\n    try:\n        os.wait()\n    except ChildProcessError:\n" \
              "        time.sleep(0.2)\n"

    def __init__(self):
        import sys

        unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
        if not unshare or not nsenter:
            raise RuntimeError("util-linux's unshare and nsenter are needed for a PID namespace")
        # Killed with this process, however it ends (and with it, by --kill-child, the namespace and all in it).
        self.holder = subprocess.Popen([unshare, "--pid", "--fork", "--mount-proc", "--kill-child", sys.executable,
                                        "-c", self._REAPER], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=_die_with_parent)
        self.closed = False
        atexit.register(self.close)
        self.init = 0
        deadline = time.monotonic() + 10
        while not self.init and time.monotonic() < deadline and self.holder.poll() is None:
            self.init = next((int(pid) for pid in _children(self.holder.pid)), 0)
            time.sleep(0.02)
        if not self.init:
            self.close()
            raise RuntimeError("the PID namespace did not start")
        self.prefix = [nsenter, "--target", str(self.init), "--pid", "--mount", "--"]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        if self.init:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.init, signal.SIGKILL)  # the namespace's init: the kernel kills the rest
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait()

    def __enter__(self) -> PidNamespace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _die_with_parent() -> None:
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _children(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            return file.read().split()
    except OSError:
        return []


def main(argv: Sequence[str]) -> int:
    """`python -m tools.netns check|sweep`: whether namespaces can be made here; tear down stale networks."""
    if list(argv) == ["check"]:
        reason = unavailable_reason()
        print(reason or "network namespaces are available")
        return 1 if reason else 0
    if list(argv) == ["sweep"]:
        print(f"swept: {sweep_stale()}")
        return 0
    print("usage: python -m tools.netns check|sweep")
    return 2


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
