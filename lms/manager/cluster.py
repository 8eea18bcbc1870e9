"""Placing a model on the Ray cluster (`lms load --replicas N`): what a load asks for, the worker options that
make its worker the cluster's driver (runtimes/cluster/engine.py), and the replicas `lms ps` shows. The daemon
never imports Ray: every cluster call goes through that worker, or through runtimes/cluster/control.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lms import config
from lms.errors import LmsError

log = logging.getLogger("lms.cluster")

STATUS_TIMEOUT_SECONDS = 10.0  # `lms ps` never hangs on a cluster that stopped answering
# Logical CPUs one replica asks Ray for: it runs llama.cpp with the node's threads, like a local worker.
REPLICA_CPUS = 1.0
# Ray resources every replica asks for besides its CPU, as JSON (`{"lms": 1}`): replicas only on the nodes started
# with them (`ray start --resources`), e.g. the nodes that have the memory, or a test's node.
RESOURCES_VARIABLE = "LMS_CLUSTER_REPLICA_RESOURCES"
# Autoscaling: seconds of less load before Serve removes a replica (Serve's downscale_delay_s).
DOWNSCALE_DELAY_VARIABLE = "LMS_CLUSTER_DOWNSCALE_DELAY"


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
    """The load options of a worker that runs the model on the cluster instead of in itself. `source` says where
    each model file came from, so a node that does not see the front's models folder downloads it
    (runtimes/cluster/fetch.py)."""
    return {"address": where.address, "app": app_name(identifier), "runtime": runtime, "options": options,
            "replicas": where.replicas, "max_replicas": where.max_replicas, "parallel": parallel,
            "num_cpus": REPLICA_CPUS, "source": model_source(options), "resources": replica_resources(),
            "downscale_delay_s": downscale_delay()}


def replica_resources() -> dict[str, float] | None:
    text = os.environ.get(RESOURCES_VARIABLE, "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
        if not isinstance(value, dict) or not all(isinstance(v, int | float) and v >= 0 for v in value.values()):
            raise ValueError
    except ValueError:
        raise LmsError.invalid(f"{RESOURCES_VARIABLE} must be a JSON object of Ray resource names and amounts, "
                               f'such as {{"lms": 1}}; it is {text!r}.', "resources") from None
    return {str(k): float(v) for k, v in value.items()}


def downscale_delay() -> float | None:
    text = os.environ.get(DOWNSCALE_DELAY_VARIABLE, "").strip()
    if not text:
        return None
    try:
        value = float(text)
        if value < 0:
            raise ValueError
    except ValueError:
        raise LmsError.invalid(f"{DOWNSCALE_DELAY_VARIABLE} must be a number of seconds; it is {text!r}.",
                               "downscale_delay") from None
    return value


# --- where a model's files came from ------------------------------------------------------------------------------

def model_source(options: dict) -> dict:
    """For each file path of the engine options (`path`, `projector`, `draft.path`): its place under the models
    folder (`paths`), and the Hub downloads (`lms get` jobs, from the download journal) that produce them
    (`downloads`: repository, commit, variant, endpoint, and every file of the variant with its size and sha256,
    split parts and projector included). A file outside the models folder, or one lms did not download, has no
    download: a node must then see it at the front's path."""
    files = {"path": options.get("path"), "projector": options.get("projector"),
             "draft.path": (options.get("draft") or {}).get("path")}
    paths = {key: rel for key, value in files.items() if value and (rel := _relative(Path(value))) is not None}
    downloads: list[dict] = []
    if paths:
        jobs = _journal_jobs()
        for relative in paths.values():
            job = _job_of(relative, jobs)
            if job is not None and job not in downloads:
                downloads.append(job)
    return {"paths": paths, "downloads": downloads}


def _relative(path: Path) -> str | None:
    """The path's place under this daemon's models folder (links inside the folder kept as they are named)."""
    for base in {config.models_dir(), config.models_dir().resolve()}:
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    return None


def _journal_jobs() -> list[dict]:
    """The download jobs this daemon has on record, newest last, finished ones only (the journal of lms get:
    files under LMS_HOME, or the shared database)."""
    from lms import db
    from lms.store.downloads import FINISHED, DatabaseJournal, FileJournal

    try:
        database = db.configured()
        journal = DatabaseJournal(database) if database is not None else FileJournal()
        entries = journal.entries()
    except Exception as exc:  # noqa: BLE001 - without the journal a node must see the files
        log.warning("the download journal cannot be read (%s): cluster nodes must see the model files", exc)
        return []
    entries = [e for e in entries if isinstance(e, dict) and e.get("status") in FINISHED]
    return sorted(entries, key=lambda e: e.get("completed_at") or e.get("started_at") or 0)


def _job_of(relative: str, jobs: list[dict]) -> dict | None:
    for job in reversed(jobs):
        try:
            files = [{"path": str(f["path"]), "size": int(f["size"]), "sha256": f.get("sha256")}
                     for f in job["files"]]
            repo = str(job["repo_id"])
        except (KeyError, TypeError, ValueError):
            continue
        if relative == repo or any(f"{repo}/{f['path']}" == relative for f in files):  # a folder model, a file
            return {"repo": repo, "revision": str(job.get("commit") or "main"), "variant": job.get("variant"),
                    "endpoint": job.get("endpoint"), "files": files}
    return None


async def replica_status(worker) -> dict:
    """The application's state and its replicas (node, status), as the cluster sees them now."""
    try:
        status = await asyncio.wait_for(worker.request("status"), STATUS_TIMEOUT_SECONDS)
    except TimeoutError:
        return {"status": "UNREACHABLE", "replicas": []}
    except LmsError as exc:
        return {"status": "UNREACHABLE", "replicas": [], "error": exc.message}
    return {"status": status.get("status", ""), "replicas": status.get("replicas", [])}
