"""Media types of the bytes requests carry, told by their leading bytes (never by a name or a header)."""

from __future__ import annotations

# Leading bytes of the image formats the vision engines decode.
IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF87a": "image/gif",
                    b"GIF89a": "image/gif", b"BM": "image/bmp"}


def image_type(data: bytes) -> str | None:
    for signature, media_type in IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
