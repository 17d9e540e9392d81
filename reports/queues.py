"""Inspecting and repairing the Dramatiq queues in Redis (the RedisBroker's key layout)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from typing import Any

from dramatiq import Message

NAMESPACE = "dramatiq"


@dataclass(frozen=True)
class QueueStats:
    queue: str
    ready: int
    in_flight: int
    delayed: int
    dead: int
    oldest_ready_age_seconds: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _key(queue: str, suffix: str = "") -> str:
    return f"{NAMESPACE}:{queue}{suffix}"


def queue_stats(client: Any, queue: str) -> QueueStats:
    pipe = client.pipeline(transaction=False)
    pipe.llen(_key(queue))
    pipe.hlen(_key(queue, ".msgs"))
    pipe.hlen(_key(queue, ".DQ.msgs"))
    pipe.zcard(_key(queue, ".XQ"))
    pipe.lindex(_key(queue), 0)
    ready, stored, delayed, dead, head = pipe.execute()
    age = None
    if head is not None:
        data = client.hget(_key(queue, ".msgs"), head)
        if data is not None:
            age = max(0.0, time.time() - Message.decode(data).message_timestamp / 1000)
    return QueueStats(queue, ready, max(0, stored - ready), delayed, dead, age)


def retry_dead(client: Any, queue: str) -> int:
    """Move every dead-lettered message of `queue` back onto it, with its retry count reset."""
    moved = 0
    for redis_id in client.zrange(_key(queue, ".XQ"), 0, -1):
        data = client.hget(_key(queue, ".XQ.msgs"), redis_id)
        if data is None:
            client.zrem(_key(queue, ".XQ"), redis_id)
            continue
        message = Message.decode(data)
        options = {k: v for k, v in message.options.items() if k not in ("retries", "traceback", "eta")}
        # Back on the canonical queue (a message that died while delayed carries the .DQ name).
        revived = dataclasses.replace(message, queue_name=queue, options=options)
        pipe = client.pipeline(transaction=True)
        pipe.hset(_key(queue, ".msgs"), redis_id, revived.encode())
        pipe.rpush(_key(queue), redis_id)
        pipe.zrem(_key(queue, ".XQ"), redis_id)
        pipe.hdel(_key(queue, ".XQ.msgs"), redis_id)
        pipe.execute()
        moved += 1
    return moved
