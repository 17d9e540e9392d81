"""Outbound Telegram rate limits shared by every worker process: token buckets in Redis.

Per bot (about 30 messages/s) and per chat (about 1 message/s, with a small burst so a welcome's
parts go out together), plus a bot-wide pause after a 429. A caller that must wait sleeps when
the wait is short and is re-queued with a delay when it is long: messages queue, never fail."""

from __future__ import annotations

import time

import dramatiq
import redis

# KEYS: bot bucket, chat bucket, bot pause. ARGV: bot rate, bot burst, chat rate, chat burst.
# Returns 0 when both tokens were taken, else how many ms to wait before trying again.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then return paused - now end
local function level(key, rate, burst)
  local v = redis.call('HMGET', key, 't', 'ts')
  local tokens, ts = tonumber(v[1]), tonumber(v[2])
  if not tokens then return burst end
  return math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
end
local brate, bburst = tonumber(ARGV[1]), tonumber(ARGV[2])
local crate, cburst = tonumber(ARGV[3]), tonumber(ARGV[4])
local b, c = level(KEYS[1], brate, bburst), level(KEYS[2], crate, cburst)
if b < 1 or c < 1 then
  local wait = 1
  if b < 1 then wait = math.max(wait, math.ceil((1 - b) * 1000 / brate)) end
  if c < 1 then wait = math.max(wait, math.ceil((1 - c) * 1000 / crate)) end
  return wait
end
redis.call('HSET', KEYS[1], 't', tostring(b - 1), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(bburst * 1000 / brate) + 1000)
redis.call('HSET', KEYS[2], 't', tostring(c - 1), 'ts', now)
redis.call('PEXPIRE', KEYS[2], math.ceil(cburst * 1000 / crate) + 1000)
return 0
"""

_PAUSE = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > current then redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000) end
return until_ms
"""


class Throttle:
    def __init__(
        self,
        client: redis.Redis,
        *,
        bot_rate: int = 30,
        chat_rate: int = 1,
        chat_burst: int = 3,
        max_sleep_ms: int = 2000,
        prefix: str = "grimbots:tg",
    ) -> None:
        self.client = client
        self.bot_rate, self.chat_rate, self.chat_burst = bot_rate, chat_rate, chat_burst
        self.max_sleep_ms = max_sleep_ms
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._pause = client.register_script(_PAUSE)

    def _keys(self, bot_id: str, chat_id: int) -> list[str]:
        p = self.prefix
        return [f"{p}:bot:{{{bot_id}}}", f"{p}:chat:{{{bot_id}}}:{chat_id}", f"{p}:pause:{{{bot_id}}}"]

    def try_acquire(self, bot_id: str, chat_id: int) -> int:
        """Take one send from both buckets; returns 0, or the ms to wait first."""
        args = [self.bot_rate, self.bot_rate, self.chat_rate, self.chat_burst]
        return int(self._acquire(keys=self._keys(bot_id, chat_id), args=args))

    def acquire(self, bot_id: str, chat_id: int) -> None:
        """Wait for a slot. A long wait raises dramatiq.Retry with that delay instead of holding a
        worker thread (the message goes back to the queue and this send is made later)."""
        waited = 0
        while (wait := self.try_acquire(bot_id, chat_id)) > 0:
            if waited + wait > self.max_sleep_ms:
                raise dramatiq.Retry(f"rate limited for {wait} ms", delay=max(wait, 100))
            time.sleep(wait / 1000)
            waited += wait

    def pause_bot(self, bot_id: str, seconds: float) -> None:
        """After a 429: no worker sends for this bot until Telegram's retry_after has passed."""
        self._pause(keys=[self._keys(bot_id, 0)[2]], args=[int(seconds * 1000)])
