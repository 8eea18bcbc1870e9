"""The `files` namespace: `uploadFileBase64` (what `client.prepare_image()` sends) into the client's file store
(lms.api.lmstudio.file_store)."""

from __future__ import annotations

import base64
import binascii

from lms.api.lmstudio.file_store import client_files
from lms.api.lmstudio.session import Namespace, Session
from lms.errors import Kind, LmsError
from lms.pipeline.images import MAX_IMAGE_BYTES

MAX_NAME_CHARS = 256


async def upload_file_base64(session: Session, parameter) -> dict:
    name = parameter.get("name") if isinstance(parameter, dict) else None
    content = parameter.get("contentBase64") if isinstance(parameter, dict) else None
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise LmsError.invalid(f"'name' must be a file name of 1 to {MAX_NAME_CHARS} characters.", "name")
    if not isinstance(content, str):
        raise LmsError.invalid("'contentBase64' must be a base64 string.", "contentBase64")
    if len(content) * 3 // 4 > MAX_IMAGE_BYTES:
        raise LmsError(f"A file may be at most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB.", Kind.TOO_LARGE,
                       param="contentBase64", code="file_too_large")
    try:
        data = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LmsError.invalid(f"'contentBase64' is not valid base64: {exc}", "contentBase64") from None
    return client_files(session.app_state).add(session.client_id, name, data).handle()


def namespace() -> Namespace:
    return Namespace("files", rpcs={"uploadFileBase64": upload_file_base64})
