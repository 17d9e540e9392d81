"""A chat channel: what the funnel, the money path, follow-ups and broadcasts need of Telegram or
WhatsApp, and nothing of how either one does it (CONTRACT §5, §12).

A stage says *what* a buyer receives as a `Message` (text, media, an uploaded image, a PIX code,
choices to pick from); the bot's `Channel` renders it into the requests its provider takes
(`render`), makes each request (`call`), and reads what its provider sends us (`inbound`). Three
implementations: `gateways.telegram.TelegramChannel`, `gateways.evolution.EvolutionChannel`,
`gateways.whatsapp_cloud.CloudChannel`.

Errors, the same for every channel, translated at each gateway's boundary:

    ChannelError
    ├── ChannelTransient         retry with backoff: network errors, timeouts, 5xx
    │   ├── ChannelRetryAfter    the provider asks us to wait `retry_after` seconds (not a failure)
    │   ├── ChannelMaybeSent     the request left but no answer came: the provider may have acted on it
    │   └── ChannelDisconnected  the WhatsApp number is not connected: its sends wait, none fails
    └── ChannelPermanent         never retried: refused (description kept), outside Cloud's 24-hour window...
        ├── ChannelBlocked       the buyer blocked the bot (Telegram 403), or the number is not on WhatsApp
        └── ChannelGaveUp        transient failures at every retry of the channel's schedule: dead-lettered

No error message carries a token, an apikey or a buyer's number."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, runtime_checkable

import httpx


class ChannelError(Exception):
    def __init__(self, method: str, description: str, *, status: int | None = None) -> None:
        super().__init__(f"{method}: {description}")
        self.method = method
        self.description = description
        self.status = status


class ChannelTransient(ChannelError):
    pass


class ChannelRetryAfter(ChannelTransient):
    def __init__(self, method: str, description: str, retry_after: float) -> None:
        super().__init__(method, description, status=429)
        self.retry_after = retry_after


class ChannelMaybeSent(ChannelTransient):
    pass


class ChannelDisconnected(ChannelTransient):
    pass


class ChannelPermanent(ChannelError):
    pass


class ChannelBlocked(ChannelPermanent):
    pass


class ChannelGaveUp(ChannelPermanent):
    """A send failed at every retry of its channel's schedule: its message goes to the dead letter
    queue (`ops retry-dead` sends it again); the send itself stays owed."""


@contextmanager
def sent_or_not(method: str) -> Iterator[None]:
    """httpx's failures inside the block as the channel's: the request never left (connection
    refused, connect or pool timeout) → ChannelTransient; it left and no answer came →
    ChannelMaybeSent. Never with httpx's text (URLs hold tokens)."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        raise ChannelTransient(method, f"connection failed ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise ChannelMaybeSent(method, f"no answer ({type(exc).__name__})") from None


class Malformed(ValueError):
    """An inbound payload that can never be processed: wrong types, ids out of range. Recorded once,
    never retried, and its content is never logged."""


# Where a PIX text template puts the code: each channel shows it its own way (Telegram: a
# tap-to-copy block inside the text; WhatsApp: a message whose whole body is the code).
CODE_SLOT = "\x00code\x00"


@dataclass(frozen=True)
class Choice:
    """Something the buyer can pick: `data` is what comes back (`buy:7`, `chk:12`, `fu:3`...)."""

    data: str
    label: str


@dataclass(frozen=True)
class Message:
    """What a buyer receives, as a stage means it. Parts come out in this order: the media (or the
    uploaded image), the text, the choices with the last part that can carry them."""

    text: str = ""
    media_url: str | None = None  # .mp4 → a video, anything else a photo
    image: tuple[str, bytes, str] | None = field(default=None, repr=False)  # an upload: (name, bytes, type)
    choices: tuple[Choice, ...] = ()
    code: str | None = None  # a PIX BR Code: `text` holds CODE_SLOT where the seller's template put it
    copy_label: str | None = None  # a button that copies the code, where the channel has one
    link_preview: bool = True
    reuse_media: bool = False  # the welcome: Telegram sends the file_id it gave back last time
    paid: bool = False  # a paid broadcast (Telegram's allow_paid_broadcast)
    access: bool = False  # it delivers what the buyer paid for: Cloud may send it as the bot's access template


@dataclass(frozen=True)
class Request:
    """One request a channel makes for a message: `method` names it (metrics, the outbox row),
    `params` is the provider's body. The last request of a message is keyed by the message's own
    key; earlier ones by `{key}:{part}`."""

    key: str
    method: str
    params: dict[str, Any]
    files: dict[str, tuple[str, bytes, str]] | None = field(default=None, repr=False)
    fallback: dict[str, Any] | None = None  # a second form to try once when the first is refused
    menu: tuple[str, ...] | None = None  # numbered choices this message shows: their data, in order
    throttled: bool = True  # answers to a button press take no slot of the bot's window
    on_result: Callable[[Any], None] | None = field(default=None, compare=False)
    free_form: bool = True  # Cloud: a session message, only within 24 h of the buyer's last message
    template_text: str | None = None  # Cloud: outside the 24 h, sent as the access template with this text


@dataclass(frozen=True)
class Person:
    """Who wrote to us: a Telegram user, or a WhatsApp number (its digits as `id`)."""

    id: int
    first_name: str = ""
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None


@dataclass(frozen=True)
class JoinRequest:
    """Someone asks to join a chat the bot administers (by an invite link that needs approval)."""

    chat_id: int
    user_id: int
    date: int  # epoch seconds: when they asked


@dataclass(frozen=True)
class MemberJoined:
    """Someone's membership of a chat the bot administers changed to `status`, by `invite_link`."""

    chat_id: int
    user_id: int
    status: str  # member, left, kicked...
    invite_link: str | None


@dataclass(frozen=True)
class Inbound:
    """One thing a buyer did, as the router sees it, whatever the channel.

    kind: start (the funnel's entry: /start, a WhatsApp message with a click token or a number's
    first), message, callback (a choice picked: `data`), block, unblock, join_request /
    chat_member (a sold chat's membership: `member`), other."""

    update_id: int  # unique per bot for this event: Telegram's update_id, or from the WhatsApp message id
    kind: str
    person: Person | None = None
    chat_id: int | None = None
    text: str | None = None
    payload: str | None = None  # the click token it carries
    data: str | None = None  # the picked choice's data
    callback_id: str | None = None  # what the channel needs to answer the pick (Telegram)
    ctwa_clid: str | None = None  # a Click-to-WhatsApp ad's click id
    member: JoinRequest | MemberJoined | None = None  # join_request, chat_member
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


MAX_EVENT_ID = 2**63 - 1  # an event's id as the database stores it (BIGINT): Telegram's update_id


def usable_event_id(value: object) -> TypeGuard[int]:
    """An integer (not a bool) from 1 to MAX_EVENT_ID: what an update's id must be to be recorded."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_EVENT_ID


def keyed(key: str, parts: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Every channel's key scheme: the last part under the message's own key, earlier ones under
    `{key}:{part}`."""
    return [(key if i == len(parts) - 1 else f"{key}:{name}", spec) for i, (name, spec) in enumerate(parts)]


def update_id_of(message_id: str) -> int:
    """A WhatsApp message id as a positive 63-bit integer: the same key Telegram's update_id is
    (collisions: one in 2^63 per pair)."""
    digest = hashlib.sha256(message_id.encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big") & MAX_EVENT_ID or 1


@runtime_checkable
class Membership(Protocol):
    """What a channel whose chats are sold (Telegram's groups and channels) does with their members.
    Delivery and subscriptions ask a bot's channel for it (`membership`) and never name a
    provider's method; a channel without chats to sell (WhatsApp) has none."""

    def invite_link(self, key: str, chat_id: int, *, name: str, expire_date: int, by_request: bool) -> Request:
        """A link only one person can use, or (`by_request`) one whose joins wait for our answer."""
        ...

    def link_of(self, result: Any) -> str:
        """The link an `invite_link` request's answer holds."""
        ...

    def revoke_link(self, key: str, chat_id: int, link: str) -> Request: ...

    def remove_member(self, key: str, chat_id: int, user_id: int) -> list[Request]:
        """Out of the chat in a way that lets them back in later (by paying)."""
        ...

    def answer_join(self, key: str, chat_id: int, user_id: int, *, approve: bool) -> Request: ...


def membership(channel: Channel) -> Membership | None:
    """The channel's members' side, when its chats can be sold."""
    return channel if isinstance(channel, Membership) else None


# A header of an inbound webhook by its lowercase name, as bytes (None when absent).
Header = Callable[[bytes], bytes | None]


@dataclass(frozen=True)
class ChannelKind:
    """What the platform knows of a kind of chat channel before any bot uses it: its configuration
    keys, the route its provider posts to, its pace and limits, and how an inbound webhook is told
    authentic and read. `keys` are a bot's own keys for this kind (True = required); `authentic` and
    `parse` get those keys' values as configured (`secrets`)."""

    name: str  # telegram | evolution | whatsapp_cloud: a bot's `channel`
    route: str  # its webhooks: POST /webhook/{route}/{bot_id}
    keys: Mapping[str, bool]
    rate_per_minute: int | None  # a bot's default pace; None: the platform's Telegram settings
    text_limit: int  # a text message's length
    authentic: Callable[[Mapping[str, Any], Header, bytes], bool]
    parse: Callable[[dict[str, Any], Mapping[str, Any]], list[Inbound]]  # raises Malformed
    forward: tuple[str, ...] | None = None  # the body's fields the router gets; None: the body as it came
    unauthentic: str = "bad or missing signature"  # the 401's words when `authentic` says no

    @property
    def numbered(self) -> bool:
        """A number's channel (WhatsApp): no bot username, a phone number and a pace of its own."""
        return self.rate_per_minute is not None


class Channel(Protocol):
    """One bot's chat channel."""

    bot_id: str
    kind: str  # telegram | evolution | whatsapp_cloud
    # Sends per window (ms), per bot or number, shared by every worker.
    rate: tuple[int, int]
    # Delays (ms) of the retries after a transient failure, then the dead letter queue; () = the
    # actor's own backoff.
    retry_delays_ms: tuple[int, ...]
    # A number's first message starts the funnel (WhatsApp has no /start).
    first_message_starts: bool
    # Sends are refused outside a window that a buyer's own message opens (the Cloud API's 24 hours):
    # what was held back for it goes when they write again.
    service_window: bool

    def render(self, key: str, chat_id: int, message: Message) -> list[Request]: ...

    def answer(self, key: str, chat_id: int, callback_id: str | None, text: str | None) -> list[Request]:
        """What answers a picked choice: Telegram's answerCallbackQuery (an alert with `text`);
        elsewhere a plain message with `text`, or nothing."""
        ...

    def call(self, request: Request, chat_id: int) -> Any: ...

    def message_id(self, result: Any) -> int | None: ...

    def provider_id(self, result: Any) -> str | None:
        """The provider's own id of a sent message when it reports the message's fate later by it
        (the Cloud API's wamid: a `failed` status webhook), else None."""
        ...

    def probe(self) -> bool | None:
        """Is the bot usable: True, False (token refused, number disconnected), None (no answer)."""
        ...

    def inbound(self, body: dict[str, Any]) -> list[Inbound]:
        """What the provider sent us (a webhook's body) as router events; raises Malformed."""
        ...

    def set_webhook(self, url: str, secret: str) -> str:
        """Point the provider's webhooks for this bot at `url`; says what was done, or what the
        operator must do by hand where the provider takes it only in its own dashboard."""
        ...
