"""The edge's enqueue path: Dramatiq messages written to Redis in batches from the event loop.

A plain `actor.send()` blocks the event loop on one synchronous Redis round-trip per message.
Here every request hands its message to one flusher task and awaits it; the flusher writes all
messages waiting at that moment in one pipelined MULTI/EXEC, so under load one round-trip acks
many requests, and a request is answered only after Redis has its message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import redis.asyncio as aioredis
from dramatiq import Message

log = logging.getLogger(__name__)


class EnqueueError(Exception):
    """Redis did not take the message (down, slow, or refused): the caller answers 503."""


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class BatchEnqueuer:
    def __init__(self, client: aioredis.Redis, *, namespace: str = "dramatiq", max_batch: int = 512,
                 timeout: float = 1.0) -> None:  # fmt: skip
        self.client = client
        self.namespace = namespace
        self.max_batch = max_batch
        self.timeout = timeout
        self._pending: list[tuple[str, str, bytes, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="edge-enqueue-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for *_, future in self._pending:
            if not future.done():
                future.set_exception(EnqueueError("edge shutting down"))
        self._pending.clear()

    async def enqueue(self, message: Message) -> None:
        """Returns once Redis holds the message, as Dramatiq's RedisBroker.enqueue would store it."""
        redis_id = str(uuid.uuid4())
        data = message.copy(options={**message.options, "redis_message_id": redis_id}).encode()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)  # a request that gave up must not leave an unread error
        self._pending.append((message.queue_name, redis_id, data, future))
        self._wakeup.set()
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            raise EnqueueError("redis did not answer in time") from None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[str, str, bytes, asyncio.Future[None]]]) -> None:
        # Same keys and order as the "enqueue" command of dramatiq's dispatch.lua.
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for queue, redis_id, data, _ in batch:
                    pipe.hset(f"{self.namespace}:{queue}.msgs", redis_id, data)
                    pipe.rpush(f"{self.namespace}:{queue}", redis_id)
                await asyncio.wait_for(pipe.execute(), self.timeout)
        except Exception as exc:  # noqa: BLE001 - every failure means "not enqueued"
            log.warning("enqueue failed batch=%d error=%s", len(batch), type(exc).__name__)
            for *_, future in batch:
                if not future.done():
                    future.set_exception(EnqueueError(type(exc).__name__))
            return
        for *_, future in batch:
            if not future.done():
                future.set_result(None)
