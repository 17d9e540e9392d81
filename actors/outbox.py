"""Sends to any chat channel made at most once each, under keys of our choosing, with durable progress.

Every send is a row in outbound_message. A worker claims it (pending → sending, a conditional
update only one worker can win, committed before the request leaves), makes the request through
the bot's channel (gateways/channel.py) and records the outcome. A redelivered message finds the
row done and moves on, so repeating the work that led to a send never repeats the send.

One window cannot be closed from our side: the request reached the provider but the worker died
(or the answer was lost) before the outcome was recorded. No chat API has an idempotency key, so each
send says what to do then (CONTRACT §5.5): `if_unknown="resend"` for what the buyer is owed (a
welcome, a code, a delivery: a gap is worse than a rare duplicate), `"skip"` for marketing.

A redelivered send whose row a live (or dead) worker still holds in `sending` is not skipped: it
comes back (dramatiq.Retry) once the claim is stale, and is then resent or given up as above.

A channel with a retry schedule (WhatsApp: 1, 2 and 4 minutes) has its transient failures retried
at those delays, counted by the row's attempts, then dead-lettered (ChannelGaveUp). Waits that are
not failures (the rate limit, a flood wait, a disconnected number) give their attempt back."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, NoReturn

import dramatiq

import settings
from actors import liveness
from actors.broker import broker, counters
from actors.throttle import Throttle, Ticket
from db import sql
from db.database import utcnow
from db.models import Lead, OutboundMessage
from gateways.channel import (
    Channel,
    ChannelBlocked,
    ChannelDisconnected,
    ChannelGaveUp,
    ChannelMaybeSent,
    ChannelPermanent,
    ChannelRetryAfter,
    ChannelTransient,
    Message,
    Request,
)
from gateways.whatsapp_cloud import OUTSIDE_WINDOW

log = logging.getLogger(__name__)

# A send left in `sending` longer than this by a worker that is gone counts as unknown.
STALE_CLAIM_SECONDS = settings.OUTBOX_STALE_CLAIM_SECONDS
# A claim whose holder is named is looked at again this often (its holder may die meanwhile).
HOLDER_RECHECK_SECONDS = 4
# Flood waits up to this long are slept through; longer ones go back to the queue with a delay.
MAX_INLINE_FLOOD_WAIT = 3.0
_UNKNOWN = object()
# The two policies for a send whose fate a crash left unknown (CONTRACT §5.5).
OWED: Literal["resend"] = "resend"  # what the buyer is owed: a welcome, a code, a delivery
MARKETING: Literal["skip"] = "skip"  # follow-ups, reminders, broadcasts


# What a stage run inline raises when it cannot finish now: its own actor takes it over (hand_off).
NOT_NOW = (dramatiq.Retry, ChannelTransient)


def hand_off(actor: dramatiq.Actor[Any, Any], args: tuple[Any, ...], exc: BaseException,
             max_age: int | None = None) -> None:  # fmt: skip
    """Give a stage that could not finish inline to its own actor, after the delay a
    dramatiq.Retry (a flood wait) asked for; `max_age` (ms) instead of the actor's own."""
    delay = exc.delay if isinstance(exc, dramatiq.Retry) else None
    if max_age:
        actor.send_with_options(args=args, delay=delay, max_age=max_age)
    else:
        actor.send_with_options(args=args, delay=delay)


@dataclass(frozen=True)
class Send:
    """A channel's request under the outbox's policy: what to do when its fate is unknown, and
    whether a short flood wait is slept through."""

    request: Request
    if_unknown: Literal["skip", "resend"] = "skip"
    # A short flood wait (429) is slept through and the send made again; False: the send goes back
    # to its caller (dramatiq.Retry) at once: a broadcast must be stoppable while it waits.
    wait_inline: bool = True

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def params(self) -> dict[str, Any]:
        return self.request.params


def plan(channel: Channel, key: str, chat_id: int, message: Message, if_unknown: Literal["skip", "resend"],
         *, wait_inline: bool = True) -> list[Send]:  # fmt: skip
    """The message as the channel's sends, each under the given policy."""
    return [Send(request, if_unknown, wait_inline) for request in channel.render(key, chat_id, message)]


@dataclass
class Outcome:
    sent: list[str] = field(default_factory=list)  # keys sent by this call
    skipped: list[str] = field(default_factory=list)  # keys already done (or unknown) before
    blocked: bool = False  # the chat refused the bot (403)
    failed: str | None = None  # a permanent error's description


def _existing(key: str) -> OutboundMessage | None:
    return OutboundMessage.get_or_none(OutboundMessage.key == key)


def new_claim() -> str:
    """A claim's token, naming its holder when this process runs the liveness heartbeat."""
    return f"{liveness.me() or ''}|{uuid.uuid4().hex[:16]}"


def holder_of(claim: str | None) -> str | None:
    holder = (claim or "").partition("|")[0]
    return holder or None


def _insert_claimed(bot_id: str, chat_id: int, send: Send) -> bool:
    """The first attempt creates the row already claimed: one commit instead of two."""
    return sql.claim_new_send(send.key, bot_id, chat_id, send.method, utcnow(), new_claim())


def _claim(key: str, states: Sequence[str]) -> bool:
    won = (
        OutboundMessage.update(
            state="sending", attempts=OutboundMessage.attempts + 1, claimed_at=utcnow(), claim=new_claim()
        )
        .where((OutboundMessage.key == key) & OutboundMessage.state.in_(list(states)))
        .execute()
    )
    return bool(won)


def _take_over(row: OutboundMessage) -> bool:
    """Take a stale claim over in one compare-and-set on the claim as it was seen: of any number of
    workers that found it stale at once (a redelivered message, the owed re-drive), one wins."""
    seen = OutboundMessage.claim.is_null() if row.claim is None else (OutboundMessage.claim == row.claim)
    if row.claim is None:  # a row from before claims had tokens: its claim time is the token
        seen &= OutboundMessage.claimed_at.is_null() if row.claimed_at is None else (
            OutboundMessage.claimed_at == row.claimed_at)  # fmt: skip
    won = (
        OutboundMessage.update(attempts=OutboundMessage.attempts + 1, claimed_at=utcnow(), claim=new_claim())
        .where((OutboundMessage.key == row.key) & (OutboundMessage.state == "sending") & seen)
        .execute()
    )
    return bool(won)


def _finish(key: str, state: str, *, message_id: int | None = None, error: str | None = None,
            provider_id: str | None = None) -> None:  # fmt: skip
    sql.finish_send(key, state, message_id, error, utcnow(), provider_id)


def _release(key: str, *, refund: bool = False, error: str | None = None) -> None:
    """Back to pending; `refund`: the attempt was not a failure (a wait), it does not count."""
    values: dict[str, Any] = {"state": "pending"}
    if refund:
        values["attempts"] = OutboundMessage.attempts - 1
    if error is not None:
        values["error"] = error[:500]
    OutboundMessage.update(values).where((OutboundMessage.key == key) & (OutboundMessage.state == "sending")).execute()


def _attempts(key: str) -> int:
    row = OutboundMessage.select(OutboundMessage.attempts).where(OutboundMessage.key == key).first()
    return int(row.attempts) if row is not None else 1


def _retry_later(channel: Channel, send: Send, exc: ChannelTransient) -> NoReturn:
    """A transient failure: back to the caller's retries, or, on a channel with a schedule of its
    own, again after its next delay, then to the dead letter queue."""
    delays = channel.retry_delays_ms
    if not delays:
        _release(send.key, error=exc.description)
        raise exc
    attempt = _attempts(send.key)
    _release(send.key, error=exc.description)
    counters.inc("grimbots_channel_send_failures_total", {"channel": channel.kind})
    if attempt <= len(delays):
        log.warning("send failed, retried in %ds key=%s method=%s error=%s", delays[attempt - 1] // 1000, send.key,
                    send.method, exc.description)  # fmt: skip
        raise dramatiq.Retry(f"{send.method}: {exc.description}", delay=delays[attempt - 1]) from None
    raise ChannelGaveUp(send.method, f"gave up after {attempt} attempts: {exc.description}") from None


def _resolve_stale(row: OutboundMessage, send: Send) -> bool:
    """A claim another worker holds, or left behind dying: decide per the send's policy. True = send now.

    Stale when its holder's heartbeat is gone (a dead process: at once), or, for a claim that names
    no holder or whose holder lives, when it is older than STALE_CLAIM_SECONDS."""
    age = (utcnow() - row.claimed_at).total_seconds() if row.claimed_at is not None else STALE_CLAIM_SECONDS
    holder = holder_of(row.claim)
    dead = holder is not None and holder != liveness.me() and not liveness.alive(broker.client, holder)
    if age < STALE_CLAIM_SECONDS and not dead:
        # Another worker may still be on it, or may have died on it: come back when the claim is
        # stale (or, when it names its holder, soon: to see whether the holder died) and decide
        # then. Skipping it now would leave it `sending` for ever.
        wait = STALE_CLAIM_SECONDS - age if holder is None else min(STALE_CLAIM_SECONDS - age, HOLDER_RECHECK_SECONDS)
        raise dramatiq.Retry(f"{send.method}: claimed by another worker", delay=int(wait * 1000) + 1000)
    if send.if_unknown == "resend":
        return _take_over(row)
    _finish(send.key, "unknown", error="worker stopped while the request was in flight")
    return False


def _take(bot_id: str, chat_id: int, send: Send, outcome: Outcome) -> bool | None:
    """Claim the send for this worker: True = send it now, False = skip it, None = stop here.
    The common case, a first attempt, costs one statement: the insert that claims it."""
    if _insert_claimed(bot_id, chat_id, send):
        return True
    row = _existing(send.key)
    assert row is not None
    if row.state == "pending":
        return _claim(send.key, ["pending"])
    if row.state == "sending":
        return _resolve_stale(row, send)
    if row.state == "failed":
        outcome.failed = row.error
        return None
    return False  # sent, or unknown


def deliver(
    channel: Channel,
    throttle: Throttle,
    chat_id: int,
    sends: Sequence[Send],
    slot: Callable[[], Ticket] | None = None,
) -> Outcome:
    """Make each send at most once, in order, through the bot's channel. Raises dramatiq.Retry /
    ChannelTransient for the caller's retry machinery; permanent failures are recorded and end the
    sequence.

    A send takes its slot of the bot's window after its claim, right before the request, so the
    window is kept as the provider sees it (a slot taken before a database write would leave that
    write's delay between slot and request). `slot` takes it instead of the funnel's
    `throttle.acquire` (a follow-up or a broadcast: marketing priority, stoppable); whatever it
    raises releases the claim first."""
    bot_id = channel.bot_id
    outcome = Outcome()
    for send in sends:
        taken = _take(bot_id, chat_id, send, outcome)
        if taken is None:
            return outcome
        if not taken:
            outcome.skipped.append(send.key)
            continue
        funnel = partial(throttle.acquire, bot_id, chat_id, rate=channel.rate, waiter=send.key)
        take = (slot or funnel) if send.request.throttled else None
        result = _call(channel, throttle, chat_id, send, take)
        if isinstance(result, Outcome):
            outcome.blocked, outcome.failed = result.blocked, result.failed
            return outcome
        if result is _UNKNOWN:
            outcome.skipped.append(send.key)
            continue
        outcome.sent.append(send.key)
        if send.request.menu is not None:  # what "1", "2"... mean from now on
            Lead.update(menu=list(send.request.menu), menu_at=utcnow()).where(
                (Lead.bot == bot_id) & (Lead.chat_id == chat_id)
            ).execute()
        if send.request.on_result is not None:
            send.request.on_result(result)
    return outcome


def _slot(send: Send, take: Callable[[], Ticket] | None) -> Ticket | None:
    """A slot for one request of the send (`take` None: it needs none); whatever taking it raises
    releases the claim first (a wait, not a failure: the attempt is given back)."""
    if take is None:
        return None
    try:
        return take()
    except BaseException:
        _release(send.key, refund=True)
        raise


def _call(channel: Channel, throttle: Throttle, chat_id: int, send: Send, take: Callable[[], Ticket] | None) -> Any:
    """Make the call (again after a short flood wait, or in its fallback form): each request takes
    a slot of the bot's window first, stamped with the time its answer came back, whatever it was."""
    params, bot_id, kind = send.params, channel.bot_id, channel.kind
    for attempt in range(2):
        ticket = _slot(send, take)
        try:
            try:
                result = channel.call(
                    send.request if params is send.params else replace(send.request, params=params), chat_id
                )
            finally:
                throttle.done(ticket)
        except ChannelRetryAfter as exc:
            counters.inc("grimbots_channel_rate_waits_total", {"channel": kind, "method": send.method})
            throttle.pause_bot(bot_id, exc.retry_after)
            if exc.retry_after <= MAX_INLINE_FLOOD_WAIT and attempt == 0 and send.wait_inline:
                time.sleep(exc.retry_after)
                continue
            _release(send.key, refund=True)
            raise dramatiq.Retry(
                f"{send.method}: flood wait {exc.retry_after}s", delay=int(exc.retry_after * 1000) + 50
            ) from None
        except ChannelDisconnected as exc:  # the number's sends wait for it: none fails meanwhile
            throttle.pause_bot(bot_id, settings.BOT_RECHECK_SECONDS)
            _release(send.key, refund=True, error=exc.description)
            log.warning("send waits: number disconnected bot=%s key=%s", bot_id, send.key)
            raise dramatiq.Retry(f"{send.method}: disconnected", delay=settings.BOT_RECHECK_SECONDS * 1000) from None
        except ChannelMaybeSent as exc:
            if send.if_unknown == "skip":
                _finish(send.key, "unknown", error=exc.description)
                log.warning("send state unknown key=%s method=%s", send.key, send.method)
                return _UNKNOWN
            _retry_later(channel, send, exc)
        except ChannelTransient as exc:
            _retry_later(channel, send, exc)
        except ChannelBlocked as exc:
            counters.inc("grimbots_channel_sends_total", {"channel": kind, "method": send.method, "outcome": "blocked"})
            _finish(send.key, "failed", error=exc.description)
            return Outcome(blocked=True, failed=exc.description)
        except ChannelPermanent as exc:
            if send.request.fallback is not None and params is send.params:
                params = send.request.fallback
                continue
            counters.inc(
                "grimbots_channel_sends_total", {"channel": kind, "method": send.method, "outcome": "rejected"}
            )
            if exc.description == OUTSIDE_WINDOW:  # the seller can act: an access template, or the buyer writes
                counters.inc("grimbots_whatsapp_failed_total", {"owed": str(send.if_unknown == OWED).lower(),
                                                                "code": "outside_window"})  # fmt: skip
            _finish(send.key, "failed", error=exc.description)
            log.warning("send rejected channel=%s key=%s method=%s error=%s", kind, send.key, send.method,
                        exc.description)  # fmt: skip
            return Outcome(failed=exc.description)
        _finish(send.key, "sent", message_id=channel.message_id(result), provider_id=channel.provider_id(result))
        counters.inc("grimbots_channel_sends_total", {"channel": kind, "method": send.method, "outcome": "sent"})
        return result
    _release(send.key, refund=True)
    raise dramatiq.Retry(f"{send.method}: flood wait", delay=1000)
