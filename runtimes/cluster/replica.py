"""One Ray Serve replica: the same engine a local worker loads (runtimes/worker.py `load_engine`), behind methods
the cluster engine calls through a deployment handle. Events go out as the engine emits them, so a stream through
the handle is the local worker's event stream."""

from __future__ import annotations

import queue
import socket
import threading

from lms.generation.request import EmbeddingRequest, GenerationRequest
from runtimes.common import error_event

# Serve calls replica methods on its own threads; an engine that is not concurrent runs one request at a time.
_END = ("done", "error")


class EngineReplica:
    def __init__(self, runtime: str, options: dict, source: dict | None = None):
        from runtimes.cluster.fetch import localize
        from runtimes.worker import load_engine

        # The model files as this node has them: the front's paths on a shared folder, else this node's own models
        # folder, downloaded from the Hub first when the model came from there (fetch.py).
        self.paths = localize(options, source)
        self.engine = load_engine(runtime, self.paths)
        # A concurrent engine (llama.cpp's scheduler) emits from its own thread and expects a flush after each step;
        # here every event is queued as it comes, so the flush has nothing to do.
        self.engine.on_step_end(lambda: None)
        self.serial = threading.Lock()

    def info(self) -> dict:
        return {**self.engine.info(), "node": socket.gethostname(), "node_ip": _node_ip(),
                "model_path": self.paths.get("path")}

    def generate(self, request: dict):
        """The request's events, as a stream of lists: each item is what the engine emitted since the last one
        went out (one event while the stream keeps up; more when each item's trip through Ray takes longer than
        a token). The caller going away (the stream closed) cancels the request."""
        events: queue.SimpleQueue[dict] = queue.SimpleQueue()
        stopped = threading.Event()
        typed = GenerationRequest.from_dict(request)

        def run() -> None:
            try:
                if self.engine.concurrent:
                    self.engine.generate(typed, events.put, stopped.is_set)
                else:
                    with self.serial:
                        self.engine.generate(typed, events.put, stopped.is_set)
            except Exception as exc:  # noqa: BLE001 - the request's error event, as a local worker sends it
                events.put(error_event(exc))

        threading.Thread(target=run, name="generate", daemon=True).start()
        try:
            while True:
                batch = [events.get()]
                while batch[-1]["type"] not in _END:
                    try:
                        batch.append(events.get_nowait())
                    except queue.Empty:
                        break
                yield batch
                if batch[-1]["type"] in _END:
                    return
        finally:
            stopped.set()

    def call(self, op: str, payload: dict) -> dict:
        """count, tokenize, render_prompt and embed, with a local worker's result shapes; a failure comes back
        as an error event (`{"error": ...}`), as data, so it crosses Ray unchanged."""
        try:
            return self._call(op, payload)
        except Exception as exc:  # noqa: BLE001
            return {"error": error_event(exc)}

    def _call(self, op: str, payload: dict) -> dict:
        with self.serial:
            if op == "count":
                return {"prompt_tokens": self.engine.count(GenerationRequest.from_dict(payload["request"]))}
            if op == "render_prompt":
                return {"text": self.engine.render_prompt(GenerationRequest.from_dict(payload["request"]))}
            if op == "tokenize":
                options = {"add_special": payload["add_special"]} if payload.get("add_special") is not None else {}
                return {"tokens": [int(t) for t in self.engine.tokenize(payload["text"], **options)]}
            if op == "detokenize":
                return {"content": self.engine.detokenize(payload["tokens"])}
            if op == "token_pieces":
                return {"pieces": self.engine.token_pieces(payload["tokens"])}
            if op == "embed":
                return self.engine.embed(EmbeddingRequest.from_dict(payload["request"]))
        raise ValueError(f"unknown operation {op!r}")


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only informative
        return ""
