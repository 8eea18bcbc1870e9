"""The engine of a cluster model, run by an ordinary worker process (runtimes/worker.py), which is the Ray driver:
it deploys the model as a Ray Serve application whose replicas run the local engines (replica.py), streams each
request's events back through a deployment handle, and deletes the application when the worker stops. To the
daemon a cluster model is one more worker speaking the same contract (runtimes/base.py)."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable

from lms.errors import Kind, LmsError
from lms.generation.request import EmbeddingRequest, GenerationRequest
from runtimes.base import Cancelled, Emit
from runtimes.common import error_event

NAMESPACE = "lms"  # Ray namespace of every lms application: status lists only ours
CONNECT_TIMEOUT_SECONDS = 30.0
DEPLOY_TIMEOUT_SECONDS = 600.0  # the replicas may need to read (or download) the model first
CALL_TIMEOUT_SECONDS = 120.0
RETRIES = 3  # attempts of a request whose replica died before it sent anything
RETRY_PAUSE_SECONDS = 0.5
DOWNSCALE_DELAY_SECONDS = 30.0  # autoscaling: less load for this long before a replica goes
# A replica that autoscaling removes finishes its requests first; Serve's default (20 s) cut long answers short.
DRAIN_SECONDS = 600.0


class Unreachable(LmsError):
    def __init__(self, address: str, detail: str):
        super().__init__(f"The Ray cluster at {address} cannot be reached: {detail}", Kind.UNAVAILABLE,
                         code="cluster_unreachable")


def connect(address: str) -> None:
    """Join the cluster as a driver (no resources of its own), within a deadline."""
    import ray

    if ray.is_initialized():
        return
    failure: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR",
                     configure_logging=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    thread = threading.Thread(target=init, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_SECONDS)
    if thread.is_alive():
        raise Unreachable(address, f"no answer within {CONNECT_TIMEOUT_SECONDS:.0f} s")
    if failure:
        raise Unreachable(address, str(failure[0]).splitlines()[0] if str(failure[0]) else type(failure[0]).__name__)


class ClusterEngine:
    name = "cluster"
    concurrent = True

    def __init__(self, address: str, app: str, runtime: str, options: dict, replicas: int,
                 max_replicas: int | None = None, parallel: int = 1, num_cpus: float = 1.0,
                 source: dict | None = None, resources: dict[str, float] | None = None,
                 downscale_delay_s: float | None = None, progress: Callable[[float], bool] | None = None):
        from ray import serve
        from ray.serve.config import RequestRouterConfig

        from runtimes.cluster.replica import EngineReplica
        from runtimes.cluster.routing import PrefixAffinityRouter

        connect(address)
        self.app, self.address = app, address
        scaling = ({"num_replicas": replicas} if not max_replicas or max_replicas <= replicas else
                   {"autoscaling_config": {"min_replicas": replicas, "initial_replicas": replicas,
                                           "max_replicas": max_replicas, "target_ongoing_requests": parallel,
                                           "upscale_delay_s": 2,
                                           "downscale_delay_s": DOWNSCALE_DELAY_SECONDS if downscale_delay_s is None
                                           else downscale_delay_s, "look_back_period_s": 5}})
        actor_options: dict = {"num_cpus": num_cpus}
        if resources:
            actor_options["resources"] = dict(resources)
        deployment = serve.deployment(EngineReplica, name="engine", max_ongoing_requests=max(parallel, 1) * 4,
                                      graceful_shutdown_timeout_s=DRAIN_SECONDS,
                                      ray_actor_options=actor_options,
                                      request_router_config=RequestRouterConfig(
                                          request_router_class=PrefixAffinityRouter), **scaling)
        if progress:
            progress(0.05)
        try:
            # Serve's own HTTP proxy stays off: the daemon is the only public surface, with its tokens.
            serve.start(proxy_location="Disabled")
            self.handle = serve.run(deployment.bind(runtime, options, source), name=app, route_prefix=None)
        except Exception as exc:  # noqa: BLE001 - a replica that cannot load fails the load, in words
            reason = _deploy_failure(app, exc)
            self._delete()
            raise LmsError.internal(f"The cluster could not start the model: {reason}",
                                    code="model_load_failed") from None
        self._info = self.handle.info.remote().result(timeout_s=CALL_TIMEOUT_SECONDS)
        self._streams: set = set()  # in-flight responses, cancelled on close so the replicas drain at once
        self._streams_lock = threading.Lock()
        self.version = self._info.get("engine_version", "")
        if progress:
            progress(1.0)

    def info(self) -> dict:
        return {**self._info, "engine": "cluster", "app": self.app}

    def on_step_end(self, flush: Callable[[], None]) -> None:
        return None

    def generate(self, request: GenerationRequest, emit: Emit, cancelled: Cancelled) -> None:
        threading.Thread(target=self._stream, args=(request, emit, cancelled), name="cluster-stream",
                         daemon=True).start()

    def _stream(self, request: GenerationRequest, emit: Emit, cancelled: Cancelled) -> None:
        """Relay one request's events from a replica; the last event is always a done or an error. A replica
        lost before it sent anything is replaced by another (Serve routes the retry to a live one); once events
        have gone out, the loss ends the stream with an error event."""
        payload = request.to_dict()
        for attempt in range(1, RETRIES + 1):
            sent = False
            response = self.handle.options(stream=True).generate.remote(payload)
            with self._streams_lock:
                self._streams.add(response)
            try:
                for batch in response:
                    if cancelled():
                        response.cancel()
                        emit({"type": "done", "finish_reason": "cancelled", "usage": None, "stats": {}})
                        return
                    for event in batch:
                        emit(event)
                    sent = True
                    if batch[-1]["type"] in ("done", "error"):
                        return
                failure = "it ended the stream early"
            except Exception as exc:  # noqa: BLE001 - a replica or its node lost mid-request
                failure = _first_line(exc)
            finally:
                with self._streams_lock:
                    self._streams.discard(response)
            if sent or attempt == RETRIES or cancelled():
                emit(error_event(LmsError(f"The cluster replica serving this request failed: {failure}",
                                          Kind.UNAVAILABLE, code="replica_failed")))
                return
            # The worker's stderr is the daemon's workers.log: a retry is seen there, never by the client.
            print(f"lms cluster {self.app}: a replica failed before it answered ({failure}); retrying on another "
                  f"(attempt {attempt + 1} of {RETRIES})", file=sys.stderr, flush=True)
            time.sleep(RETRY_PAUSE_SECONDS * attempt)

    def _call(self, op: str, **payload) -> dict:
        result = self.handle.call.remote(op, payload).result(timeout_s=CALL_TIMEOUT_SECONDS)
        if "error" in result:
            raise LmsError.from_event(result["error"])
        return result

    def count(self, request: GenerationRequest) -> int:
        return self._call("count", request=request.to_dict())["prompt_tokens"]

    def render_prompt(self, request: GenerationRequest) -> str:
        return self._call("render_prompt", request=request.to_dict())["text"]

    def tokenize(self, text: str, add_special: bool | None = None) -> list[int]:
        options = {"add_special": add_special} if add_special is not None else {}
        return self._call("tokenize", text=text, **options)["tokens"]

    def detokenize(self, tokens: list[int]) -> str:
        return self._call("detokenize", tokens=tokens)["content"]

    def token_pieces(self, tokens: list[int]) -> list[bytes]:
        return self._call("token_pieces", tokens=tokens)["pieces"]

    def embed(self, request: EmbeddingRequest) -> dict:
        return self._call("embed", request=request.to_dict())

    def status(self) -> dict:
        """The application's replicas: where each runs and its state."""
        return application_status(self.app)

    def close(self) -> None:
        with self._streams_lock:
            streams, self._streams = list(self._streams), set()
        for response in streams:
            try:
                response.cancel()
            except Exception:  # noqa: BLE001 - its replica may be gone already
                pass
        self._delete()

    def _delete(self) -> None:
        from ray import serve

        try:
            serve.delete(self.app, _blocking=True)
        except Exception:  # noqa: BLE001 - the cluster may be gone already
            pass


def application_status(app: str) -> dict:
    """One application's state and replicas (the node each runs on, its state), from the cluster's actor table."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return {"status": "MISSING", "replicas": []}
    return {"status": str(status.status.value if hasattr(status.status, "value") else status.status),
            "replicas": replica_actors(app)}


def replica_actors(app: str) -> list[dict]:
    """The live replica actors of an application and their nodes (the GCS actor table: no dashboard needed)."""
    import ray

    nodes = {node["NodeID"]: node for node in ray.nodes()}
    replicas = []
    for actor in ray._private.state.actors().values():  # noqa: SLF001 - the only dashboard-free view of actors
        if actor.get("ActorClassName", "").startswith(f"ServeReplica:{app}:") and actor.get("State") != "DEAD":
            node = nodes.get((actor.get("Address") or {}).get("NodeID"), {})
            # Serve names a replica's actor SERVE_REPLICA::<app>#<deployment>#<replica id>
            replicas.append({"node": node.get("NodeManagerAddress", ""), "nodeId": node.get("NodeID", ""),
                             "nodeAlive": bool(node.get("Alive")), "status": actor.get("State", ""),
                             "pid": actor.get("Pid"), "replica": str(actor.get("Name") or "").rpartition("#")[2]})
    return sorted(replicas, key=lambda r: (r["node"], r["status"]))


_OUR_ERROR = re.compile(r"^\s*(?:lms|runtimes)\.[\w.]+: (.+)$")  # lms.errors.LmsError: ..., as a traceback ends
_ANY_ERROR = re.compile(r"^\s*[\w.]*(?:Error|Exception)\w*: (.+)$")


def _deploy_failure(app: str, exc: BaseException) -> str:
    """Why the replicas could not start, in words: the replica's own error (a model file missing on a node, a
    failed download), found in the traceback Serve keeps in the deployment's status, else Serve's first line."""
    from ray import serve

    texts = [str(exc)]
    try:
        status = serve.status().applications.get(app)
        texts += [d.message for d in (status.deployments.values() if status else []) if d.message]
    except Exception:  # noqa: BLE001 - the cluster may be gone already
        pass
    lines = "\n".join(texts).splitlines()
    for pattern in (_OUR_ERROR, _ANY_ERROR):
        found = [m.group(1).strip() for line in lines if (m := pattern.match(line))]
        if found:
            return found[-1]
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
