"""A local stand-in for the Hugging Face Hub, for the tests: repositories in memory, file bytes from disk.

Point the real `huggingface_hub` client (2.4.0) at it with `HF_ENDPOINT=<hub.url>` (see `FakeHub.client_env`) and
these calls work without internet:

    HfApi().list_models(search=..., filter=..., author=..., sort=..., limit=..., full=..., expand=...)
        GET  /api/models
    HfApi().model_info(repo_id, revision=..., files_metadata=...), repo_info, repo_exists, snapshot_download
        GET  /api/models/{repo_id}  and  /api/models/{repo_id}/revision/{revision}   (?blobs=true, ?expand=...)
    HfApi().list_repo_tree(repo_id, path, recursive=...), list_repo_files
        GET  /api/models/{repo_id}/tree/{revision}[/{path}]
    HfApi().get_paths_info(repo_id, paths)
        POST /api/models/{repo_id}/paths-info/{revision}
    hf_hub_download, get_hf_file_metadata, file_exists
        HEAD / GET  /{repo_id}/resolve/{revision}/{filename}   (Range: bytes=START-[END] on GET)

Files are served over plain HTTP, never Xet: no `X-Xet-*` header and no `xetHash` is ever sent, so the client
falls back to its regular download, which resumes a broken transfer with a Range request. Errors carry the
`X-Error-Code` header (RepoNotFound, RevisionNotFound, EntryNotFound) the client turns into its own exceptions.

    with FakeHub() as hub:
        hub.add_repo("org/Model-GGUF", {"model.gguf": path}, tags=["gguf"], downloads=10)
        subprocess.run([...], env=hub.client_env(tmp_path / "hf-home"))

Test hooks: `corrupt` (serve one flipped byte), `interrupt` (drop the connection mid-body once),
`throttle_bytes_per_second` (slow bodies down), `requests` / `bytes_served` (what was sent) and `wait_idle`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD_BYTES = 1024 * 1024  # larger files are LFS files, as big weights are on the real hub
CHUNK_BYTES = 1024 * 1024
HASH_CHUNK_BYTES = 4 * 1024 * 1024
LAST_MODIFIED = "2024-11-20T10:00:00.000Z"
CREATED_AT = "2024-11-01T10:00:00.000Z"
COMMIT_TITLE = "Upload folder using huggingface_hub"
KNOWN_LIBRARIES = ("gguf", "mlx", "transformers", "sentence-transformers")

# Variables that would send the client elsewhere (offline mode, staging, another cache) or authenticate it.
CLIENT_ENV_TO_CLEAR = (
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_CO_STAGING", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HUGGINGFACE_ASSETS_CACHE",
    "HF_XET_CACHE", "HF_HUB_ENABLE_HF_TRANSFER", "HF_XET_HIGH_PERFORMANCE",
)


class ServedRequest(NamedTuple):
    """One HEAD or GET on a /resolve/ URL (error answers too): what was asked for and how many body bytes went out."""

    method: str
    path: str  # the URL path, percent-decoded, without the query
    range: str | None  # the Range header as the client sent it
    bytes_sent: int
    authorization: str | None = None  # the Authorization header as the client sent it


class HubError(Exception):
    """An error answer, in the real hub's form: a status, an `X-Error-Code` header and a JSON body."""

    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def not_found() -> HubError:
    return HubError(404, None, "Not Found")


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def fake_hex(seed: str, length: int = 40) -> str:
    """A stable made-up hex id (commit sha, tree oid, mongo id) for the same seed in every run."""
    return hashlib.sha1(seed.encode()).hexdigest()[:length]


@dataclass
class HubFile:
    """One file of a repository; its bytes stay on disk and its hash is computed once, when first asked for."""

    path: str
    local: Path
    size: int
    _oid: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_lfs(self) -> bool:
        return self.size > LFS_THRESHOLD_BYTES

    @property
    def content_oid(self) -> str:
        """sha256 of the bytes for an LFS file, the git blob oid otherwise: what the client knows it by (ETag)."""
        with self._lock:  # several HEADs may come at once: hash a 100 MB file once
            if self._oid is None:
                digest = hashlib.sha256() if self.is_lfs else hashlib.sha1(b"blob %d\0" % self.size)
                with self.local.open("rb") as handle:
                    while block := handle.read(HASH_CHUNK_BYTES):
                        digest.update(block)
                self._oid = digest.hexdigest()
            return self._oid

    def lfs_pointer(self) -> bytes:
        """The pointer file git stores in place of an LFS file; the repo's blob oid is this file's."""
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.content_oid}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        return git_blob_oid(self.lfs_pointer()) if self.is_lfs else self.content_oid

    def sibling(self, with_blobs: bool) -> dict[str, Any]:
        """Entry of `siblings` in model info (parsed into RepoSibling / BlobLfsInfo)."""
        entry: dict[str, Any] = {"rfilename": self.path}
        if with_blobs:
            entry.update(size=self.size, blobId=self.blob_id)
            if self.is_lfs:
                entry["lfs"] = {"sha256": self.content_oid, "size": self.size, "pointerSize": len(self.lfs_pointer())}
        return entry

    def tree_entry(self) -> dict[str, Any]:
        """Entry of a tree listing or paths-info answer (parsed into RepoFile)."""
        entry: dict[str, Any] = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.is_lfs:
            entry["lfs"] = {"oid": self.content_oid, "size": self.size, "pointerSize": len(self.lfs_pointer())}
        return entry


@dataclass
class Repo:
    repo_id: str
    files: dict[str, HubFile]
    tags: list[str]
    downloads: int
    likes: int
    library_name: str | None
    pipeline_tag: str | None
    extra: dict[str, Any]
    sha: str = ""
    token: str | None = None  # a private repository: only `Authorization: Bearer <token>` sees it

    def __post_init__(self) -> None:
        self.sha = self.sha or fake_hex(f"commit:{self.repo_id}")

    @property
    def author(self) -> str | None:
        return self.repo_id.split("/")[0] if "/" in self.repo_id else None

    def check_revision(self, revision: str) -> None:
        if revision not in ("main", self.sha):
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def folders(self) -> set[str]:
        return {parent for path in self.files for parent in _parents(path)}

    def folder_entry(self, path: str) -> dict[str, Any]:
        return {"type": "directory", "oid": fake_hex(f"tree:{self.repo_id}:{path}"), "size": 0, "path": path}

    def last_commit(self) -> dict[str, str]:
        return {"id": self.sha, "title": COMMIT_TITLE, "date": LAST_MODIFIED}

    def info(self, *, siblings: bool, blobs: bool) -> dict[str, Any]:
        """The model entry of /api/models and /api/models/{repo_id} (parsed into ModelInfo)."""
        entry: dict[str, Any] = {
            "_id": fake_hex(f"id:{self.repo_id}", 24),
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.author,
            "sha": self.sha,
            "lastModified": LAST_MODIFIED,
            "createdAt": CREATED_AT,
            "private": self.token is not None,
            "gated": False,
            "disabled": False,
            "downloads": self.downloads,
            "likes": self.likes,
            "trendingScore": 0,
            "tags": list(self.tags),
            "library_name": self.library_name,
            "pipeline_tag": self.pipeline_tag,
            **self.extra,
        }
        if siblings:
            entry["siblings"] = [self.files[path].sibling(blobs) for path in sorted(self.files)]
        if blobs:
            entry["usedStorage"] = sum(f.size for f in self.files.values())
        return entry


def _parents(path: str) -> Iterable[str]:
    parts = path.split("/")[:-1]
    return ("/".join(parts[: i + 1]) for i in range(len(parts)))


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("true", "1")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """First and last byte asked by `Range: bytes=A-B | A- | -N`; None for the whole file; HubError 416 past the end."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None  # multiple ranges are not used by the client: answering 200 with everything is allowed
    first_text, _, last_text = header[len("bytes="):].strip().partition("-")
    try:
        if first_text:
            first, last = int(first_text), (int(last_text) if last_text else size - 1)
        else:
            first, last = max(size - int(last_text), 0), size - 1
    except ValueError:
        return None
    if first >= size or first > last:
        raise HubError(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{size}"})
    return first, min(last, size - 1)


class FakeHub:
    """Model repositories served the way huggingface.co serves them, on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.throttle_bytes_per_second: int | None = None
        self.requests: list[ServedRequest] = []
        self._corrupted: set[tuple[str, str]] = set()
        self._interrupts: dict[tuple[str, str], int] = {}
        self._server: _HubServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._busy = threading.Condition()
        self._bodies_in_flight = 0

    # -- repositories and test hooks -----------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, Path | str],
        *,
        tags: list[str] | None = None,
        downloads: int = 0,
        likes: int = 0,
        library_name: str | None = None,
        pipeline_tag: str | None = "text-generation",
        extra: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> Repo:
        """Register (or replace) a model repository; `files` maps the path inside the repo to a file on disk.

        `library_name` defaults to the first known library among the tags; `extra` adds fields to the model
        info JSON as the hub would send them (e.g. `{"gguf": {"context_length": 8192}}` or `{"cardData": ...}`).
        With `token` the repository is private: without that bearer token it is answered as the hub answers an
        anonymous client (401, RepoNotFound), and it is left out of searches.
        """
        tags = list(tags or [])
        hub_files = {}
        for path, local in files.items():
            local = Path(local)
            hub_files[path.strip("/")] = HubFile(path=path.strip("/"), local=local, size=local.stat().st_size)
        if library_name is None:
            library_name = next((tag for tag in KNOWN_LIBRARIES if tag in tags), None)
        repo = Repo(repo_id, hub_files, tags, downloads, likes, library_name, pipeline_tag, dict(extra or {}),
                    token=token)
        self.repos[repo_id] = repo
        return repo

    def commit_sha(self, repo_id: str) -> str:
        return self.repos[repo_id].sha

    def corrupt(self, repo_id: str, path: str) -> None:
        """Serve this file with its middle byte flipped: same size, wrong sha256 (the metadata stays right)."""
        self._file(repo_id, path)
        self._corrupted.add((repo_id, path))

    def interrupt(self, repo_id: str, path: str, after_bytes: int) -> None:
        """Drop the connection of the next GET of this file once `after_bytes` of its body have gone out.

        huggingface_hub 2.4.0 takes it for a network error and asks again, in the same call, with `Range: bytes=N-`
        where N is what it had written: it writes in 10 MiB pieces, so N is `after_bytes` rounded down to a multiple
        of 10 MiB (a file over 10 MiB and `after_bytes` >= 10 MiB are needed to see a Range; else it starts over).
        """
        self._file(repo_id, path)
        self._interrupts[(repo_id, path)] = after_bytes

    def bytes_served(self, repo_id: str, path: str) -> int:
        """Body bytes sent for this file over all GETs so far (any revision)."""
        prefix = f"/{repo_id}/resolve/"
        return sum(
            request.bytes_sent
            for request in list(self.requests)
            if request.path.startswith(prefix) and request.path[len(prefix):].partition("/")[2] == path
        )

    def wait_idle(self, timeout: float = 10) -> bool:
        """Wait until no file body is being sent (so `requests` holds every transfer); False on timeout."""
        with self._busy:
            return self._busy.wait_for(lambda: self._bodies_in_flight == 0, timeout)

    def _file(self, repo_id: str, path: str) -> HubFile:
        try:
            return self.repos[repo_id].files[path]
        except KeyError:
            raise KeyError(f"{repo_id} has no file {path}") from None

    # -- server --------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake hub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Serve on a free port of 127.0.0.1 in a daemon thread; returns the base URL to use as HF_ENDPOINT."""
        if self._server is not None:
            return self.url
        self._stopping.clear()
        self._server = _HubServer(("127.0.0.1", 0), _HubHandler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="fake-hub", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and cut open connections, so that no handler thread lingers."""
        if self._server is None:
            return
        self._stopping.set()  # ends throttled bodies at once
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def client_env(self, hf_home: Path | str, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a huggingface_hub process that must use this hub only (it reads these at import)."""
        return self.client_env_for(self.url, hf_home, base)

    @staticmethod
    def client_env_for(url: str, hf_home: Path | str, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """client_env for a hub served by another process at `url`."""
        env = dict(os.environ if base is None else base)
        for name in CLIENT_ENV_TO_CLEAR:
            env.pop(name, None)
        no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
        env.update(
            HF_ENDPOINT=url,
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_XET="1",  # belt and braces: this hub never offers Xet anyway
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            NO_PROXY=no_proxy,
            no_proxy=no_proxy,
        )
        return env

    # -- used by the handler -------------------------------------------------------------------------------------

    def _body_started(self) -> None:
        with self._busy:
            self._bodies_in_flight += 1

    def _body_ended(self, record: ServedRequest) -> None:
        with self._busy:
            self.requests.append(record)
            self._bodies_in_flight -= 1
            self._busy.notify_all()

    def _take_interrupt(self, repo_id: str, path: str) -> int | None:
        return self._interrupts.pop((repo_id, path), None)


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many parallel downloads connect at once

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], hub: FakeHub):
        self.hub = hub
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client pools connections
    server: _HubServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests read `hub.requests` instead

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    # -- routing -------------------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        # Split before decoding: the client sends a revision or a tree path with "/" as %2F inside one segment.
        segments = [unquote(part) for part in url.path.split("/")[1:]]
        query = parse_qs(url.query, keep_blank_values=True)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if segments[:2] == ["api", "models"]:
                self._api(method, segments[2:], query, body)
            elif "resolve" in segments[1:3] and method in ("GET", "HEAD"):
                self._resolve_and_record(method, unquote(url.path), segments)
            else:
                raise not_found()
        except HubError as error:
            self._send_error(error)

    def _may_see(self, repo: Repo) -> bool:
        return repo.token is None or self.headers.get("Authorization") == f"Bearer {repo.token}"

    def _find_repo(self, segments: list[str], keywords: tuple[str, ...]) -> tuple[Repo, list[str]]:
        """The repository the path starts with ("org/name", or a legacy "name") and the segments after it."""
        found = False
        for length in (2, 1):
            repo = self.hub.repos.get("/".join(segments[:length]))
            following = segments[length] if len(segments) > length else ""
            if repo is not None and not self._may_see(repo):
                raise HubError(401, "RepoNotFound", "Repository Not Found: private, and no valid token was sent")
            if repo is not None and following in keywords:
                return repo, segments[length:]
            found = found or repo is not None
        raise not_found() if found else HubError(404, "RepoNotFound", "Repository not found")

    def _api(self, method: str, segments: list[str], query: dict[str, list[str]], body: bytes) -> None:
        if not segments:
            if method != "GET":
                raise not_found()
            return self._send_json(self._list_models(query))
        repo, rest = self._find_repo(segments, ("", "revision", "tree", "paths-info"))
        if method == "GET" and (not rest or (len(rest) == 2 and rest[0] == "revision")):
            repo.check_revision(rest[1] if rest else "main")
            return self._send_json(self._model_info(repo, query))
        if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
            repo.check_revision(rest[1])
            entries = self._tree(repo, rest[1], "/".join(rest[2:]), _flag(query, "recursive"), _flag(query, "expand"))
            return self._send_json(entries)
        if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
            repo.check_revision(rest[1])
            form = parse_qs(body.decode(), keep_blank_values=True)
            return self._send_json(self._paths_info(repo, form.get("paths", []), _flag(form, "expand")))
        raise not_found()

    # -- JSON endpoints ------------------------------------------------------------------------------------------

    def _list_models(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        search = query.get("search", [""])[-1].lower()
        filters = set(query.get("filter", []))
        author = query.get("author", [None])[-1]
        repos = [
            repo
            for repo in self.hub.repos.values()
            if search in repo.repo_id.lower()
            and filters <= set(repo.tags) | {repo.library_name}
            and (author is None or repo.author == author)
            and self._may_see(repo)
        ]
        sort = query.get("sort", [None])[-1]
        if sort in ("downloads", "likes"):  # the hub sorts descending, most downloaded first
            repos.sort(key=lambda repo: getattr(repo, sort), reverse=True)
        if "limit" in query:
            repos = repos[: int(query["limit"][-1])]
        expand = query.get("expand", [])
        siblings = _flag(query, "full") or "siblings" in expand
        return [_only_expanded(repo.info(siblings=siblings, blobs=False), expand) for repo in repos]

    def _model_info(self, repo: Repo, query: dict[str, list[str]]) -> dict[str, Any]:
        info = repo.info(siblings=True, blobs=_flag(query, "blobs"))
        return _only_expanded(info, query.get("expand", []))

    def _tree(self, repo: Repo, revision: str, folder: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
        folder = folder.strip("/")
        folders = repo.folders()
        if folder and folder not in folders:
            raise HubError(404, "EntryNotFound", f'{folder} does not exist on "{revision}"')
        prefix = f"{folder}/" if folder else ""

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix):])

        entries = [repo.folder_entry(path) for path in sorted(folders) if listed(path)]
        entries += [repo.files[path].tree_entry() for path in sorted(repo.files) if listed(path)]
        return [_with_last_commit(entry, repo) if expand else entry for entry in entries]

    def _paths_info(self, repo: Repo, paths: list[str], expand: bool) -> list[dict[str, Any]]:
        folders = repo.folders()
        entries = []
        for path in (path.strip("/") for path in paths):  # paths that do not exist are left out, as on the hub
            if path in repo.files:
                entries.append(repo.files[path].tree_entry())
            elif path in folders:
                entries.append(repo.folder_entry(path))
        return [_with_last_commit(entry, repo) if expand else entry for entry in entries]

    # -- file downloads ------------------------------------------------------------------------------------------

    def _resolve_and_record(self, method: str, path: str, segments: list[str]) -> None:
        try:
            self._resolve(method, path, segments)
        except HubError:
            self.hub.requests.append(ServedRequest(method, path, self.headers.get("Range"), 0,
                                                   self.headers.get("Authorization")))
            raise

    def _resolve(self, method: str, path: str, segments: list[str]) -> None:
        repo, rest = self._find_repo(segments, ("resolve",))
        if len(rest) < 3:
            raise not_found()
        revision, filename = rest[1], "/".join(rest[2:])
        repo.check_revision(revision)
        commit_header = {"X-Repo-Commit": repo.sha}
        hub_file = repo.files.get(filename)
        if hub_file is None:
            raise HubError(404, "EntryNotFound", f'{filename} does not exist on "{revision}"', commit_header)

        range_header = self.headers.get("Range")
        span = parse_range(range_header, hub_file.size) if method == "GET" else None
        first, last = span if span is not None else (0, hub_file.size - 1)
        self.send_response(206 if span is not None else 200)
        for name, value in self._file_headers(repo, hub_file).items():
            self.send_header(name, value)
        if span is not None:
            self.send_header("Content-Range", f"bytes {first}-{last}/{hub_file.size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.end_headers()
        if method == "HEAD":
            self.hub.requests.append(ServedRequest(method, path, range_header, 0, self.headers.get("Authorization")))
            return

        self.hub._body_started()
        sent = 0
        try:
            sent = self._send_file(repo, hub_file, first, last - first + 1)
        finally:
            self.hub._body_ended(ServedRequest(method, path, range_header, sent, self.headers.get("Authorization")))

    def _file_headers(self, repo: Repo, hub_file: HubFile) -> dict[str, str]:
        """What the client reads from HEAD: the commit, the ETag it caches files by, the size."""
        headers = {
            "X-Repo-Commit": repo.sha,
            "ETag": f'"{hub_file.content_oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if hub_file.is_lfs:
            # On huggingface.co these come on the redirect to the CDN; the client prefers them to ETag/Content-Length.
            headers["X-Linked-Etag"] = f'"{hub_file.content_oid}"'
            headers["X-Linked-Size"] = str(hub_file.size)
        return headers

    def _send_file(self, repo: Repo, hub_file: HubFile, offset: int, length: int) -> int:
        """Stream `length` bytes from `offset`, with the test hooks applied; returns how many went out."""
        key = (repo.repo_id, hub_file.path)
        interrupt_after = self.hub._take_interrupt(*key)
        limit = length if interrupt_after is None else min(length, interrupt_after)
        flip_at = hub_file.size // 2 if key in self.hub._corrupted else None
        sent = 0
        started = time.monotonic()
        try:
            with hub_file.local.open("rb") as handle:
                if interrupt_after is None and flip_at is None and not self.hub.throttle_bytes_per_second:
                    # Nothing to tamper with: let the kernel send it (a real Hub's CDN costs the client's CPU
                    # nothing either, so a benchmark measures the client, not this server).
                    self.wfile.flush()
                    return self.connection.sendfile(handle, offset, limit)
                handle.seek(offset)
                while sent < limit:
                    rate = self.hub.throttle_bytes_per_second
                    data = self._read_chunk(handle, offset + sent, min(_chunk_size(rate), limit - sent), flip_at)
                    if not data:
                        break  # the file shrank on disk: the short body shows up as a client error
                    self.wfile.write(data)
                    sent += len(data)
                    if rate and self.hub._stopping.wait(max(started + sent / rate - time.monotonic(), 0)):
                        break
        except OSError:
            pass  # the client went away (killed mid-download) or the hub stopped: record what was sent
        if sent < length:
            self.close_connection = True  # a short body is only detectable if the connection ends
        return sent

    @staticmethod
    def _read_chunk(handle: BinaryIO, position: int, size: int, flip_at: int | None) -> bytes:
        data = handle.read(size)
        if flip_at is not None and position <= flip_at < position + len(data):
            changed = bytearray(data)
            changed[flip_at - position] ^= 0xFF
            return bytes(changed)
        return data

    # -- answers -------------------------------------------------------------------------------------------------

    def _send_json(self, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, error: HubError) -> None:
        headers = dict(error.headers)
        if error.code is not None:
            # Header values must be latin-1: keep odd file names readable instead of failing the answer.
            message = error.message.encode("ascii", "backslashreplace").decode()
            headers.update({"X-Error-Code": error.code, "X-Error-Message": message})
        self._send_json({"error": error.message}, error.status, headers)


def _chunk_size(rate: int | None) -> int:
    # Throttled bodies go out in small pieces (~20 a second) so a slow transfer looks steady, not bursty.
    return CHUNK_BYTES if not rate else max(1, min(CHUNK_BYTES, rate // 20))


def _only_expanded(info: dict[str, Any], expand: list[str]) -> dict[str, Any]:
    """With `expand`, the hub answers the listed properties only (plus the ids)."""
    if not expand:
        return info
    return {name: value for name, value in info.items() if name in ("_id", "id") or name in expand}


def _with_last_commit(entry: dict[str, Any], repo: Repo) -> dict[str, Any]:
    return {**entry, "lastCommit": repo.last_commit()}


if __name__ == "__main__":
    # python -m tests.hf_server [--throttle BYTES_PER_SECOND] OWNER/REPO=FILE...: serve those files (one repo
    # each) until killed; prints the URL.
    import sys

    served = FakeHub()
    specs = sys.argv[1:]
    if specs[:1] == ["--throttle"]:
        served.throttle_bytes_per_second, specs = int(specs[1]), specs[2:]
    for spec in specs:
        repo_id, _, local = spec.partition("=")
        served.add_repo(repo_id, {Path(local).name: Path(local)}, tags=["gguf"])
    print(served.start(), flush=True)
    threading.Event().wait()
