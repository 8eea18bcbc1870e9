"""Placing a model on the Ray cluster (`lms load --replicas N`): what a load asks for, the worker options that
make its worker the cluster's driver (runtimes/cluster/engine.py), and the replicas `lms ps` shows. The daemon
never imports Ray: every cluster call goes through that worker, or through runtimes/cluster/control.py."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from lms.errors import LmsError

STATUS_TIMEOUT_SECONDS = 10.0  # `lms ps` never hangs on a cluster that stopped answering
# Logical CPUs one replica asks Ray for: it runs llama.cpp with the node's threads, like a local worker.
REPLICA_CPUS = 1.0


@dataclass(frozen=True)
class Placement:
    address: str
    replicas: int
    max_replicas: int | None = None  # autoscaling between replicas and max_replicas on queue depth

    def public(self) -> dict:
        return {"minReplicas": self.replicas, "maxReplicas": self.max_replicas or self.replicas}


def placement(address: str, replicas: int | None, max_replicas: int | None) -> Placement | None:
    """The cluster placement a load asks for; None for a local load. Without a cluster, asking is an error."""
    if replicas is None and max_replicas is None:
        return None
    if not address:
        raise LmsError.invalid("Loading with --replicas needs a Ray cluster: connect one first with "
                               "`lms cluster connect ADDRESS` (or set LMS_CLUSTER).", "replicas",
                               code="no_cluster")
    replicas = replicas or 1
    if replicas < 1 or (max_replicas is not None and max_replicas < replicas):
        raise LmsError.invalid("'replicas' must be at least 1 and 'max_replicas' at least 'replicas'.", "replicas")
    return Placement(address, replicas, max_replicas)


def app_name(identifier: str) -> str:
    """The Serve application of a model: named after its identifier, in characters Serve takes."""
    return "lms-" + re.sub(r"[^A-Za-z0-9_.-]", "-", identifier)


def worker_options(where: Placement, identifier: str, runtime: str, options: dict, parallel: int) -> dict:
    """The load options of a worker that runs the model on the cluster instead of in itself."""
    return {"address": where.address, "app": app_name(identifier), "runtime": runtime, "options": options,
            "replicas": where.replicas, "max_replicas": where.max_replicas, "parallel": parallel,
            "num_cpus": REPLICA_CPUS}


async def replica_status(worker) -> dict:
    """The application's state and its replicas (node, status), as the cluster sees them now."""
    try:
        status = await asyncio.wait_for(worker.request("status"), STATUS_TIMEOUT_SECONDS)
    except TimeoutError:
        return {"status": "UNREACHABLE", "replicas": []}
    except LmsError as exc:
        return {"status": "UNREACHABLE", "replicas": [], "error": exc.message}
    return {"status": status.get("status", ""), "replicas": status.get("replicas", [])}
