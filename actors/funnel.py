"""The welcome funnel: what a lead receives after /start, once per /start update (again only if a
worker died with the request in flight: a buyer is owed their welcome, CONTRACT §5.5)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import dramatiq

from actors import runtime
from actors.broker import FUNNEL, retry_when
from actors.channels import Channels
from actors.outbox import MARKETING, OWED, Outcome, Send, deliver, plan
from actors.throttle import Throttle
from catalog.schema import BotConfig
from db import sql
from db.database import utcnow
from db.models import Lead
from gateways.channel import Channel, Choice, Message

log = logging.getLogger(__name__)

WELCOME_MAX_AGE_MS = 6 * 3600 * 1000  # a welcome hours late is noise


def offer_choices(bot: BotConfig) -> tuple[Choice, ...]:
    """One choice per offer shown under the welcome (`buy:{offer}`)."""
    return tuple(Choice(f"buy:{offer.id}", offer.label) for offer in bot.buttons)


def welcome_message(bot: BotConfig) -> Message:
    """The welcome: its media, its text, the offers to pick from; for a bot of a suspended account,
    only its "unavailable" text."""
    if bot.suspended:
        return Message(bot.text("unavailable"))
    return Message(bot.welcome_text, media_url=bot.welcome_media_url, choices=offer_choices(bot), link_preview=False,
                   reuse_media=True)  # fmt: skip


def plan_welcome(bot: BotConfig, channel: Channel, chat_id: int, key: str) -> list[Send]:
    """The welcome as the channel's ordered sends, owed to the buyer (resent if a crash left one unknown)."""
    return plan(channel, key, chat_id, welcome_message(bot), OWED)


def marketing_sends(channel: Channel, key: str, chat_id: int, text: str, media_url: str | None,
                    choices: tuple[Choice, ...] = (), *, paid: bool = False,
                    own_slot: bool = False) -> list[Send]:  # fmt: skip
    """A marketing message (a follow-up, a broadcast): its text, its media, its choices. Sent with
    the marketing policy: a send whose fate a crash left unknown is not sent again. `own_slot`: the
    caller gives deliver() its own way of taking a slot and must be able to stop while a 429 waits
    (a broadcast): the sends never sleep through a flood wait."""
    message = Message(text.strip(), media_url=media_url or None, choices=choices, paid=paid)
    return plan(channel, key, chat_id, message, MARKETING, wait_inline=not own_slot)


@dataclass(frozen=True)
class Recipient:
    """Who a funnel message goes to: what the send needs of a lead, without loading it again."""

    lead_id: int
    chat_id: int
    reachable: bool

    @classmethod
    def of(cls, lead: Lead) -> Recipient:
        return cls(lead.id, lead.chat_id, lead.reachable)


def send_welcome(bot: BotConfig, lead: Recipient, update_id: int, channels: Channels, throttle: Throttle
                 ) -> Outcome | None:  # fmt: skip
    """Send the welcome for one /start update; safe to call again for the same update. Once its
    outcome is recorded (sent, refused, or nothing to send), the update owes nothing more."""
    if not lead.reachable:
        log.info("welcome skipped: lead unreachable bot=%s lead=%s", bot.id, lead.lead_id)
        sql.settle_owed(bot.id, update_id, utcnow())
        return None
    channel = channels.of(bot)
    sends = plan_welcome(bot, channel, lead.chat_id, f"welcome:{bot.id}:{update_id}")
    outcome = deliver(channel, throttle, lead.chat_id, sends)
    sql.settle_owed(bot.id, update_id, utcnow())
    if outcome.blocked:
        mark_unreachable(lead.lead_id)
    if outcome.sent:
        log.info("welcome sent bot=%s lead=%s update=%s parts=%d", bot.id, lead.lead_id, update_id, len(outcome.sent))
    return outcome


def mark_unreachable(lead_id: int) -> None:
    Lead.update(reachable=False, unreachable_since=utcnow()).where((Lead.id == lead_id) & Lead.reachable).execute()


@dramatiq.actor(
    actor_name="funnel.welcome",
    queue_name=FUNNEL,
    max_retries=8,
    min_backoff=1_000,
    max_backoff=300_000,
    retry_when=retry_when(8),
    time_limit=60_000,
    max_age=WELCOME_MAX_AGE_MS,
)
def welcome(bot_id: str, lead_id: int, update_id: int) -> None:
    bot = runtime.bot_config(bot_id)
    lead = Lead.get_or_none(Lead.id == lead_id)
    if bot is None or lead is None:
        log.warning("welcome dropped: bot or lead gone bot=%s lead=%s", bot_id, lead_id)
        sql.settle_owed(bot_id, update_id, utcnow())
        return
    send_welcome(bot, Recipient.of(lead), update_id, runtime.channels(), runtime.throttle())


def answer_callback(bot: BotConfig, chat_id: int, callback_id: str, channels: Channels, throttle: Throttle
                    ) -> Outcome:  # fmt: skip
    """Stop the client's spinner (Telegram); buying is the payments stage's (later) work."""
    channel = channels.of(bot)
    sends = [Send(r) for r in channel.answer(f"callback:{bot.id}:{callback_id}", chat_id, callback_id, None)]
    return deliver(channel, throttle, chat_id, sends)


@dramatiq.actor(
    actor_name="funnel.callback",
    queue_name=FUNNEL,
    max_retries=3,
    min_backoff=500,
    retry_when=retry_when(3),
    time_limit=30_000,
    max_age=5 * 60 * 1000,  # Telegram stops waiting for an answer long before this
)
def callback(bot_id: str, chat_id: int, callback_id: str) -> None:
    bot = runtime.bot_config(bot_id)
    if bot is None:
        return
    answer_callback(bot, chat_id, callback_id, runtime.channels(), runtime.throttle())


def send_reply(bot: BotConfig, lead: Recipient, update_id: int, offers_again: bool, channels: Channels,
               throttle: Throttle) -> Outcome:  # fmt: skip
    """The answer to a message that picked nothing: the welcome again (`offers_again`) or the hint.
    Marketing: never resent after a crash; it yields to buyers waiting for their slots and keeps out
    of their share of a slow window, but it answers a person, so it does not wait for the pace of
    bulk marketing (a broadcast)."""
    channel = channels.of(bot)
    if offers_again:
        message, key = welcome_message(bot), f"rewelcome:{bot.id}:{update_id}"
    else:
        message, key = Message(bot.text("choose_hint")), f"hint:{bot.id}:{update_id}"
    slot = partial(throttle.acquire, bot.id, lead.chat_id, marketing=True, paced=False, rate=channel.rate)
    return deliver(channel, throttle, lead.chat_id, plan(channel, key, lead.chat_id, message, MARKETING), slot)


@dramatiq.actor(
    actor_name="funnel.reply",
    queue_name=FUNNEL,
    priority=100,  # marketing: behind any welcome or code in the same worker
    max_retries=3,
    min_backoff=1_000,
    retry_when=retry_when(3),
    time_limit=60_000,
    max_age=15 * 60 * 1000,  # an answer to "oi" a quarter of an hour late is noise
)
def reply(bot_id: str, lead_id: int, update_id: int, offers_again: bool) -> None:
    bot = runtime.bot_config(bot_id)
    lead = Lead.get_or_none(Lead.id == lead_id)
    if bot is None or lead is None or not lead.reachable:
        return
    send_reply(bot, Recipient.of(lead), update_id, offers_again, runtime.channels(), runtime.throttle())
