"""Broadcasts (CONTRACT §10): one message to a segment of a bot's leads, at the bot's limit, each
lead once, stoppable within a second.

- A broadcast is rows, not a loop in one process. `start` freezes its segment into
  `broadcast_recipient` rows (one INSERT … SELECT, in the transaction that moves it scheduled →
  running), so the segment is what it was at the start.
- Senders ("lanes", BROADCAST_LANES per running broadcast, on a queue and worker of their own)
  claim pending recipients in small batches with `db.sql.claim_due` (a lease on `due_at`, FOR
  UPDATE SKIP LOCKED on PostgreSQL): a lane that dies leaves its batch due again; Redis losing a
  lane's message leaves the broadcast running without it until the clock starts another.
- Each send takes a slot of the bot's window at marketing priority (the funnel first: see
  actors/throttle.py) and goes through the outbox under `broadcast:{id}:{lead}` with the marketing
  policy: a lead is sent the message at most once, even by two lanes, even across crashes; a send
  whose fate a crash left unknown is not made again (counted `unknown`).
- `stop` moves the row to stopped and sets a Redis key the slot-taking script checks: no send
  starts after it, including those waiting out a 429 (they go back to their lane, never sleep).
- 429: the bot's sends pause for `retry_after` (the funnel's too, as Telegram asks); the lane puts
  its batch back and comes back after the pause. 403: the lead is marked unreachable, `blocked`.
  A bot whose token Telegram refuses (actors.pools) waits, sending nothing, until getMe succeeds.

    broadcast: scheduled ──► running ──► done          recipient: pending ──► sent | blocked
                    └────────────┴─────► stopped                               | failed | unknown"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import dramatiq

import settings
from actors import runtime
from actors.broker import BROADCASTS, MAINTENANCE, broker, counters
from actors.channels import Channels
from actors.funnel import mark_unreachable, marketing_sends
from actors.outbox import Outcome, deliver
from actors.pools import RECHECK_SECONDS, UNHEALTHY
from actors.throttle import STOPPED, Throttle, Ticket
from catalog.schema import BotConfig, brl
from db import sql
from db.database import db, json_text, transaction, utcnow
from db.models import Broadcast, BroadcastRecipient, Lead, OutboundMessage
from gateways import media
from gateways.channel import ChannelGaveUp, ChannelTransient, Choice
from gateways.channel_kinds import kind_of
from gateways.text import utf16_length

log = logging.getLogger(__name__)

SEGMENTS = ("all", "not_bought", "unpaid", "paid", "expired")
UTM_SEGMENTS = ("utm_campaign", "utm_source")
SEGMENT_HELP = "all | not_bought | unpaid | paid | expired | utm_campaign=X | utm_source=X"
STATES = ("scheduled", "running", "done", "stopped")
COUNTED = ("sent", "blocked", "failed", "unknown", "pending")

BATCH = 10  # recipients a lane claims at a time
LEASE = dt.timedelta(seconds=settings.BROADCAST_LEASE_SECONDS)  # a claimed batch is due again after it
SLICE_SECONDS = 10.0  # a lane sends this long, then goes back to the queue (fair to other broadcasts)
MAX_INLINE_WAIT_MS = 1000  # longer waits (a 429's pause) put the batch back and the lane with it
LANE_TTL_SECONDS = 30  # a lane not heard from this long is replaced by the clock
STOP_TTL_SECONDS = 7 * 86400
DUE = '"broadcast_id" = {p} AND "state" = \'pending\''


class BroadcastError(ValueError):
    """A broadcast that cannot be made as asked; the message says which option is wrong."""


def stop_key(broadcast_id: int) -> str:
    return f"grimbots:bc:stop:{broadcast_id}"


def lane_key(broadcast_id: int, lane: int) -> str:
    return f"grimbots:bc:lane:{broadcast_id}:{lane}"


# --- segments --------------------------------------------------------------------------------

_UTM_VALUE = re.compile(r"^.{1,200}$", re.DOTALL)


def parse_segment(segment: str) -> tuple[str, str | None]:
    """("paid", None), ("utm_campaign", "black-friday"), ...; BroadcastError naming the problem."""
    name, sep, value = segment.partition("=")
    if not sep and name in SEGMENTS:
        return name, None
    if sep and name in UTM_SEGMENTS and _UTM_VALUE.match(value) and value.strip() == value:
        return name, value
    raise BroadcastError(f"--segment: {segment!r} is not a segment (one of {SEGMENT_HELP})")


def segment_where(segment: str) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause (over `lead l`, after its bot and reachability) of a segment, and its params."""
    name, value = parse_segment(segment)
    charges = 'SELECT 1 FROM "charge" c WHERE c."lead_id" = l."id"'
    if name == "all":
        return "", ()
    if name == "not_bought":  # never pressed an offer: no charge, no answer to a bump
        return (f' AND NOT EXISTS ({charges}) AND NOT EXISTS (SELECT 1 FROM "bump_answer" b '
                f'WHERE b."lead_id" = l."id")'), ()  # fmt: skip
    if name == "unpaid":  # a PIX generated, none paid
        return (f" AND EXISTS ({charges} AND c.\"status\" IN ('pending', 'expired')) "
                f"AND NOT EXISTS ({charges} AND c.\"status\" IN ('paid', 'refunded'))"), ()  # fmt: skip
    if name == "paid":
        return f" AND EXISTS ({charges} AND c.\"status\" = 'paid')", ()
    if name == "expired":  # a subscription that ended (and was not renewed)
        return ' AND EXISTS (SELECT 1 FROM "subscription" s WHERE s."lead_id" = l."id" AND s."state" = \'expired\')', ()
    utm = json_text('k."utm"', name)
    return f' AND EXISTS (SELECT 1 FROM "click" k WHERE k."lead_id" = l."id" AND {utm} = {{p}})', (value,)


def _segment_sql(select: str, segment: str) -> tuple[str, tuple[Any, ...]]:
    where, params = segment_where(segment)
    query = f'{select} FROM "lead" l WHERE l."bot_id" = {{p}} AND l."reachable"{where}'
    return query.replace("{p}", db.param), params


def preview(bot_id: str, segment: str) -> int:
    """How many leads the segment holds now."""
    query, params = _segment_sql("SELECT COUNT(*)", segment)
    return int(db.execute_sql(query, (bot_id, *params)).fetchone()[0])


# --- creating, starting, stopping --------------------------------------------------------------


def create(bot: BotConfig, segment: str, text: str, *, media_url: str | None = None, offer: str | None = None,
           at: dt.datetime | None = None, paid: bool = False) -> Broadcast:  # fmt: skip
    """A scheduled broadcast (due now, or at `at`, naive UTC). BroadcastError names a bad option."""
    if bot.suspended:
        raise BroadcastError("--bot: its account is suspended")
    parse_segment(segment)
    text = text.strip()
    if not text:
        raise BroadcastError("--text: must not be empty")
    limit = kind_of(bot.channel).text_limit
    if utf16_length(text) > limit:
        raise BroadcastError(f"--text: {utf16_length(text)} characters, a message takes at most {limit}")
    if media_url is not None and not (re.match(r"^https?://\S+$", media_url) or media.is_ref(media_url)):
        raise BroadcastError("--media-url: must be an http(s) URL")
    if paid and bot.whatsapp is not None:
        raise BroadcastError("--paid: paid broadcasts are Telegram's (allow_paid_broadcast); WhatsApp has none")
    offer_id = None
    if offer is not None:
        found = next((o for o in bot.offers if o.slug == offer or str(o.id) == offer), None)
        if found is None:
            raise BroadcastError(f"--offer: bot {bot.id!r} has no offer {offer!r}")
        offer_id = found.id
    now = utcnow()
    return Broadcast.create(bot_id=bot.id, segment=segment, text=text, media_url=media_url, offer_id=offer_id,
                            paid=paid, state="scheduled", starts_at=max(at or now, now), created_at=now)  # fmt: skip


FREEZE = """
INSERT INTO "broadcast_recipient" ("broadcast_id", "lead_id", "chat_id", "state", "due_at", "attempts")
{select}
ON CONFLICT DO NOTHING
"""


def start(broadcast_id: int, now: dt.datetime | None = None) -> int | None:
    """scheduled → running, with its segment frozen into recipient rows, in one transaction: the
    number of recipients, or None when it was not scheduled (started already, or stopped)."""
    now = now or utcnow()
    with transaction():
        won = (Broadcast.update(state="running", started_at=now)
               .where((Broadcast.id == broadcast_id) & (Broadcast.state == "scheduled")).execute())  # fmt: skip
        if not won:
            return None
        row = Broadcast.get_by_id(broadcast_id)
        p = db.param
        select, params = _segment_sql(f'SELECT {p}, l."id", l."chat_id", \'pending\', {p}, 0', row.segment)
        cursor = db.execute_sql(FREEZE.format(select=select), (broadcast_id, now, row.bot_id, *params))
        total = max(int(cursor.rowcount), 0)
        Broadcast.update(total=total).where(Broadcast.id == broadcast_id).execute()
    counters.inc("grimbots_broadcasts_total", {"outcome": "started"})
    log.info("broadcast started broadcast=%s bot=%s recipients=%d", broadcast_id, row.bot_id, total)
    return total


def stop(broadcast_id: int) -> bool:
    """Nothing more is sent: the key every lane checks before each send, then the row. False when
    it had ended already."""
    broker.client.set(stop_key(broadcast_id), "1", ex=STOP_TTL_SECONDS)
    live = Broadcast.state.in_(["scheduled", "running"])
    stopped = (
        Broadcast.update(state="stopped", finished_at=utcnow()).where((Broadcast.id == broadcast_id) & live).execute()
    )
    if stopped:
        counters.inc("grimbots_broadcasts_total", {"outcome": "stopped"})
        log.info("broadcast stopped broadcast=%s", broadcast_id)
    return bool(stopped)


def finish_if_done(broadcast_id: int) -> bool:
    """running → done once no recipient is pending."""
    pending = BroadcastRecipient.select().where((BroadcastRecipient.broadcast_id == broadcast_id)
                                                & (BroadcastRecipient.state == "pending")).exists()  # fmt: skip
    if pending:
        return False
    done = (Broadcast.update(state="done", finished_at=utcnow())
            .where((Broadcast.id == broadcast_id) & (Broadcast.state == "running")).execute())  # fmt: skip
    if done:
        counters.inc("grimbots_broadcasts_total", {"outcome": "done"})
        log.info("broadcast done broadcast=%s", broadcast_id)
    return bool(done)


# --- seeing it ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    id: int
    bot: str
    segment: str
    state: str
    starts_at: str
    total: int
    sent: int
    blocked: int
    failed: int  # Telegram refused it, or its fate was left unknown by a crash (not sent again)
    pending: int
    unknown: int  # of `failed`: in flight when a worker died (may have arrived; never sent again)
    paid: bool
    offer_id: int | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summaries(bot_id: str | None = None, broadcast_id: int | None = None) -> list[Summary]:
    query = Broadcast.select().order_by(Broadcast.id.desc())
    if bot_id is not None:
        query = query.where(Broadcast.bot_id == bot_id)
    if broadcast_id is not None:
        query = query.where(Broadcast.id == broadcast_id)
    rows = list(query)
    counts: dict[int, dict[str, int]] = {}
    if rows:
        marks = ", ".join([db.param] * len(rows))
        by_state = (f'SELECT "broadcast_id", "state", COUNT(*) FROM "broadcast_recipient" '
                    f'WHERE "broadcast_id" IN ({marks}) GROUP BY "broadcast_id", "state"')  # fmt: skip
        for bid, state, n in db.execute_sql(by_state, tuple(r.id for r in rows)).fetchall():
            counts.setdefault(int(bid), {})[str(state)] = int(n)
    out = []
    for r in rows:
        c = counts.get(r.id, {})
        pending = c.get("pending", 0)
        if r.state == "scheduled":  # not frozen yet: what it would reach now
            total = pending = preview(r.bot_id, r.segment)
        else:
            total = r.total or 0
        out.append(Summary(r.id, r.bot_id, r.segment, r.state, r.starts_at.isoformat(sep=" ", timespec="seconds"),
                           total, c.get("sent", 0), c.get("blocked", 0), c.get("failed", 0) + c.get("unknown", 0),
                           pending, c.get("unknown", 0), r.paid, r.offer_id, r.error))  # fmt: skip
    return out


# --- the clock: starting due broadcasts, keeping their lanes -----------------------------------

_REFRESH_LANE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_LANE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def dispatch(now: dt.datetime | None = None) -> dict[str, int]:
    """Start the broadcasts that are due; give each running one its lanes (a lane whose key is gone
    died or was lost with Redis: another takes its place); end those with nothing pending."""
    now = now or utcnow()
    started = lanes = finished = 0
    due = Broadcast.select(Broadcast.id).where((Broadcast.state == "scheduled") & (Broadcast.starts_at <= now))
    for row in list(due):
        started += start(row.id, now) is not None
    for row in list(Broadcast.select(Broadcast.id).where(Broadcast.state == "running")):
        if finish_if_done(row.id):
            finished += 1
            continue
        for lane in range(settings.BROADCAST_LANES):
            token = secrets.token_hex(8)
            if broker.client.set(lane_key(row.id, lane), token, nx=True, ex=LANE_TTL_SECONDS):
                lane_actor.send(row.id, lane, token)
                lanes += 1
    return {"started": started, "lanes": lanes, "finished": finished}


@dramatiq.actor(actor_name="broadcasts.dispatch", queue_name=MAINTENANCE, max_retries=0, time_limit=120_000,
                max_age=10_000)  # fmt: skip
def dispatch_actor() -> None:
    dispatch()


# --- a lane: claim a batch, send it at the bot's pace, record it, again ------------------------


def _claim(broadcast_id: int, limit: int) -> list[BroadcastRecipient]:
    with transaction():
        running = Broadcast.select().where((Broadcast.id == broadcast_id) & (Broadcast.state == "running")).exists()
        ids = sql.claim_due("broadcast_recipient", DUE, utcnow(), LEASE, limit=limit, params=(broadcast_id,)) \
            if running else []  # fmt: skip
    if not ids:
        return []
    return list(BroadcastRecipient.select().where(BroadcastRecipient.id.in_(ids)).order_by(BroadcastRecipient.id))


def _put_back(rows: list[BroadcastRecipient], delay_ms: int) -> None:
    """Claimed recipients not sent yet: due again after `delay_ms` (a 429's pause, say)."""
    if rows:
        due = utcnow() + dt.timedelta(milliseconds=delay_ms)
        ids = BroadcastRecipient.id.in_([r.id for r in rows])
        BroadcastRecipient.update(due_at=due).where(ids & (BroadcastRecipient.state == "pending")).execute()


def _state_of(outcome: Outcome, keys: list[str]) -> tuple[str, str | None]:
    """What a recipient's send came to: sent, blocked, failed (with why) or unknown. A send made
    before (by a lane that died before recording it) is read back from the outbox."""
    if outcome.blocked:
        return "blocked", outcome.failed
    if outcome.failed is not None:
        return "failed", outcome.failed
    if outcome.sent and not outcome.skipped:
        return "sent", None
    states = {m.state for m in OutboundMessage.select(OutboundMessage.state).where(OutboundMessage.key.in_(keys))}
    if "unknown" in states:
        return "unknown", "a worker stopped with the request in flight: not sent again"
    return "sent", None


def _record(done: dict[int, tuple[str, str | None]], now: dt.datetime) -> None:
    """Each recipient's end, in as few statements as its outcomes allow."""
    by_state: dict[str, list[int]] = {}
    for rid, (state, error) in done.items():
        if error is None:
            by_state.setdefault(state, []).append(rid)
        else:
            (BroadcastRecipient.update(state=state, error=error[:500], sent_at=now)
             .where((BroadcastRecipient.id == rid) & (BroadcastRecipient.state == "pending")).execute())  # fmt: skip
    for state, ids in by_state.items():
        (BroadcastRecipient.update(state=state, sent_at=now)
         .where(BroadcastRecipient.id.in_(ids) & (BroadcastRecipient.state == "pending")).execute())  # fmt: skip
    for state, _ in done.values():
        counters.inc("grimbots_broadcast_sends_total", {"outcome": state})


def _choices(bot: BotConfig, row: Broadcast) -> tuple[Choice, ...]:
    offer = bot.offer(row.offer_id) if row.offer_id is not None else None
    if offer is None:
        return ()
    label = bot.text("broadcast_button", amount=brl(offer.price), offer=offer.label)
    return (Choice(f"buy:{offer.id}", label[:64]),)


class Stopped(Exception):
    """The broadcast was stopped: no more sends."""


def _slot(throttle: Throttle, row: Broadcast, chat_id: int, rate: tuple[int, int]) -> Ticket:
    """Wait (briefly) for a slot of the bot's window at marketing priority. Raises Stopped, or
    dramatiq.Retry with the wait when it is long (a 429's pause): the lane puts its batch back."""
    ticket = throttle.ticket(row.bot_id, paid=row.paid)
    while True:
        wait = throttle.try_acquire(row.bot_id, chat_id, marketing=True, paid=row.paid, stop_key=stop_key(row.id),
                                    send_id=ticket.send_id, rate=rate)  # fmt: skip
        if wait == 0:
            return ticket
        if wait == STOPPED:
            raise Stopped
        if wait > MAX_INLINE_WAIT_MS:
            raise dramatiq.Retry(f"bot paused for {wait} ms", delay=wait)
        time.sleep(wait / 1000)


def run_lane(broadcast_id: int, lane: int, token: str, channels: Channels, throttle: Throttle,
             slice_seconds: float = SLICE_SECONDS) -> tuple[str, int]:  # fmt: skip
    """Send a running broadcast's pending recipients for up to `slice_seconds`. Returns what the
    lane does next: ("again", delay ms) or ("end", 0)."""
    key = lane_key(broadcast_id, lane)
    client = broker.client
    if not client.eval(_REFRESH_LANE, 1, key, token, LANE_TTL_SECONDS):
        return "end", 0  # another lane took this one's place (it was thought lost)
    row = Broadcast.get_or_none(Broadcast.id == broadcast_id)
    bot = runtime.bot_config(row.bot_id) if row is not None else None
    if row is None or row.state != "running" or bot is None or bot.suspended:
        if row is not None and row.state == "running":  # its bot is gone or sells nothing: nothing can be sent
            why = "account suspended" if bot is not None else "bot no longer configured"
            Broadcast.update(state="stopped", finished_at=utcnow(), error=why).where(
                (Broadcast.id == broadcast_id) & (Broadcast.state == "running")).execute()  # fmt: skip
        client.eval(_RELEASE_LANE, 1, key, token)
        return "end", 0
    channel, choices = channels.of(bot), _choices(bot, row)
    deadline = time.monotonic() + slice_seconds
    while time.monotonic() < deadline:
        if client.hexists(UNHEALTHY, row.bot_id):  # token refused, number disconnected: wait, fail no one
            return "again", RECHECK_SECONDS * 1000
        batch = _claim(broadcast_id, BATCH)
        if not batch:
            client.eval(_RELEASE_LANE, 1, key, token)
            return "end", 0
        gone = {
            lead.id for lead in Lead.select(Lead.id).where(Lead.id.in_([r.lead_id for r in batch]) & ~Lead.reachable)
        }
        done: dict[int, tuple[str, str | None]] = {
            r.id: ("blocked", "lead unreachable") for r in batch if r.lead_id in gone
        }
        todo = [b for b in batch if b.id not in done]
        for i, r in enumerate(todo):
            sends = marketing_sends(channel, f"broadcast:{row.id}:{r.lead_id}", r.chat_id, row.text, row.media_url,
                                    choices, paid=row.paid, own_slot=True)  # fmt: skip
            try:
                outcome = deliver(channel, throttle, r.chat_id, sends,
                                  slot=partial(_slot, throttle, row, r.chat_id, channel.rate))  # fmt: skip
            except ChannelGaveUp as exc:  # failed at every retry of its channel's schedule
                done[r.id] = ("failed", exc.description)
                continue
            except Stopped:
                _record(done, utcnow())
                client.eval(_RELEASE_LANE, 1, key, token)
                return "end", 0
            except (dramatiq.Retry, ChannelTransient) as exc:  # a pause (429), a young claim, the provider down
                delay = exc.delay if isinstance(exc, dramatiq.Retry) and exc.delay else 5_000
                _record(done, utcnow())
                _put_back(todo[i:], delay)
                log.info("broadcast lane waits broadcast=%s lane=%s ms=%d reason=%s", broadcast_id, lane, delay,
                         type(exc).__name__)  # fmt: skip
                return "again", delay
            state, error = _state_of(outcome, [s.key for s in sends])
            if state == "blocked":
                mark_unreachable(r.lead_id)
            done[r.id] = (state, error)
        _record(done, utcnow())
        client.eval(_REFRESH_LANE, 1, key, token, LANE_TTL_SECONDS)
    return "again", 0


@dramatiq.actor(
    actor_name="broadcasts.lane",
    queue_name=BROADCASTS,
    max_retries=3,
    min_backoff=1_000,
    max_backoff=30_000,
    time_limit=int(SLICE_SECONDS * 1000) + 60_000,
    max_age=3600 * 1000,  # the clock gives a running broadcast new lanes when these are gone
)
def lane_actor(broadcast_id: int, lane: int, token: str) -> None:
    outcome, delay = run_lane(broadcast_id, lane, token, runtime.channels(), runtime.throttle())
    if outcome == "again":
        if delay:  # keep the lane's key alive while it waits, so the clock does not double it
            broker.client.eval(_REFRESH_LANE, 1, lane_key(broadcast_id, lane), token, LANE_TTL_SECONDS + delay // 1000)
        lane_actor.send_with_options(args=(broadcast_id, lane, token), delay=delay or None)
