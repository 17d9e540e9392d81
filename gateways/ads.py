"""What every ad destination (Meta's Conversions API, TikTok's Events API, Utmify's orders) has in
common, so one event pipeline (actors/pixel.py) can send to all of them:

    DestinationError
    ├── DestinationTransient   retry with backoff: network errors, timeouts, 429, 5xx
    └── DestinationPermanent   never retried: the destination refused it (its message kept)

`str()` of an error is the whole story (kept with the events); `summary` leaves out the
destination's own message, which may quote a value we sent: that one is for log lines.

A destination sends a batch of payloads (as built for it) to one target (a pixel, a bot's Utmify
account) with that target's credentials and says how many it took."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class DestinationError(Exception):
    def __init__(self, message: str, summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary or message


class DestinationTransient(DestinationError):
    pass


class DestinationPermanent(DestinationError):
    """`content`: the destination refused what the request carried (one invalid event rejects a
    whole batch), not the credentials: a smaller batch may pass."""

    def __init__(self, message: str, summary: str | None = None, *, content: bool = False) -> None:
        super().__init__(message, summary)
        self.content = content


@dataclass(frozen=True)
class Sent:
    events_received: int
    trace_id: str | None = None  # the destination's own id of the request, for support

    @property
    def fbtrace_id(self) -> str | None:  # Meta's name for it
        return self.trace_id


class Destination(Protocol):
    name: str
    max_batch: int  # payloads per request
    ordered: bool  # later payloads about the same thing must wait for earlier ones (an order's states)

    def send(self, target: str, credentials: Mapping[str, str | None], payloads: Sequence[dict[str, Any]]) -> Sent: ...
