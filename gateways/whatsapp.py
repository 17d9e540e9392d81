"""What the two WhatsApp channels (Evolution API, the Cloud API) share: numbers, the click token in
a buyer's first message, the shape of a message's parts, scrubbing providers' error texts."""

from __future__ import annotations

import re
from typing import Any

from gateways.channel import CODE_SLOT, Message
from gateways.text import split_text

TEXT_LIMIT = 4096  # a message's text, in characters
CAPTION_LIMIT = 1024
# A click token (clicks.py: 30 characters of A-Za-z0-9_-) anywhere in the prefilled text of a wa.me link.
TOKEN = re.compile(r"(?<![A-Za-z0-9_-])([A-Za-z0-9_-]{30})(?![A-Za-z0-9_-])")
NUMBER = re.compile(r"^[0-9]{8,15}$")
_DIGITS = re.compile(r"[0-9]{6,}")
# WhatsApp's chat ids that are not one person: groups, broadcast lists, status updates, channels.
NOT_A_PERSON = ("@g.us", "@broadcast", "@newsletter", "@lid")


def number_of(jid: Any) -> int | None:
    """A WhatsApp jid's (or wa_id's) number as an integer; None for groups, lists and anything else."""
    if not isinstance(jid, str) or any(jid.endswith(suffix) for suffix in NOT_A_PERSON):
        return None
    digits = jid.split("@", 1)[0].split(":", 1)[0]
    return int(digits) if NUMBER.match(digits) else None


def click_token(text: str | None) -> str | None:
    """The click token a wa.me link put in the buyer's first message, if it is still there."""
    match = TOKEN.search(text or "")
    return match.group(1) if match else None


def scrub(text: Any, limit: int = 300) -> str:
    """A provider's error text without digit runs (a buyer's number) and cut short."""
    return _DIGITS.sub("…", str(text))[:limit]


def plain_text(message: Message) -> str:
    """The message's text for WhatsApp: the code is a message of its own, so its slot is dropped."""
    text = message.text.replace(CODE_SLOT, "")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def numbered(text: str, message: Message) -> str:
    """The text with the message's choices as a numbered list the buyer answers with a number."""
    if not message.choices:
        return text
    lines = "\n".join(f"*{i}* — {choice.label}" for i, choice in enumerate(message.choices, 1))
    return f"{text}\n\n{lines}" if text else lines


def pieces(text: str) -> list[str]:
    return split_text(text, TEXT_LIMIT, len)
