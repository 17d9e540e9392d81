"""Outbound rate limits of every chat channel, shared by every worker process, kept in Redis.

Per bot: at most `bot_rate` sends in any window of `window_ms` — as the provider sees them (CONTRACT
§10: "at most 30 sends per bot in any 1-second window" on Telegram; §12: `rate_per_minute` per
WhatsApp number, a window of 60 s). A caller passes its channel's `rate` (sends, window ms). The
window is a sorted set of the bot's recent sends: a send enters it when it takes its slot (scored
"in flight") and is stamped with the time its answer came back once it has (`done`). A slot is free
when fewer than `bot_rate` sends are in flight or answered within the window. Since a request
reaches Telegram after its slot was taken and before its answer comes back, the 31st request of any
run reaches Telegram at least a window after the 1st did, however late a busy machine sends or reads
them: the limit holds at Telegram's end, not only at ours. A send whose worker died stays "in
flight" for `inflight_ms` at most.

Per chat: a token bucket (about 1 message/s, with a small burst so a welcome's parts go out
together). A bot-wide pause after a 429.

Two priorities share a bot's window: what buyers are owed (the funnel, codes, deliveries) and
marketing (follow-ups, broadcasts). A buyer-facing send that finds the window full enters the bot's
waiting set until it takes a slot (or a second after it expected to); marketing sends stand back
while anyone is in it, so a broadcast at the bot's full rate makes a welcome wait about one slot,
however late a busy machine wakes the welcome's thread. Paid broadcasts (`allow_paid_broadcast`)
have a window of their own, at the paid rate.

A slow window (WhatsApp: 10 a minute by default) needs more, since a buyer's wait there cannot be
slept through. Marketing may fill only four fifths of it (8 of 10: the rest is kept for buyers),
paced evenly (one marketing slot every 7.5 s, shared by every broadcast and follow-up of the
number): a buyer finds a slot free, or one freed within a pace. A buyer-facing send that must wait
longer goes back to the queue with its delay but keeps its place in the waiting set, under its
outbox key, for that delay and KEEP_PLACE_MS more: the slot freed meanwhile is not marketing's.

A caller that must wait sleeps when the wait is short and is re-queued with a delay when it is long:
messages queue, never fail."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import dramatiq
import redis

# KEYS: bot window (sorted set: send id → in-flight deadline, then answer time), chat bucket, bot
# pause, funnel waiters (sorted set: waiter → until), stop key ("" = none), marketing pace (the time
# the next marketing send may take a slot).
# ARGV: limit, window ms, chat rate, chat burst, waiter id ("" = marketing), send id, in-flight ms,
# slots of the window marketing leaves to buyers, ms between marketing slots, ms a waiter keeps its
# place past its wait.
# Returns 0 when a slot was taken, -1 when the stop key is set, else how many ms to wait first.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if KEYS[5] ~= '' and redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then return paused - now end
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local crate, cburst = tonumber(ARGV[3]), tonumber(ARGV[4])
local waiter, inflight = ARGV[5], tonumber(ARGV[7])
local reserve, pace, keep = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local wait = 0
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
-- marketing may fill the window only up to limit - reserve: the rest is kept for buyers
local cap = limit
if waiter == '' then cap = limit - reserve end
if count >= cap then
  local nth = tonumber(redis.call('ZRANGE', KEYS[1], count - cap, count - cap, 'WITHSCORES')[2])
  if nth <= now then wait = nth + window - now else wait = math.min(window, 50) end
  wait = math.max(wait, 1)
end
if waiter ~= '' and wait > 0 then
  redis.call('ZADD', KEYS[4], now + wait + keep, waiter)
  local last = tonumber(redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')[2])
  redis.call('PEXPIREAT', KEYS[4], last + 1000)
end
if waiter == '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if redis.call('ZCARD', KEYS[4]) > 0 then
    if pace > 0 then wait = math.max(wait, 250) else wait = math.max(wait, 5) end
  end
  if pace > 0 then
    local next_at = tonumber(redis.call('GET', KEYS[6]) or '0')
    if next_at > now then wait = math.max(wait, next_at - now) end
  end
end
local v = redis.call('HMGET', KEYS[2], 't', 'ts')
local c = cburst
if v[1] then c = math.min(cburst, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * crate / 1000) end
if c < 1 then wait = math.max(wait, math.ceil((1 - c) * 1000 / crate)) end
if wait > 0 then return wait end
if waiter ~= '' then redis.call('ZREM', KEYS[4], waiter) end
if waiter == '' and pace > 0 then redis.call('SET', KEYS[6], now + pace, 'PX', pace + 1000) end
redis.call('ZADD', KEYS[1], now + inflight, ARGV[6])
redis.call('PEXPIRE', KEYS[1], window + inflight + 1000)
redis.call('HSET', KEYS[2], 't', tostring(c - 1), 'ts', now)
redis.call('PEXPIRE', KEYS[2], math.ceil(cburst * 1000 / crate) + 1000)
return 0
"""

# KEYS: bot window. ARGV: send id. The send's answer came back: it counts from now on, for a window.
_DONE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1])
"""

_PAUSE = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > current then redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000) end
return until_ms
"""

STOPPED = -1
BUYER_SHARE = 5  # on a slow window, marketing leaves 1 slot in 5 to buyers
KEEP_PLACE_MS = 5000  # a buyer's send that waits in the queue keeps its place this long past its wait


@dataclass(frozen=True)
class Ticket:
    """A slot taken in a bot's window: give it back with `Throttle.done` when the answer is in."""

    window: str
    send_id: str


class Throttle:
    def __init__(
        self,
        client: redis.Redis,
        *,
        bot_rate: int = 30,
        window_ms: int = 1000,
        chat_rate: int = 1,
        chat_burst: int = 3,
        paid_rate: int = 1000,
        inflight_ms: int = 15_000,
        max_sleep_ms: int = 2000,
        prefix: str = "grimbots:tg",
    ) -> None:
        self.client = client
        self.bot_rate, self.window_ms, self.paid_rate = bot_rate, window_ms, paid_rate
        self.chat_rate, self.chat_burst = chat_rate, chat_burst
        self.inflight_ms, self.max_sleep_ms = inflight_ms, max_sleep_ms
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._done = client.register_script(_DONE)
        self._pause = client.register_script(_PAUSE)

    def _pause_key(self, bot_id: str) -> str:
        return f"{self.prefix}:pause:{{{bot_id}}}"

    def _waiters(self, bot_id: str) -> str:
        return f"{self.prefix}:waiting:{{{bot_id}}}"

    def _window(self, bot_id: str, paid: bool) -> str:
        return f"{self.prefix}:{'paid' if paid else 'sent'}:{{{bot_id}}}"

    def try_acquire(self, bot_id: str, chat_id: int, *, marketing: bool = False, paid: bool = False,
                    stop_key: str = "", waiter: str | None = None, send_id: str | None = None,
                    rate: tuple[int, int] | None = None, paced: bool = True) -> int:  # fmt: skip
        """Take one send for the bot and the chat: 0, or the ms to wait first, or STOPPED when
        `stop_key` exists (a broadcast stopped: checked in the same call that would take the slot).
        A buyer-facing send that must wait is kept in the bot's waiting set under `waiter` (one
        id per send), which marketing sends yield to. The slot is `send_id`'s (give it to `done`).
        `paced=False`: marketing that answers a person (a hint) keeps out of buyers' share of a slow
        window and yields to them, but does not wait for bulk marketing's pace."""
        keys = [self._window(bot_id, paid), f"{self.prefix}:chat:{{{bot_id}}}:{chat_id}", self._pause_key(bot_id),
                self._waiters(bot_id), stop_key, f"{self.prefix}:pace:{{{bot_id}}}"]  # fmt: skip
        limit, window = rate or (self.bot_rate, self.window_ms)
        if paid:
            limit, window = self.paid_rate, 1000
        who = "" if marketing else (waiter or uuid.uuid4().hex)
        reserve, pace = self.buyers_share(limit, window)
        pace = pace if paced else 0
        keep = KEEP_PLACE_MS if self.slow(window) else 1000
        args: list[str | int] = [limit, window, self.chat_rate, self.chat_burst, who, send_id or uuid.uuid4().hex,
                                 self.inflight_ms, reserve, pace, keep]  # fmt: skip
        return int(self._acquire(keys=keys, args=args))

    def slow(self, window_ms: int) -> bool:
        """A window whose waits cannot be slept through (WhatsApp's minute): a buyer's send may wait
        in the queue for its slot, so buyers need slots kept for them and a place kept in line."""
        return window_ms > self.max_sleep_ms

    def buyers_share(self, limit: int, window_ms: int) -> tuple[int, int]:
        """On a slow window: the slots marketing leaves to buyers (a fifth: 2 of 10 a minute) and the
        ms between marketing slots (the rest of the window, evenly: 7.5 s at 10 a minute), so a
        buyer finds a slot free, or one freed within a pace, however long a broadcast runs."""
        if not self.slow(window_ms):
            return 0, 0
        reserve = min(limit // BUYER_SHARE, limit - 1)
        return reserve, -(-window_ms // (limit - reserve))

    def ticket(self, bot_id: str, *, paid: bool = False) -> Ticket:
        return Ticket(self._window(bot_id, paid), uuid.uuid4().hex)

    def acquire(self, bot_id: str, chat_id: int, *, marketing: bool = False, rate: tuple[int, int] | None = None,
                waiter: str | None = None, paced: bool = True, sleep: bool = True) -> Ticket:  # fmt: skip
        """Wait for a slot (buyer-facing priority unless `marketing`). A long wait raises
        dramatiq.Retry with that delay instead of holding a worker thread (the message goes back to
        the queue and this send is made later). `waiter`: the send's own id in the waiting set (its
        outbox key), the same when it comes back. `sleep=False`: any wait raises at once."""
        ticket, waited, waiter = self.ticket(bot_id), 0, waiter or uuid.uuid4().hex
        window_ms = (rate or (self.bot_rate, self.window_ms))[1]
        while (wait := self.try_acquire(bot_id, chat_id, marketing=marketing, waiter=waiter,
                                        send_id=ticket.send_id, rate=rate, paced=paced)) > 0:  # fmt: skip
            if waited + wait > self.max_sleep_ms or not sleep:
                # On a fast window marketing need not wait for it now. On a slow one it keeps its
                # place (the waiting set holds it KEEP_PLACE_MS past its wait): the slot freed while
                # it is in the queue is not taken by marketing.
                if not self.slow(window_ms):
                    self.client.zrem(self._waiters(bot_id), waiter)
                raise dramatiq.Retry(f"rate limited for {wait} ms", delay=max(wait, 100))
            time.sleep(wait / 1000)
            waited += wait
        return ticket

    def done(self, ticket: Ticket | None) -> None:
        """The send's answer came back (or its request failed): it counts from now, for a window."""
        if ticket is not None:
            self._done(keys=[ticket.window], args=[ticket.send_id])

    def pause_bot(self, bot_id: str, seconds: float) -> None:
        """After a 429 (or a disconnected number): no worker sends for this bot until it has passed."""
        self._pause(keys=[self._pause_key(bot_id)], args=[int(seconds * 1000)])

    def resume_bot(self, bot_id: str) -> None:
        """The reason for a pause is gone (a number connected again): its sends go now."""
        self.client.delete(self._pause_key(bot_id))
