"""Who holds a claim, and whether they are still alive: a worker process names itself (host, pid and
a nonce, so a restarted process with the same pid is someone else) and renews a short-lived Redis
key every second while it runs. A send claimed by a holder whose key has expired was claimed by a
dead process: another worker takes it over at once instead of after OUTBOX_STALE_CLAIM_SECONDS.

Only processes that run this heartbeat (workers) name themselves on their claims; a claim with no
holder (a test, a command) keeps the timeout rule.

The same thread beats Dramatiq's heartbeat for the process, and each second one worker of the
platform (whichever takes the turn) rescues every queue: the unacked messages of a worker silent
for WORKER_HEARTBEAT_TIMEOUT_MS go back to their queues then, not whenever Dramatiq's maintenance
happens to run. So what a dead process (or a whole machine) held is sent again about
WORKER_HEARTBEAT_TIMEOUT_MS + 1 s after its death."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Protocol, cast

import dramatiq
import redis

log = logging.getLogger(__name__)

PREFIX = "grimbots:holder"
BEAT_SECONDS = 1.0
TTL_SECONDS = 4  # a holder silent this long is dead: its claims are free
RESCUE_KEY = "grimbots:rescue"  # whose turn it is to rescue the queues this second

_me: str | None = None


def me() -> str | None:
    """This process's holder name, once its heartbeat runs; None elsewhere."""
    return _me


def alive(client: redis.Redis, holder: str) -> bool:
    """Whether the holder's heartbeat is current. Redis unreachable: assume alive (never take over
    a claim on a guess)."""
    try:
        return bool(client.exists(f"{PREFIX}:{holder}"))
    except redis.RedisError:
        return True


class Rescuing(Protocol):
    """What Liveness needs of the broker (actors/broker.Broker)."""

    def beat(self) -> None: ...
    def rescue(self, queue_name: str) -> None: ...
    def get_declared_queues(self) -> set[str]: ...
    def get_declared_delay_queues(self) -> set[str]: ...


def rescue_turn(client: redis.Redis, broker: Rescuing, holder: str) -> bool:
    """Rescues every declared queue (delay queues too) when it is this holder's turn: at most one
    process each BEAT_SECONDS, platform-wide."""
    if not client.set(RESCUE_KEY, holder, nx=True, px=int(BEAT_SECONDS * 1000)):
        return False
    for queue_name in sorted(broker.get_declared_queues() | broker.get_declared_delay_queues()):
        broker.rescue(queue_name)
    return True


class Liveness(dramatiq.Middleware):
    """Starts the holder heartbeat when a worker boots; removes it when the worker stops."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.stopped = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        global _me
        name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        key = f"{PREFIX}:{name}"

        rescuing = cast(Rescuing, broker)
        self.stopped = stopped = threading.Event()  # this boot's (a process may boot workers again: tests)

        def run() -> None:
            while not stopped.is_set():
                try:
                    self.client.set(key, 1, ex=TTL_SECONDS)
                    rescuing.beat()
                    rescue_turn(self.client, rescuing, name)
                except redis.RedisError as exc:
                    log.warning("holder heartbeat failed error=%s", type(exc).__name__)
                stopped.wait(BEAT_SECONDS)

        self.client.set(key, 1, ex=TTL_SECONDS)  # alive before the first claim
        _me = name
        threading.Thread(target=run, name="liveness", daemon=True).start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # The worker has finished what it held (a graceful stop): its key goes with it.
        self.stopped.set()
        try:
            self.client.delete(f"{PREFIX}:{_me}")
        except redis.RedisError:
            pass
