"""The daemon process: `python -m lms.daemon`. One per LMS_HOME, guarded by a lock file."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import sys
from contextlib import suppress

import uvicorn

from lms import config, db
from lms.conversation.store import ResponseStore
from lms.daemon.control import build_control_app
from lms.daemon.control_events import StateWatch
from lms.daemon.http_server import HTTP_PROTOCOL, HTTPServerController
from lms.logs import BusHandler, DatedFileHandler, LogBus
from lms.manager.models import ModelManager
from lms.mcp.client import McpPool
from lms.metrics import Metrics
from lms.settings import Settings, SettingsError
from lms.store import catalog
from lms.store.downloads import DownloadManager
from lms.tokens import Authenticator, TokenStore

log = logging.getLogger("lms.daemon")


class Daemon:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings if settings is not None else Settings.load()
        config.restrict_to_owner(config.settings_path())  # it may hold api_token
        # first: an unreachable database stops the daemon before anything starts
        self.database = db.connect(self.settings.database_url) if self.settings.database_url else None
        self.bus = LogBus()
        self.metrics = Metrics()
        self.manager = ModelManager(self.settings, self.bus, self.metrics)
        self.metrics.attach(self.manager)
        self.responses = ResponseStore(config.home() / "lms.db",
                                       max_age_seconds=self.settings.responses_max_age_days * 86400,
                                       max_count=self.settings.responses_max_count,
                                       max_bytes=self.settings.responses_max_bytes, database=self.database)
        self.mcp = McpPool(connect_timeout=self.settings.mcp_connect_timeout_seconds,
                           call_timeout=self.settings.mcp_call_timeout_seconds)
        self.downloads = DownloadManager(reserve_bytes=self.settings.download_reserve_bytes, database=self.database)
        self.authenticator = Authenticator(TokenStore(database=self.database), self.settings.api_token)
        self.http = HTTPServerController(self)
        self.state_watch = StateWatch(self)  # what /lms/events sends as `state`, one watcher for every page
        self.control: uvicorn.Server | None = None

    def request_shutdown(self) -> None:
        if self.control:
            self.control.should_exit = True

    async def run(self, control_socket: socket.socket) -> None:
        self.bus.loop = asyncio.get_running_loop()
        logging.getLogger().addHandler(BusHandler(self.bus))
        self.manager.start()
        self.downloads.start()
        sampler = asyncio.create_task(self.metrics.recent.run(self.manager))
        app = build_control_app(self)
        self.control = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                                                     timeout_graceful_shutdown=2, ws="none", http=HTTP_PROTOCOL))
        log.info("daemon %d ready on %s", os.getpid(), config.socket_path())
        await self.control.serve(sockets=[control_socket])  # returns on SIGTERM/SIGINT or /lms/shutdown
        log.info("shutting down")
        sampler.cancel()
        if self.http.running:
            await self.http.stop()
        await self.manager.close()
        await self.mcp.close_all()
        await self.downloads.close()
        self.responses.close()


def _configure_logging() -> None:
    handler = DatedFileHandler(config.logs_dir())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _bind_control_socket() -> socket.socket:
    path = config.socket_path()
    with suppress(FileNotFoundError):
        path.unlink()  # stale: we hold the lock, so no live daemon owns it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600: no window where others could connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _event_loop_runner():
    """uvloop when available: it halves the daemon's CPU per streamed token, which matters on small machines
    where every cycle the daemon takes is a cycle the engine's threads wait for."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def main() -> int:
    lock = open(config.internal_dir() / "daemon.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another lms daemon is already running for this LMS_HOME", file=sys.stderr)
        return 1
    _configure_logging()
    try:
        settings = Settings.load()
    except SettingsError as exc:  # stop with the message, not a traceback: the CLI shows our last line
        log.error("not starting: %s", exc)
        print(exc, file=sys.stderr)
        return 2
    catalog.ensure_bundled_models()
    sock = _bind_control_socket()
    config.pid_path().write_text(str(os.getpid()))
    try:
        try:
            daemon = Daemon(settings)
        except db.DatabaseError as exc:  # unreachable or refused: say so and stop, as for a bad setting
            log.error("not starting: %s", exc)
            print(exc, file=sys.stderr)
            return 2
        _event_loop_runner()(daemon.run(sock))
    finally:
        for path in (config.socket_path(), config.pid_path()):
            with suppress(FileNotFoundError):
                path.unlink()
    log.info("daemon stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
