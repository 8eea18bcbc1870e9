"""Compaction items: a conversation packed into opaque, tamper-evident content the server accepts back.

The content is the items themselves (lossless), zlib-compressed, signed with HMAC-SHA256 under a key kept in
LMS_HOME (mode 0600), and base64-encoded. A client can neither read it as a contract nor alter it unseen.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import zlib
from functools import lru_cache

from lms import config
from lms.errors import LmsError

_VERSION = b"lmsc1"


@lru_cache(maxsize=4)
def _key(home: str) -> bytes:
    path = config.internal_dir() / "compaction.key"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    return path.read_bytes()


def seal(items: list[dict]) -> str:
    payload = zlib.compress(json.dumps(items, separators=(",", ":")).encode())
    signature = hmac.new(_key(str(config.home())), _VERSION + payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(_VERSION + signature + payload).decode()


def unseal(content: str, param: str = "input") -> list[dict]:
    invalid = LmsError.invalid("The compaction item's encrypted_content is not valid (altered, truncated, or made by "
                              "another server).", param, code="invalid_encrypted_content")
    try:
        raw = base64.urlsafe_b64decode(content.encode())
    except (ValueError, TypeError):
        raise invalid from None
    version, signature, payload = raw[:5], raw[5:37], raw[37:]
    expected = hmac.new(_key(str(config.home())), version + payload, hashlib.sha256).digest()
    if version != _VERSION or not hmac.compare_digest(signature, expected):
        raise invalid
    try:
        items = json.loads(zlib.decompress(payload))
    except (ValueError, zlib.error):
        raise invalid from None
    if not isinstance(items, list):
        raise invalid
    return items
