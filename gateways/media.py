"""Images and videos a seller uploads (a welcome's, a follow-up's, a broadcast's), kept by the
platform under MEDIA_DIR, content-addressed: `media:{sha256}.{ext}` is how the configuration refers
to one (where an https URL may stand). Channels send such a media by upload the first time and by
the id their provider gave back after (Telegram's file_id, the Cloud API's media id), or inline
(Evolution, base64).

Several machines must share MEDIA_DIR (a network volume): a file is written once, atomically, under
its hash, and never changed, so any machine may read what another stored."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import settings

REF = re.compile(r"^media:([0-9a-f]{64})\.(jpg|png|mp4)$")
TYPES = {"jpg": "image/jpeg", "png": "image/png", "mp4": "video/mp4"}
# What a channel takes: Telegram photos 10 MB, WhatsApp images 5 MB and videos 16 MB (the smaller of each).
LIMITS = {"jpg": 5 * 1024 * 1024, "png": 5 * 1024 * 1024, "mp4": 16 * 1024 * 1024}


class MediaError(ValueError):
    """An upload that is no image or video a channel takes, or a reference to nothing stored."""


def is_ref(value: str | None) -> bool:
    return bool(value) and REF.match(value or "") is not None


def kind_of(data: bytes) -> str | None:
    """The file's kind by its first bytes (not by its name or the browser's word): jpg, png, mp4."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(data) > 12 and data[4:8] == b"ftyp":
        return "mp4"
    return None


def _path(digest: str, ext: str) -> Path:
    return Path(settings.MEDIA_DIR) / digest[:2] / f"{digest}.{ext}"


def store(data: bytes) -> str:
    """Keep the file (once: the same bytes are the same file) and return its reference."""
    ext = kind_of(data)
    if ext is None:
        raise MediaError("only JPEG or PNG images and MP4 videos")
    if len(data) > LIMITS[ext]:
        raise MediaError(f"at most {LIMITS[ext] // (1024 * 1024)} MB for a {'video' if ext == 'mp4' else 'image'}")
    digest = hashlib.sha256(data).hexdigest()
    path = _path(digest, ext)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return f"media:{digest}.{ext}"


def load(ref: str) -> tuple[str, bytes, str]:
    """(file name, bytes, content type) of a stored media; MediaError when there is none."""
    match = REF.match(ref)
    if match is None:
        raise MediaError(f"not a media reference: {ref[:80]!r}")
    digest, ext = match.groups()
    try:
        data = _path(digest, ext).read_bytes()
    except OSError:
        raise MediaError(f"media {digest[:12]}… is not in MEDIA_DIR") from None
    return f"{digest[:16]}.{ext}", data, TYPES[ext]
