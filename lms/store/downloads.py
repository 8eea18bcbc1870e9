"""Download jobs, run by the daemon: one variant of one Hub repository each.

Each file goes to `<staging>/<path>.part` outside `models/` (lms/store/transfer.py: resumed with an HTTP range
after an interruption or a daemon restart, hashed on the way and checked against the Hub's sha256), and only
when every file of the variant is complete and verified are they moved into
`models/<publisher>/<repo>/`: `lms ls` never shows a partial model. A journal file per job lets a restarted daemon
pick its jobs up again. Two requests for the same variant share one job.

The journal is a JSON file per job under `.internal/downloads/jobs`, or, with the `database_url` setting, a row
per job in that database (table `download_jobs`): each daemon resumes its own jobs (its host and LMS_HOME), and
one daemon answers the status of a job another daemon sharing the database runs (as that one last saved it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lms import config
from lms.db import Database, dialect_of
from lms.errors import LmsError
from lms.sizes import file_size
from lms.store.hub import HubFile
from lms.store.transfer import TransferError, fetch

log = logging.getLogger("lms.downloads")
ACTIVE = ("downloading",)
FINISHED = ("completed", "already_downloaded")  # the files are in place
JOB_ID = re.compile(r"job_[0-9a-f]{1,32}")
MAX_FINISHED_JOBS = 100  # finished jobs kept for `lms get` and the status API; running ones are always kept


class Cancelled(Exception):
    pass


@dataclass
class Job:
    job_id: str
    repo_id: str
    commit: str
    variant: str
    files: list[HubFile]
    status: str = "downloading"  # LM Studio's: downloading, completed, failed, already_downloaded; and cancelled
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    completed_at: float | None = None
    endpoint: str | None = None
    done_bytes: int = 0  # bytes of files already complete
    current_bytes: int = 0  # bytes of the file being fetched, resumed part included
    fetched_bytes: int = 0  # bytes received over the network by this daemon
    speed: float = 0.0
    token: str | None = field(default=None, repr=False)  # never written to the journal
    cancel_requested: bool = field(default=False, repr=False)
    _samples: list[tuple[float, int]] = field(default_factory=list, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def downloaded_bytes(self) -> int:
        return min(self.done_bytes + self.current_bytes, self.total_bytes)

    @property
    def target_dir(self) -> Path:
        return config.models_dir() / self.repo_id

    @property
    def staging_dir(self) -> Path:
        return downloads_dir() / "staging" / self.repo_id / self.commit

    def raise_if_failed(self) -> None:
        """A job that ended without its files in place, as the error of a route that followed it."""
        if self.status not in FINISHED:
            raise LmsError.upstream(f"The download of {self.repo_id}@{self.variant} {self.status}: "
                                    f"{self.error or ''}".strip(), code="download_failed")

    def status_dict(self) -> dict:
        """LM Studio's download status shape (`GET /api/v1/models/download/status/:job_id`) plus our details."""
        remaining = self.total_bytes - self.downloaded_bytes
        eta = remaining / self.speed if self.speed > 0 and self.status == "downloading" else None
        return {
            "job_id": self.job_id, "status": self.status, "model": self.repo_id, "variant": self.variant,
            "total_size_bytes": self.total_bytes, "downloaded_bytes": self.downloaded_bytes,
            "bytes_per_second": round(self.speed), "fetched_bytes": self.fetched_bytes,
            "estimated_completion": _iso(time.time() + eta) if eta is not None else None,
            "started_at": _iso(self.started_at), "completed_at": _iso(self.completed_at) if self.completed_at else None,
            "error": self.error, "path": str(self.target_dir),
            "duration_seconds": round((self.completed_at or time.time()) - self.started_at, 3),
        }

    def progress(self, current: int, received: int) -> None:
        if self.cancel_requested:
            raise Cancelled()
        self.current_bytes = current
        self.fetched_bytes += received
        now = time.monotonic()
        if self._samples and now - self._samples[-1][0] < 0.1:
            return  # called for every piece: the speed needs a sample a tenth of a second at most
        self._samples = [s for s in self._samples if now - s[0] < 3.0] + [(now, self.fetched_bytes)]
        first = self._samples[0]
        if now - first[0] > 0.2:
            self.speed = (self.fetched_bytes - first[1]) / (now - first[0])

    def journal(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k not in ("token", "cancel_requested", "_samples")}
        data["files"] = [asdict(f) for f in self.files]
        return data

    @classmethod
    def from_journal(cls, data: dict) -> Job:
        """A job as its journal entry has it; ValueError, TypeError or KeyError when the entry is damaged."""
        return cls(**{**data, "files": [HubFile(**f) for f in data["files"]]})


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def downloads_dir() -> Path:
    return config.internal_dir() / "downloads"


class FileJournal:
    """A JSON file per job under `.internal/downloads/jobs`, replaced whole on each save."""

    def entries(self) -> list[dict]:
        folder = downloads_dir() / "jobs"
        return [data for path in (sorted(folder.glob("*.json")) if folder.is_dir() else [])
                if (data := self._load(path)) is not None]

    def entry(self, job_id: str) -> dict | None:
        return self._load(downloads_dir() / "jobs" / f"{job_id}.json")

    @staticmethod
    def _load(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def save(self, data: dict) -> None:
        journal = downloads_dir() / "jobs"
        journal.mkdir(parents=True, exist_ok=True)
        temporary = journal / f".{data['job_id']}.tmp"
        temporary.write_text(json.dumps(data))
        os.replace(temporary, journal / f"{data['job_id']}.json")

    def delete(self, job_id: str) -> None:
        (downloads_dir() / "jobs" / f"{job_id}.json").unlink(missing_ok=True)


def _journal_v1(db: Database) -> None:
    db.execute(f"""CREATE TABLE download_jobs (
        job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL,
        updated_at {dialect_of(db).float_type} NOT NULL, job TEXT NOT NULL)""")
    db.execute("CREATE INDEX download_jobs_owner ON download_jobs (owner)")


# Forward-only, as the response store's (lms/conversation/store.py): never edit a released one.
JOURNAL_MIGRATIONS = [_journal_v1]


class DatabaseJournal:
    """The `download_jobs` table of a shared database: a row per job, tagged with the daemon that runs it (its
    host and LMS_HOME: the files are that daemon's), so a restarted daemon resumes its own jobs only."""

    def __init__(self, database: Database, owner: str | None = None):
        self.db = database
        self.owner = owner or f"{socket.gethostname()}:{config.home().resolve()}"
        self.db.migrate("download_jobs", JOURNAL_MIGRATIONS)

    def entries(self) -> list[dict]:
        rows = self.db.execute("SELECT job FROM download_jobs WHERE owner = ? ORDER BY job_id",
                               (self.owner,)).fetchall()
        return [json.loads(job) for (job,) in rows]

    def entry(self, job_id: str) -> dict | None:
        row = self.db.execute("SELECT job FROM download_jobs WHERE job_id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def save(self, data: dict) -> None:
        self.db.execute("INSERT INTO download_jobs (job_id, owner, status, updated_at, job) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (job_id) DO UPDATE SET owner = excluded.owner, status = excluded.status, "
                        "updated_at = excluded.updated_at, job = excluded.job",
                        (data["job_id"], self.owner, data["status"], time.time(), json.dumps(data)))

    def delete(self, job_id: str) -> None:
        self.db.execute("DELETE FROM download_jobs WHERE job_id = ? AND owner = ?", (job_id, self.owner))


class DownloadManager:
    def __init__(self, reserve_bytes: int = 64 * 1024 * 1024, max_finished_jobs: int = MAX_FINISHED_JOBS, *,
                 database: Database | None = None):
        self.reserve_bytes = reserve_bytes  # never fill the disk to the last byte
        self.max_finished_jobs = max_finished_jobs
        self.jobs: dict[str, Job] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.journal = DatabaseJournal(database) if database is not None else FileJournal()

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Pick up the jobs a previous daemon left unfinished."""
        for data in self.journal.entries():
            try:
                job = Job.from_journal(data)
            except (ValueError, TypeError, KeyError):
                continue
            self.jobs[job.job_id] = job
            if job.status in ACTIVE:
                log.info("resuming download %s of %s@%s", job.job_id, job.repo_id, job.variant)
                self._launch(job)
        self._trim()

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    # --- requests ---------------------------------------------------------------------------------------------

    def submit(self, repo_id: str, commit: str, variant: str, files: list[HubFile], *, endpoint: str | None,
               token: str | None) -> Job:
        """Start (or join) the download of a variant."""
        for job in self.jobs.values():
            if job.repo_id == repo_id and job.variant == variant and job.status in ACTIVE:
                if job.cancel_requested:  # its transfer is stuck in a read: two would write one part file
                    raise LmsError.conflict(f"The cancelled download of {repo_id}@{variant} is still stopping; try "
                                          "again in a moment.", code="download_stopping")
                return job
        job = Job(secrets.token_hex(5), repo_id, commit, variant, files, endpoint=endpoint, token=token)
        job.job_id = f"job_{job.job_id}"
        if all(_complete(job.target_dir / f.path, f) for f in files):
            job.status, job.completed_at, job.done_bytes = "already_downloaded", time.time(), job.total_bytes
            self.jobs[job.job_id] = job
            self._trim()
            return job
        self._check_space(job)
        self.jobs[job.job_id] = job
        self._save(job)
        self._launch(job)
        return job

    def get(self, job_id: str) -> Job:
        """A job of this daemon, or one another daemon sharing the journal runs (as it last saved it)."""
        job = self.jobs.get(job_id)
        if job is None and JOB_ID.fullmatch(job_id):  # never a path: the file journal names files by it
            with contextlib.suppress(ValueError, TypeError, KeyError):
                entry = self.journal.entry(job_id)
                job = Job.from_journal(entry) if entry is not None else None
        if job is None:
            raise LmsError.not_found(f"No download job '{job_id}'.", code="job_not_found")
        return job

    async def cancel(self, job_id: str, wait_seconds: float = 10) -> Job:
        """Stop a job; returns once it has stopped (its part kept), or after `wait_seconds` if the transfer is
        stuck in a read (it stops at its next piece)."""
        job = self.get(job_id)
        if job.status in ACTIVE:
            job.cancel_requested = True
            task = self.tasks.get(job_id)
            if task is not None:
                await asyncio.wait({task}, timeout=wait_seconds)
        return job

    def _check_space(self, job: Job) -> None:
        job.staging_dir.mkdir(parents=True, exist_ok=True)
        needed = job.total_bytes - sum(_partialfile_size(job, f) for f in job.files) + self.reserve_bytes
        free = shutil.disk_usage(job.staging_dir).free
        if free < needed:
            raise LmsError.storage(f"Not enough disk space for {job.repo_id}@{job.variant}: it needs "
                                  f"{file_size(needed)} and {file_size(free)} is free.", code="disk_full")

    # --- running ----------------------------------------------------------------------------------------------

    def _launch(self, job: Job) -> None:
        self.tasks[job.job_id] = asyncio.create_task(self._run(job), name=f"download {job.job_id}")

    async def _run(self, job: Job) -> None:
        job.status, job.error, job.cancel_requested = "downloading", None, False
        self._save(job)
        try:
            job.done_bytes = 0
            fetching = time.perf_counter()
            for file in job.files:
                job.current_bytes = 0
                await asyncio.to_thread(self._fetch, job, file)
                job.done_bytes += file.size
            job.current_bytes = 0
            fetched = time.perf_counter()
            await asyncio.to_thread(self._install, job)
            job.status, job.completed_at = "completed", time.time()
            log.info("downloaded %s@%s (%s): fetched and verified in %.2f s, installed in %.2f s", job.repo_id,
                     job.variant, file_size(job.total_bytes), fetched - fetching, time.perf_counter() - fetched)
        except Cancelled:
            job.status = "cancelled"
        except asyncio.CancelledError:
            self._save(job)  # the daemon is stopping: still "downloading", so the next daemon resumes it
            raise
        except OSError as exc:
            job.status = "failed"
            job.error = (f"The disk is full ({exc.strerror}); free some space and run lms get again to resume."
                         if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else f"Download failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - a download must never take the daemon down
            job.status, job.error = "failed", _describe(exc)
        finally:
            self.tasks.pop(job.job_id, None)
        if job.error:
            log.warning("download %s failed: %s", job.job_id, job.error)
        self._save(job)
        self._trim()

    def _trim(self) -> None:
        """Keep the job list bounded: finished jobs beyond `max_finished_jobs` go, oldest first, with their
        journal files; a running job is never dropped."""
        finished = [job for job in self.jobs.values() if job.status not in ACTIVE and job.job_id not in self.tasks]
        excess = len(finished) - self.max_finished_jobs
        if excess <= 0:
            return
        finished.sort(key=lambda job: job.completed_at or job.started_at)
        for job in finished[:excess]:
            del self.jobs[job.job_id]
            self.journal.delete(job.job_id)

    def _fetch(self, job: Job, file: HubFile) -> None:
        """One file, into `<staging>/<path>.part` then `<staging>/<path>`. huggingface_hub's own HTTP download
        (`http_get`: auth headers, retries, Range) does the transfer; we keep the part file across daemon
        restarts, which its `hf_hub_download` does not (it starts every process on a fresh temporary file)."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        staged = job.staging_dir / file.path
        if _complete(job.target_dir / file.path, file) or _complete(staged, file):
            return
        part = _part_path(job, file)
        url = hf_hub_url(job.repo_id, file.path, revision=job.commit, endpoint=job.endpoint or None)
        try:
            digest = fetch(url, build_hf_headers(token=job.token or None), part, file.size, job.progress)
        except TransferError as exc:
            raise DownloadFailed(f"Download of {file.path} failed: {exc}") from None
        if file.sha256 and digest != file.sha256:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(f"{file.path} does not match the Hub's sha256 (the download was corrupted); "
                                   "it was deleted, run lms get again to fetch it anew.")
        os.replace(part, staged)

    def _install(self, job: Job) -> None:
        """Every file is complete and verified: move them into the models folder, together."""
        job.target_dir.mkdir(parents=True, exist_ok=True)
        for file in job.files:
            staged, installed = job.staging_dir / file.path, job.target_dir / file.path
            if staged.exists():
                installed.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, installed)
        shutil.rmtree(job.staging_dir, ignore_errors=True)

    def _save(self, job: Job) -> None:
        self.journal.save(job.journal())


class ChecksumMismatch(Exception):
    pass


class DownloadFailed(Exception):
    pass


def _complete(path: Path, file: HubFile) -> bool:
    return path.is_file() and path.stat().st_size == file.size


def _part_path(job: Job, file: HubFile) -> Path:
    return job.staging_dir / f"{file.path}.part"


def _partialfile_size(job: Job, file: HubFile) -> int:
    if _complete(job.target_dir / file.path, file) or _complete(job.staging_dir / file.path, file):
        return file.size
    part = _part_path(job, file)
    return part.stat().st_size if part.exists() else 0


def _describe(exc: Exception) -> str:
    if isinstance(exc, (ChecksumMismatch, DownloadFailed)):
        return str(exc)
    return f"Download failed: {type(exc).__name__}: {exc}"
