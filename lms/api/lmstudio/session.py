"""One SDK socket: the auth frame, then rpc calls and channels multiplexed by the client's ids, each run as its
own task so that a slow load or a long prediction never blocks cancels, pings or other calls on the socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.websockets import WebSocket, WebSocketDisconnect

from lms.api.lmstudio import frames
from lms.api.lmstudio.file_store import client_files
from lms.api.lmstudio.identity import Identities, authenticate
from lms.errors import LmsError
from lms.tokens import Caller

log = logging.getLogger("lms.server")

AUTH_TIMEOUT_SECONDS = 10.0  # as LM Studio's server: a client that never authenticates is dropped
POLICY_VIOLATION = 1008


@dataclass
class Channel:
    """A channel the client opened: what a handler sends on, and whether the client asked it to stop."""

    id: int
    session: Session
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, message: dict) -> None:
        await self.session.send(frames.channel_send(self.id, message))


RpcHandler = Callable[["Session", object], Awaitable[object]]
ChannelHandler = Callable[["Session", Channel, object], Awaitable[None]]


@dataclass
class Namespace:
    """The endpoints one namespace serves (`/llm`, `/embedding`, `/system`, ...)."""

    name: str
    rpcs: dict[str, RpcHandler] = field(default_factory=dict)
    channels: dict[str, ChannelHandler] = field(default_factory=dict)


class Session:
    def __init__(self, websocket: WebSocket, namespace: Namespace):
        self.websocket, self.namespace = websocket, namespace
        self.app_state = websocket.app.state
        self.caller: Caller | None = None
        self.client_id: str | None = None  # the auth frame's client identifier: what its files are kept under
        self._send_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._channels: dict[int, Channel] = {}
        self._closed = False

    async def send(self, frame: dict) -> None:
        if self._closed:
            return
        async with self._send_lock:
            try:
                await self.websocket.send_text(frames.encode(frame))
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._closed = True

    # --- connection ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.websocket.accept()
        identities = _identities(self.app_state)
        creds = await self._auth_frame()
        if creds is False:
            return
        try:
            self.caller = authenticate(self.websocket.scope.get("state", {}).get("authenticator"), creds or None)
            if self.caller is None:
                if not creds:
                    raise LmsError.unauthorized("The first frame must be LM Studio's auth frame.")
                identities.admit(creds)
        except LmsError as exc:
            await self.send(frames.auth_failure(exc.message))
            await self._close(POLICY_VIOLATION)
            return
        self.websocket.scope.setdefault("state", {})["caller"] = self.caller
        self.client_id = creds.identifier
        files = client_files(self.app_state)
        files.attach(self.client_id)
        await self.send(frames.auth_success())
        try:
            await self._serve()
        finally:
            self._closed = True
            for task in list(self._tasks):  # a client that went away stops its predictions, loads and downloads
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            files.detach(self.client_id)
            if self.caller is None:
                identities.release(creds.identifier)

    async def _auth_frame(self):
        """The client's credentials; None for a first frame that is not an auth frame, False when it went away
        or stayed silent (it has been told)."""
        try:
            text = await asyncio.wait_for(self.websocket.receive_text(), AUTH_TIMEOUT_SECONDS)
        except TimeoutError:
            await self.send(frames.auth_failure("Authentication timed out"))
            await self._close(POLICY_VIOLATION)
            return False
        except (WebSocketDisconnect, RuntimeError, KeyError):
            return False
        try:
            return frames.credentials(frames.decode(text))
        except frames.FrameError:
            return None

    async def _close(self, code: int) -> None:
        self._closed = True
        with contextlib.suppress(RuntimeError, OSError):
            await self.websocket.close(code)

    async def _serve(self) -> None:
        while True:
            try:
                text = await self.websocket.receive_text()
            except (WebSocketDisconnect, RuntimeError, KeyError):
                return
            try:
                frame = frames.decode(text)
            except frames.FrameError as exc:
                await self.send(frames.communication_warning(f"Dropped a frame: {exc}", "invalidFrame"))
                continue
            await self._dispatch(frame)

    async def _dispatch(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "rpcCall" and isinstance(frame.get("callId"), int):
            self._spawn(self._rpc(frame["callId"], frame.get("endpoint"), frame.get("parameter")))
        elif kind == "channelCreate" and isinstance(frame.get("channelId"), int):
            channel = Channel(frame["channelId"], self)
            self._channels[channel.id] = channel
            self._spawn(self._channel(channel, frame.get("endpoint"), frame.get("creationParameter")))
        elif kind == "channelSend":
            channel = self._channels.get(frame.get("channelId"))
            message = frame.get("message")
            if channel is not None and isinstance(message, dict) and message.get("type") == "cancel":
                channel.cancelled.set()
            if channel is not None and isinstance(frame.get("ackId"), int):
                await self.send({"type": "channelAck", "channelId": channel.id, "ackId": frame["ackId"]})
        elif kind in ("channelAck", "channelClose", "communicationWarning", "signalUnsubscribe",
                      "writableSignalUnsubscribe", "writableSignalUpdate"):
            if kind == "communicationWarning":
                log.warning("LM Studio SDK client warned: %s", frame.get("warning"))
        elif kind == "keepAlive":
            await self.send({"type": "keepAliveAck"})
        elif kind in ("signalSubscribe", "writableSignalSubscribe") and isinstance(frame.get("subscribeId"), int):
            error = LmsError.not_found(f"This server (lms) serves no signal {frame.get('endpoint')!r}.", "endpoint")
            await self.send(frames.signal_error(frame["subscribeId"], frames.serialize_error(error),
                                                writable=kind.startswith("writable")))
        else:
            await self.send(frames.communication_warning(f"Unknown frame type {kind!r}", "unknownFrameType"))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rpc(self, call_id: int, endpoint, parameter) -> None:
        handler = self.namespace.rpcs.get(endpoint) if isinstance(endpoint, str) else None
        if handler is None:
            warning, error = frames.unknown_endpoint("rpc", self.namespace.name, endpoint)
            await self.send(warning)
            await self.send(frames.rpc_error(call_id, frames.serialize_error(error)))
            return
        try:
            result = await handler(self, parameter)
        except Exception as exc:  # every failure is the caller's rpcError, never a dead socket
            _log_unexpected(exc, endpoint)
            await self.send(frames.rpc_error(call_id, frames.serialize_error(exc)))
            return
        await self.send(frames.rpc_result(call_id, result))

    async def _channel(self, channel: Channel, endpoint, parameter) -> None:
        handler = self.namespace.channels.get(endpoint) if isinstance(endpoint, str) else None
        try:
            if handler is None:
                warning, error = frames.unknown_endpoint("channel", self.namespace.name, endpoint)
                await self.send(warning)
                await self.send(frames.channel_error(channel.id, frames.serialize_error(error)))
                return
            try:
                await handler(self, channel, parameter)
            except Exception as exc:
                _log_unexpected(exc, endpoint)
                await self.send(frames.channel_error(channel.id, frames.serialize_error(exc)))
                return
            await self.send(frames.channel_close(channel.id))
        finally:
            self._channels.pop(channel.id, None)


def _log_unexpected(exc: Exception, endpoint: str) -> None:
    if not isinstance(exc, LmsError):
        log.exception("LM Studio SDK endpoint %s failed", endpoint, exc_info=exc)


def _identities(state) -> Identities:
    identities = getattr(state, "lmstudio_identities", None)
    if identities is None:
        identities = Identities()
        state.lmstudio_identities = identities
    return identities
