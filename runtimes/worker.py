"""The worker process: holds one loaded model and serves the daemon over a socket of JSON lines.

Messages from the daemon: `{"op": "load"|"generate"|"count"|"render_prompt"|"tokenize"|"detokenize"|"embed"|"status"|
"cancel"|"shutdown",
"id", ...}`; a generate, count or render_prompt carries `request` (GenerationRequest.to_dict), an embed `request`
(EmbeddingRequest.to_dict), a tokenize `text` (and optionally `add_special`, `with_pieces`), a detokenize `tokens`,
and the worker hands its engine the typed request (the contract is runtimes/base.py).
Messages to the daemon: events tagged with the request `id` (see lms.generation.request), plus
`{"type": "loaded", "info"}` and `{"type": "result", ...}`; a failed request ends with an error event
(`LmsError.to_event`), an exception that is not an LmsError as an internal one.
Requests are taken one at a time by the engine thread: a concurrent engine (llama.cpp's batching scheduler) only
queues a generation there and streams it from its own thread, others run it to the end. The reader thread only
queues requests and marks cancellations, so a cancel lands within one token.
When the daemon goes away (end of file on the socket) the worker exits: it never outlives its owner.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import os
import queue
import socket
import sys
import threading
import traceback
from collections.abc import Callable

from lms.errors import Kind, LmsError
from lms.generation.request import EmbeddingRequest, GenerationRequest
from runtimes.base import Engine
from runtimes.common import error_event


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


# What a spare worker imports ahead of its load (lms/manager/spare.py): the engine module of each runtime.
PRELOADS = {"llama.cpp": "runtimes.llama_cpp.engine"}


def load_engine(runtime: str, options: dict, progress: Callable[[float], bool] | None = None) -> Engine:
    """Load a model; `progress` gets 0..1 as it loads and may return False to abort. Only the worker imports
    engines, and only the one it runs."""
    if runtime == "llama.cpp" and options.get("embedding"):
        from runtimes.llama_cpp.embedding import LlamaCppEmbedder

        return LlamaCppEmbedder(**options, progress=progress)
    if runtime == "llama.cpp":
        from runtimes.llama_cpp.engine import LlamaCppEngine

        return LlamaCppEngine(**options, progress=progress)
    if runtime == "mlx":
        from runtimes.mlx.engine import MlxEngine

        return MlxEngine(**options, progress=progress)
    if runtime == "cluster":
        from runtimes.cluster.engine import ClusterEngine

        return ClusterEngine(**options, progress=progress)
    raise LmsError.internal(f"unknown runtime {runtime!r}")


def _engine_method(engine: Engine, name: str, param: str):
    method = getattr(engine, name, None)
    if method is None:
        raise LmsError.invalid(f"The {getattr(engine, 'name', 'model')} engine of this model does not offer "
                               f"'{param}'.", param, code="model_not_supported")
    return method


def _token_list(value, param: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise LmsError.invalid(f"'{param}' must be a list of token ids.", param)
    return value


def piece_value(piece: bytes) -> str | list[int]:
    """A token's piece as llama-server gives it: its text, or its bytes when they are not valid UTF-8 alone."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


def tokenize(engine: Engine, job: dict) -> dict:
    """{"tokens": [id]}; with `with_pieces`, also {"pieces": [text or bytes]}. `add_special` (BOS and EOS where the
    model wants them) is the engine's prompt default when absent."""
    text = job.get("text")
    if not isinstance(text, str):
        raise LmsError.invalid("'text' must be a string.", "text")
    add_special = job.get("add_special")
    if add_special is None:
        tokens = [int(t) for t in engine.tokenize(text)]
    else:
        method = engine.tokenize
        if "add_special" not in inspect.signature(method).parameters:
            raise LmsError.invalid(f"The {engine.name} engine of this model always tokenizes as for a prompt: "
                                   "'add_special' is not available.", "add_special", code="model_not_supported")
        tokens = [int(t) for t in method(text, add_special=bool(add_special))]
    result: dict = {"tokens": tokens}
    if job.get("with_pieces"):
        pieces = _engine_method(engine, "token_pieces", "with_pieces")(tokens)
        result["pieces"] = [piece_value(piece) for piece in pieces]
    return result


def detokenize(engine: Engine, job: dict) -> str:
    tokens = _token_list(job.get("tokens"), "tokens")
    return _engine_method(engine, "detokenize", "tokens")(tokens)


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
                reported = [-1.0]

                def progress(value: float) -> bool:
                    if value - reported[0] >= 0.01 or value >= 1.0:  # at most one event per percent
                        reported[0] = value
                        emit({"type": "progress", "progress": round(value, 3)})
                    return request_id not in cancelled

                engine: Engine = load_engine(job["runtime"], job["options"], progress)
                state["engine"] = engine
                conn.step_thread = engine.on_step_end(conn.flush_step)
                emit({"type": "loaded", "info": engine.info()})
            elif op == "generate":
                engine = state["engine"]
                request = GenerationRequest.from_dict(job["request"])
                queued_only = engine.concurrent
                engine.generate(request, emit, lambda: request_id in cancelled)
            elif op == "embed":
                emit({"type": "result", **state["engine"].embed(EmbeddingRequest.from_dict(job["request"]))})
            elif op == "count":
                prompt_tokens = state["engine"].count(GenerationRequest.from_dict(job["request"]))
                emit({"type": "result", "prompt_tokens": prompt_tokens})
            elif op == "render_prompt":
                text = state["engine"].render_prompt(GenerationRequest.from_dict(job["request"]))
                emit({"type": "result", "text": text})
            elif op == "status":  # a cluster model's replicas; {} for a local engine
                status = getattr(state["engine"], "status", None)
                emit({"type": "result", **(status() if status else {})})
            elif op == "tokenize":
                emit({"type": "result", **tokenize(state["engine"], job)})
            elif op == "detokenize":
                emit({"type": "result", "content": detokenize(state["engine"], job)})
            else:
                raise LmsError.invalid(f"unknown operation {op!r}", "op")
        except Exception as exc:  # the request fails; the worker and its model stay up
            event = error_event(exc)
            if event["kind"] == Kind.INTERNAL.value:
                traceback.print_exc()
            queued_only = False
            emit(event)
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
    # The daemon closed the socket or asked us to stop: leave now, without waiting for a decode to end; an engine
    # that holds something outside this process (a cluster application) lets it go first.
    close = getattr(state["engine"], "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="lms model worker (started by the daemon)")
    parser.add_argument("--fd", type=int, required=True, help="file descriptor of the socket to the daemon")
    parser.add_argument("--preload", choices=sorted(PRELOADS), help="import this engine now: a spare worker, "
                                                                    "started before the load it will serve")
    args = parser.parse_args(argv)
    if args.preload:
        with contextlib.suppress(Exception):  # the load itself reports an engine that cannot be imported
            importlib.import_module(PRELOADS[args.preload])
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
