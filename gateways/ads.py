"""What every ad destination (Meta's Conversions API, TikTok's Events API, Utmify's orders) has in
common, so one event pipeline (actors/pixel.py) can send to all of them:

    DestinationError
    ├── DestinationTransient   retry with backoff: network errors, timeouts, 429, 5xx
    └── DestinationPermanent   never retried: the destination refused it (its message kept)

`str()` of an error is the whole story (kept with the events); `summary` leaves out the
destination's own message, which may quote a value we sent: that one is for log lines.

What happened is described once (`AdEvent`: a page view, a /start, a checkout, a purchase, a
refund, with its `Buyer` and `Order`); each destination builds its own payload from it (`AdKind.build`,
None when it takes no such event) and sends a batch of payloads to one target (a pixel, a bot's
Utmify account) with that target's credentials, saying how many it took."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol


def sha256_hex(value: str) -> str:
    """How a value that identifies a person travels to an ad platform (after normalisation)."""
    return hashlib.sha256(value.encode()).hexdigest()


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


# --- what happened, as every destination reads it ----------------------------------------------


@dataclass(frozen=True)
class Buyer:
    """Who did it: their id on the chat channel and their last ad click."""

    person_id: int | None = None
    fbc: str | None = None
    fbp: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    source_url: str | None = None
    ttclid: str | None = None
    ttp: str | None = None
    utm: dict[str, str] = field(default_factory=dict)
    name: str = ""
    ctwa_clid: str | None = None  # a Click-to-WhatsApp ad's click (CONTRACT §12)

    def __repr__(self) -> str:  # personal data: never in a log line
        return "Buyer(...)"


@dataclass(frozen=True)
class Line:
    """An offer of an order: the seller's id for it, its label, its price in the order."""

    id: str
    name: str
    price: Decimal


@dataclass(frozen=True)
class Order:
    """The charge behind a checkout, a purchase or a refund."""

    id: int
    created_at: dt.datetime
    total: Decimal  # the charge's amount
    offer_id: int
    offer: Line | None  # None when the offer is no longer configured
    bump: Line | None
    customer_id: str
    paid_at: dt.datetime | None = None
    refunded_at: dt.datetime | None = None


@dataclass(frozen=True)
class AdEvent:
    """One thing worth telling the ad platforms: PageView (a click on a bot's link), ViewContent
    (a /start), InitiateCheckout (a code to pay), Purchase (paid: `value` is what was paid) or
    Refund. `whatsapp`: the buyer is a WhatsApp number (`person_id` its digits);
    `business_account`: the bot's WhatsApp business account, where it has one."""

    name: str
    event_id: str
    at: dt.datetime
    buyer: Buyer
    value: Decimal | None = None
    content_name: str | None = None  # ViewContent: the bot
    order: Order | None = None
    whatsapp: bool = False
    business_account: str | None = None


@dataclass(frozen=True)
class Payload:
    """An event as one destination takes it, with the id, name and time it is kept under there."""

    event_id: str
    name: str
    at: dt.datetime
    doc: dict[str, Any]


@dataclass(frozen=True)
class AdKind:
    """A destination as the platform knows it: which of a bot's keys say where its events go
    (`target`: the key naming it) and with which credentials (credential → the bot's key), and how
    it builds its payload from an `AdEvent`."""

    name: str
    target: str
    credentials: Mapping[str, str]
    required: tuple[str, ...]  # the bot's keys that must be set for it to send here
    build: Callable[[AdEvent], Payload | None]
