"""The CLI's client for the daemon's control socket; starts the daemon when a command needs it. With LMS_HOST
(`lms --host H`) it talks to a daemon on another machine instead, over that daemon's HTTP server with an admin
token (LMS_API_TOKEN, or the file named by LMS_API_TOKEN_FILE), and starts nothing.

It speaks HTTP over the unix socket with a small reader of its own (lms/unix_http.py): importing any full HTTP
client, even the standard library's, costs a large share of a whole `lms ps`.

Before anything is sent (requests carry HF_TOKEN), the socket must be a socket owned by this user and, where the
system tells (Linux), the process listening on it must run as this user: a socket another user made in its place
(the fallback path for a deep LMS_HOME is in the shared temp folder) gets nothing.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

from lms import config, unix_http


class DaemonError(Exception):
    """The daemon answered with an error (its message is meant for the user)."""

    def __init__(self, message: str, status: int = 0, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


def _not_ours(path: str, why: str) -> DaemonError:
    return DaemonError(f"Refusing to use the control socket {path}: {why}. Nothing was sent. If it is left over, "
                       "remove it; otherwise check LMS_HOME.", code="socket_not_owned")


def check_socket_owner(path: str) -> None:
    """The control socket is a socket and this user's own (not followed if it is a link)."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return  # connecting fails as it always did: no daemon
    if not stat.S_ISSOCK(status.st_mode):
        raise _not_ours(path, "it is not a socket")
    if status.st_uid != os.getuid():
        raise _not_ours(path, f"it belongs to user {status.st_uid}, not to you ({os.getuid()})")


def check_peer(sock: socket.socket, path: str) -> None:
    """The process that accepted the connection runs as this user (Linux: SO_PEERCRED)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    if uid != os.getuid():
        raise _not_ours(path, f"the process behind it runs as user {uid}, not as you ({os.getuid()})")


def _connect_unix(path: str, timeout: float | None) -> socket.socket:
    check_socket_owner(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        check_peer(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


def _raise_for(status: int, body: bytes) -> None:
    try:
        error = json.loads(body)["error"]
        raise DaemonError(error["message"], status, error.get("code"))
    except (ValueError, KeyError, TypeError):
        raise DaemonError(body.decode(errors="replace") or f"HTTP {status}", status) from None


class DaemonClient:
    def __init__(self, timeout: float | None = None, path: str | None = None):
        self.path = path or str(config.socket_path())
        self.timeout = timeout

    def _open(self, method: str, path: str, body: dict | None, timeout: float | None):
        """(what to close, the response) of one request."""
        sock = _connect_unix(self.path, timeout if timeout is not None else self.timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            response = unix_http.request(sock, method, path, payload, headers)
            return response, response  # closing the response closes the connection
        except BaseException:
            sock.close()
            raise

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        connection, response = self._open(method, path, body, timeout)
        try:
            data = response.read()
        finally:
            connection.close()
        if response.status >= 400:
            _raise_for(response.status, data)
        return json.loads(data)

    def get(self, path: str, timeout: float | None = None):
        return self._call("GET", path, timeout=timeout)

    def post(self, path: str, body: dict | None = None):
        return self._call("POST", path, body or {})

    def _raw_lines(self, path: str, body: dict) -> Iterator[bytes]:
        connection, response = self._open("POST", path, body, None)
        try:
            if response.status >= 400:
                _raise_for(response.status, response.read())
            yield from response
        finally:
            connection.close()

    def stream_lines(self, path: str, body: dict) -> Iterator[dict]:
        """POST and yield the objects of a newline-delimited JSON stream."""
        for raw in self._raw_lines(path, body):
            if raw.strip():
                yield json.loads(raw)

    def stream_events(self, path: str, body: dict) -> Iterator[dict]:
        """POST and yield the `data:` objects of a server-sent event stream."""
        for raw in self._raw_lines(path, body):
            line = raw.decode().rstrip("\r\n")
            if not line.startswith("data: "):
                continue
            if line[6:] == "[DONE]":
                return
            event = json.loads(line[6:])
            if "error" in event:
                raise DaemonError(event["error"]["message"], 500, event["error"].get("code"))
            yield event


class RemoteDaemon(DaemonClient):
    """The control API of a daemon on another machine, through its HTTP server (the same /lms routes)."""

    def __init__(self, host: str, port: int, token: str | None, timeout: float | None = None):
        super().__init__(timeout=timeout, path=f"http://{host}:{port}")
        self.host, self.port, self.token = host, port, token

    def _open(self, method: str, path: str, body: dict | None, timeout: float | None):
        import http.client

        connection = http.client.HTTPConnection(self.host, self.port,
                                                timeout=timeout if timeout is not None else self.timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            connection.request(method, path, body=payload, headers=headers)
            return connection, connection.getresponse()
        except OSError as exc:
            connection.close()
            raise DaemonError(f"The lms server at {self.host}:{self.port} cannot be reached: {exc}") from None


def remote_daemon() -> RemoteDaemon | None:
    """The daemon LMS_HOST names (host or host:port; LMS_PORT or 1234 otherwise), or None for this machine's."""
    target = os.environ.get("LMS_HOST", "").strip()
    if not target:
        return None
    host, _, port = target.rpartition(":") if target.count(":") == 1 else (target, "", "")
    port = os.environ.get("LMS_PORT") or port or "1234"
    if not port.isdigit():
        raise DaemonError(f"LMS_PORT (or the port in LMS_HOST) must be a number, not {port!r}.")
    token = os.environ.get("LMS_API_TOKEN", "").strip() or None
    token_file = os.environ.get("LMS_API_TOKEN_FILE", "").strip()
    if token is None and token_file:
        try:
            token = Path(token_file).expanduser().read_text().strip() or None
        except OSError as exc:
            raise DaemonError(f"Cannot read the API token file {token_file}: {exc.strerror}.") from None
    return RemoteDaemon(host.strip("[]"), int(port), token)


def this_machine_only(command: str) -> None:
    """Commands that start or stop the daemon or its server act where they run, never through --host."""
    if os.environ.get("LMS_HOST", "").strip():
        raise DaemonError(f"`lms {command}` acts on this machine only; run it on the other machine (without --host "
                          "or LMS_HOST).")


def daemon_pid() -> int | None:
    """The pid of a live daemon for this LMS_HOME, from its pid file (stale files are ignored)."""
    try:
        pid = int(config.pid_path().read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def connect() -> DaemonClient | None:
    """A client for the running daemon, or None if none answers."""
    if (remote := remote_daemon()) is not None:
        return remote
    if not config.socket_path().exists():
        return None
    client = DaemonClient()
    try:
        client.get("/lms/status", timeout=3)
    except (OSError, ValueError):
        return None
    return client


def start_daemon(timeout: float = 60.0) -> int:
    """Start the daemon in the background (detached from this terminal) and wait until it answers."""
    import subprocess  # only here: its import is a tenth of a listing's start-up

    log_path = config.logs_dir() / "daemon-stdio.log"
    log = config.open_private(log_path, "ab")
    written_before = log.tell()
    process = subprocess.Popen([sys.executable, "-m", "lms.daemon"], stdin=subprocess.DEVNULL, stdout=log,
                               stderr=log, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if connect() is not None:
            return daemon_pid() or process.pid
        if process.poll() is not None and daemon_pid() is None:
            raise DaemonError(_why_daemon_failed(str(log_path), written_before))
        time.sleep(0.05)
    raise DaemonError("Timed out waiting for the lms daemon to start.")


def _why_daemon_failed(path: str, offset: int) -> str:
    """The last line a daemon that exited wrote: it prints why it will not start there (e.g. a bad setting)."""
    with suppress(OSError), open(path, "rb") as output:
        output.seek(offset)
        lines = [line for line in output.read().decode(errors="replace").splitlines() if line.strip()]
        if lines:
            return f"The lms daemon failed to start: {lines[-1].strip()}"
    return "The lms daemon failed to start; see " + str(config.logs_dir())


def ensure_daemon() -> DaemonClient:
    if (remote := remote_daemon()) is not None:
        return remote
    client = connect()
    if client is None:
        if daemon_pid() is None:
            with suppress(FileNotFoundError):
                config.socket_path().unlink()  # stale socket of a daemon that died
        start_daemon()
        client = connect()
        if client is None:
            raise DaemonError("Failed to connect to the lms daemon.")
    return client
