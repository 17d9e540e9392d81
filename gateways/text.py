"""Text and media helpers every chat channel shares: lengths as Telegram and WhatsApp count them,
splitting a long text on natural boundaries, and which media URLs are videos."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse


def utf16_length(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int, length: Callable[[str], int] = utf16_length) -> list[str]:
    """Split on paragraph, line or word boundaries into parts of at most `limit` (as `length` counts)."""
    parts: list[str] = []
    rest = text.strip()
    while length(rest) > limit:
        # the longest prefix within the limit, then back off to a natural boundary
        cut = limit
        while length(rest[:cut]) > limit:
            cut -= 1
        window = rest[:cut]
        for sep in ("\n\n", "\n", " "):
            at = window.rfind(sep)
            if at > cut // 2:
                cut = at
                break
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def is_video(url: str) -> bool:
    """A media URL's kind: .mp4 is a video, anything else a photo."""
    return urlparse(url).path.lower().endswith(".mp4")
