"""The worker process: holds one loaded model and serves the daemon over a socket of JSON lines.

Messages from the daemon: `{"op": "load"|"generate"|"embed"|"cancel"|"shutdown", "id", ...}`.
Messages to the daemon: events tagged with the request `id` (see lms.generation.request), plus
`{"type": "loaded", "info"}` and `{"type": "result", ...}`. Requests are taken one at a time by the engine
thread: a concurrent engine (llama.cpp's batching scheduler) only queues a generation there and streams it from its
own thread, others run it to the end. The reader thread only queues requests and marks cancellations, so a cancel
lands within one token.
When the daemon goes away (end of file on the socket) the worker exits: it never outlives its owner.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import sys
import threading
import traceback


class Connection:
    """JSON lines both ways. Sending happens on its own thread: the engine thread only queues a message and
    goes back to decoding, so encoding and the socket write overlap the next token's compute.

    A batching engine's scheduler thread instead collects its events and writes them itself once per decode step
    (`flush`): one write per step, between steps, so no other thread of this process wakes while llama.cpp's
    threads compute (a woken thread preempts one of them, and the others wait at the next barrier)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.outbox: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self.write_lock = threading.Lock()
        self.step_thread: threading.Thread | None = None
        self.step_events: list[dict] = []
        threading.Thread(target=self._send_loop, name="sender", daemon=True).start()

    def send(self, message: dict) -> None:
        if threading.current_thread() is self.step_thread:
            self.step_events.append(message)
        else:
            self.outbox.put(message)

    def flush_step(self) -> None:
        """Write what the scheduler thread emitted during its last step (called on that thread)."""
        if self.step_events:
            batch, self.step_events = self.step_events, []
            self._write(batch)

    def _write(self, batch: list[dict]) -> None:
        data = b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in batch)
        try:
            with self.write_lock:
                self.sock.sendall(data)
        except OSError:
            os._exit(0)  # the daemon is gone

    def _send_loop(self) -> None:
        while True:
            batch = [self.outbox.get()]
            while not self.outbox.empty():  # whatever piled up goes out in one write
                batch.append(self.outbox.get_nowait())
            self._write(batch)

    def messages(self):
        for line in self.reader:
            if line.strip():
                yield json.loads(line)


def _error(message: str, status: int = 500, code: str | None = None, param: str | None = None) -> dict:
    return {"type": "error", "message": message, "status": status, "code": code, "param": param}


def serve(conn: Connection) -> None:
    jobs: queue.Queue[dict | None] = queue.Queue()
    cancelled: set[str] = set()
    state: dict = {"engine": None}

    def run_job(job: dict) -> None:
        request_id = job["id"]
        queued_only = False  # a concurrent engine's generation outlives this call; its last event ends it

        def emit(event: dict) -> None:
            conn.send({"id": request_id, **event})
            if queued_only and event["type"] in ("done", "error"):
                cancelled.discard(request_id)

        op = job["op"]
        try:
            if op == "load":
                from runtimes.base import load_engine

                reported = [-1.0]

                def progress(value: float) -> bool:
                    if value - reported[0] >= 0.01 or value >= 1.0:  # at most one event per percent
                        reported[0] = value
                        emit({"type": "progress", "progress": round(value, 3)})
                    return request_id not in cancelled

                state["engine"] = load_engine(job["runtime"], job["options"], progress)
                if hasattr(state["engine"], "on_step_end"):
                    conn.step_thread = state["engine"].on_step_end(conn.flush_step)
                emit({"type": "loaded", "info": state["engine"].info()})
            elif op == "generate":
                engine = state["engine"]
                queued_only = getattr(engine, "concurrent", False)
                engine.generate(job["request"], emit, lambda: request_id in cancelled)
            elif op == "embed":
                emit({"type": "result", **state["engine"].embed(job["request"])})
            elif op == "count":
                emit({"type": "result", "prompt_tokens": state["engine"].count(job["request"])})
            else:
                emit(_error(f"unknown operation {op!r}", 400))
        except Exception as exc:  # the request fails; the worker and its model stay up
            status, code, param = getattr(exc, "status", 500), getattr(exc, "code", None), getattr(exc, "param", None)
            if status >= 500:
                traceback.print_exc()
            queued_only = False
            emit(_error(str(exc) or type(exc).__name__, status, code, param))
        finally:
            if not queued_only:
                cancelled.discard(request_id)

    def engine_loop() -> None:
        while (job := jobs.get()) is not None:
            if job["id"] in cancelled and job["op"] != "load":
                cancelled.discard(job["id"])
                conn.send({"id": job["id"], "type": "done", "finish_reason": "cancelled", "usage": None, "stats": {}})
                continue
            run_job(job)

    thread = threading.Thread(target=engine_loop, name="engine", daemon=True)
    thread.start()
    for message in conn.messages():
        if message["op"] == "cancel":
            cancelled.add(message["id"])
        elif message["op"] == "shutdown":
            break
        else:
            jobs.put(message)
    # The daemon closed the socket or asked us to stop: leave now, without waiting for a decode to end.
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="lms model worker (started by the daemon)")
    parser.add_argument("--fd", type=int, required=True, help="file descriptor of the socket to the daemon")
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    try:
        serve(Connection(sock))
    except (BrokenPipeError, ConnectionResetError):
        os._exit(0)
    except Exception:
        traceback.print_exc(file=sys.stderr)
        os._exit(1)


if __name__ == "__main__":
    main()
