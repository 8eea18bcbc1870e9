"""What clients upload through the `files` namespace, kept in memory per client identifier: shared by the client's
sockets (its `llm` predictions name files by identifier) and dropped when its last socket closes, as LM Studio
does."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

from lms.errors import Kind, LmsError
from lms.generation.media import image_type

MAX_CLIENT_BYTES = 256 * 1024 * 1024  # all files of one client together

@dataclass(frozen=True)
class StoredFile:
    identifier: str
    name: str
    data: bytes
    file_type: str  # LM Studio's FileType
    media_type: str | None  # for images

    def handle(self) -> dict:
        return {"identifier": self.identifier, "fileType": self.file_type, "sizeBytes": len(self.data)}

    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode()}"


@dataclass
class _Client:
    sockets: int = 0
    files: dict[str, StoredFile] = field(default_factory=dict)

    def size(self) -> int:
        return sum(len(f.data) for f in self.files.values())


class ClientFiles:
    """Every connected client's files, counted by its open sockets."""

    def __init__(self) -> None:
        self._clients: dict[str, _Client] = {}

    def attach(self, client: str) -> None:
        self._clients.setdefault(client, _Client()).sockets += 1

    def detach(self, client: str) -> None:
        entry = self._clients.get(client)
        if entry is not None:
            entry.sockets -= 1
            if entry.sockets <= 0:
                del self._clients[client]

    def of(self, client: str | None) -> dict[str, StoredFile]:
        entry = self._clients.get(client) if client else None
        return entry.files if entry is not None else {}

    def add(self, client: str, name: str, data: bytes) -> StoredFile:
        entry = self._clients.get(client)
        if entry is None:
            raise LmsError.invalid("This client has no open connection.", "clientIdentifier")
        if entry.size() + len(data) > MAX_CLIENT_BYTES:
            raise LmsError("A client may keep at most 256 MiB of files; this one would exceed it.", Kind.TOO_LARGE,
                           param="contentBase64", code="files_too_large")
        media_type = image_type(data)
        stored = StoredFile(f"file-{secrets.token_hex(8)}", name, data, file_type(name, data, media_type), media_type)
        entry.files[stored.identifier] = stored
        return stored


def file_type(name: str, data: bytes, media_type: str | None) -> str:
    """LM Studio's FileType of an upload, from its content first and its name second."""
    if media_type:
        return "image"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if name.lower().endswith((".doc", ".docx")):
        return "application/word"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    return "text/plain" if name.lower().endswith((".txt", ".md")) else "text/other"


def client_files(state) -> ClientFiles:
    files = getattr(state, "lmstudio_files", None)
    if files is None:
        files = state.lmstudio_files = ClientFiles()
    return files
