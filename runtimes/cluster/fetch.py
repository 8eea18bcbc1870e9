"""The model files of a cluster replica, on the node it runs on. The front daemon sends the paths it loads from
(its own models folder) and, when the model came from the Hub through `lms get`, where it came from (`source`,
built by lms/manager/cluster.py: repository, commit, the variant's files with their size and sha256, and each
path's place under a models folder). A replica then takes, for each file it needs (the model and its split parts,
the vision projector, the draft model):

1. the front's path, when this node sees it (a shared models folder), unless `LMS_CLUSTER_NODE_MODELS=own`;
2. else the same relative path in this node's own models folder (LMS_HOME of the node's Ray processes);
3. else it downloads the variant there with lms's own download code (lms/store/downloads.py: resumable part files,
   sha256 checked against the Hub's, installed only once every file is complete), one replica per node at a time
   (a file lock), and loads from there;
4. else (no file and no known source) a clear error naming the path and the node.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import socket
import threading
from contextlib import contextmanager
from pathlib import Path

from lms import config
from lms.errors import Kind, LmsError

NODE_MODELS_VARIABLE = "LMS_CLUSTER_NODE_MODELS"  # "shared" (default) or "own": never read the front's paths
RESERVE_BYTES = 64 * 1024 * 1024


class ModelFileMissing(LmsError):
    def __init__(self, message: str):
        super().__init__(message, Kind.NOT_FOUND, code="model_file_missing")


def node_name() -> str:
    try:
        import ray

        address = ray.util.get_node_ip_address() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - only for the message
        address = ""
    host = socket.gethostname()
    return f"{host} ({address})" if address else host


def own_only() -> bool:
    return os.environ.get(NODE_MODELS_VARIABLE, "shared").strip().lower() == "own"


def localize(options: dict, source: dict | None) -> dict:
    """The engine options with every model file path as this node has it (downloading what it lacks)."""
    source = source or {}
    relatives: dict[str, str] = source.get("paths") or {}
    downloads: list[dict] = source.get("downloads") or []
    options = {**options, "draft": dict(options["draft"])} if options.get("draft") else dict(options)
    for key in ("path", "projector", "draft.path"):
        holder, field = (options.get("draft"), "path") if key == "draft.path" else (options, key)
        if holder is None or not holder.get(field):
            continue
        holder[field] = str(_local_file(Path(holder[field]), relatives.get(key), downloads))
    return options


def _local_file(front_path: Path, relative: str | None, downloads: list[dict]) -> Path:
    download = _download_of(relative, downloads)
    if not own_only() and _complete(front_path, relative, download):
        return front_path
    if relative:
        mine = config.models_dir() / relative
        if _complete(mine, relative, download):
            return mine
        if download is not None:
            fetch_variant(download)
            if _complete(mine, relative, download):
                return mine
            raise ModelFileMissing(f"The download of {download['repo']} on node {node_name()} did not produce "
                                   f"{mine}.")
    where = f" or {config.models_dir() / relative}" if relative else ""
    raise ModelFileMissing(
        f"The model file {front_path} is not on node {node_name()}{where}, and lms does not know where to download "
        "it from (it was not fetched with `lms get`): put it there, or use a models folder every node shares.")


def _download_of(relative: str | None, downloads: list[dict]) -> dict | None:
    """The download that produces the file (or, for a folder model such as MLX's, the folder)."""
    for download in downloads:
        if relative and (relative == download["repo"] or
                         any(f"{download['repo']}/{f['path']}" == relative for f in download["files"])):
            return download
    return None


def _parts(path: Path) -> list[Path]:
    from lms.store.catalog import split_parts

    return split_parts(path) or [path]


def _complete(path: Path, relative: str | None, download: dict | None) -> bool:
    """The model is there whole: every part of a GGUF file (or every file of a folder model), with the size the
    Hub gave when it is known."""
    if download is not None and relative == download["repo"]:  # a folder model: the variant's files in it
        return all((path / f["path"]).is_file() and (path / f["path"]).stat().st_size == f["size"]
                   for f in download["files"])
    if path.is_dir():
        return True
    sizes = {f"{download['repo']}/{f['path']}": f["size"] for f in download["files"]} if download else {}
    base = relative.rsplit("/", 1)[0] if relative and "/" in relative else None
    for part in _parts(path):
        if not part.is_file():
            return False
        expected = sizes.get(f"{base}/{part.name}") if base else None
        if expected is not None and part.stat().st_size != expected:
            return False
    return True


@contextmanager
def _node_lock(download: dict):
    """One download of a variant per node at a time, across the replicas' processes: the others wait, then find
    the files in place."""
    key = hashlib.sha256(f"{download['repo']}@{download['revision']}:{download.get('variant')}".encode())
    folder = config.internal_dir() / "downloads" / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key.hexdigest()[:24]}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_variant(download: dict) -> None:
    """Download one variant into this node's models folder as `lms get` does (same code, same checks); an error
    in words when it fails (a sha256 mismatch included: the corrupt file is deleted)."""
    with _node_lock(download):
        failure: list[BaseException] = []
        # The download manager runs on an event loop; the replica's constructor may already be on one.
        thread = threading.Thread(target=lambda: _run(download, failure), name="lms-node-download", daemon=True)
        thread.start()
        thread.join()
        if failure:
            raise failure[0]


def _run(download: dict, failure: list[BaseException]) -> None:
    try:
        asyncio.run(_download(download))
    except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread
        failure.append(exc)


async def _download(download: dict) -> None:
    from lms.store.downloads import DownloadManager
    from lms.store.hub import HubFile

    # The node's own HF_ENDPOINT (a mirror) first, else the endpoint the front downloaded from; the Hub token is
    # the node's own (HF_TOKEN or its huggingface login), never the front's.
    endpoint = os.environ.get("HF_ENDPOINT") or download.get("endpoint") or None
    manager = DownloadManager(reserve_bytes=RESERVE_BYTES, database=None)  # the node's own journal, in its LMS_HOME
    files = [HubFile(f["path"], int(f["size"]), f.get("sha256")) for f in download["files"]]
    job = manager.submit(download["repo"], download["revision"], download.get("variant") or "model", files,
                         endpoint=endpoint, token=None)
    task = manager.tasks.get(job.job_id)
    if task is not None:
        await task
    if job.status not in ("completed", "already_downloaded"):
        raise LmsError.upstream(f"Node {node_name()} could not download {download['repo']}@"
                                f"{download.get('variant')}: {job.error or job.status}", code="download_failed")
