"""The edge's enqueue path: Dramatiq messages written to Redis in batches from the event loop.

A plain `actor.send()` blocks the event loop on one synchronous Redis round-trip per message, and
decoding then re-encoding each payload costs more than the framework itself. Here a request
splices the raw body it already validated into the message's JSON, hands the bytes to one
flusher task and awaits it; the flusher writes every message waiting at that moment with one
script call per queue (atomic, as dramatiq's own enqueue), so one round-trip acks many requests,
and a request is answered only after Redis has its message."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import time
import uuid
from typing import Any

import dramatiq
import redis.asyncio as aioredis
from dramatiq.encoder import JSONEncoder
from redis.exceptions import NoScriptError

log = logging.getLogger(__name__)


class EnqueueError(Exception):
    """Redis did not take the message (down, slow, or refused): the caller answers 503."""


@functools.cache
def _head(queue_name: str, actor_name: str) -> str:
    if not isinstance(dramatiq.get_encoder(), JSONEncoder):
        raise RuntimeError("the edge writes messages as JSON: keep dramatiq's JSONEncoder")
    return f'{{"queue_name":{json.dumps(queue_name)},"actor_name":{json.dumps(actor_name)},"args":['


def message_bytes(actor: dramatiq.Actor[Any, Any], leading_args: tuple[str, ...], raw_json: str) -> tuple[str, bytes]:
    """(redis id, bytes) of the message `actor.message(*leading_args, json.loads(raw_json))` as
    dramatiq's JSONEncoder writes it, without decoding and re-encoding the payload. `raw_json`
    must already be known to be valid JSON."""
    message_id = str(uuid.uuid4())  # also the redis id: a retry gets a new one from the broker
    lead = "".join(json.dumps(arg) + "," for arg in leading_args)
    data = (
        f'{_head(actor.queue_name, actor.actor_name)}{lead}{raw_json}],"kwargs":{{}},'
        f'"options":{{"redis_message_id":"{message_id}"}},"message_id":"{message_id}",'
        f'"message_timestamp":{int(time.time() * 1000)}}}'
    )
    return message_id, data.encode()


# The "enqueue" command of dramatiq's dispatch.lua (HSET the data, RPUSH the id), for many
# messages of one queue in one atomic call. KEYS: queue list, queue hash; ARGV: id, data, id, data...
ENQUEUE_MANY = """
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
local ids = {}
for i = 1, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
for i = 1, #ids, 500 do redis.call('RPUSH', KEYS[1], unpack(ids, i, math.min(i + 499, #ids))) end
return #ids
"""


class BatchEnqueuer:
    def __init__(
        self, client: aioredis.Redis, *, namespace: str = "dramatiq", max_batch: int = 1000, timeout: float = 0.5
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.max_batch = max_batch
        self.timeout = timeout
        self._pending: list[tuple[str, str, bytes, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sha = hashlib.sha1(ENQUEUE_MANY.encode()).hexdigest()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edge-enqueue-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail(self._pending, "edge shutting down")
        self._pending = []

    async def enqueue(self, queue: str, redis_id: str, data: bytes) -> None:
        """Returns once Redis holds the message; raises EnqueueError within about 2 × timeout."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((queue, redis_id, data, future))
        self._wakeup.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                try:
                    await asyncio.wait_for(self._write(batch), self.timeout)
                except Exception as exc:  # noqa: BLE001 - every failure means "not enqueued"
                    log.warning("enqueue failed batch=%d error=%s", len(batch), type(exc).__name__)
                    self._fail(batch, type(exc).__name__)
                    continue
                for *_, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def _write(self, batch: list[tuple[str, str, bytes, asyncio.Future[None]]]) -> None:
        by_queue: dict[str, list[bytes | str]] = {}
        for queue, redis_id, data, _ in batch:
            by_queue.setdefault(queue, []).extend((redis_id, data))
        for queue, pairs in by_queue.items():
            keys = (f"{self.namespace}:{queue}", f"{self.namespace}:{queue}.msgs")
            try:
                await self.client.evalsha(self._sha, 2, *keys, *pairs)
            except NoScriptError:  # Redis restarted, or another server behind the same URL
                self._sha = await self.client.script_load(ENQUEUE_MANY)
                await self.client.evalsha(self._sha, 2, *keys, *pairs)

    @staticmethod
    def _fail(batch: list[tuple[str, str, bytes, asyncio.Future[None]]], reason: str) -> None:
        for *_, future in batch:
            if not future.done():
                future.set_exception(EnqueueError(reason))
