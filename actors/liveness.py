"""Who holds a claim, and whether they are still alive: a worker process names itself (host, pid and
a nonce, so a restarted process with the same pid is someone else) and renews a short-lived Redis
key every second while it runs. A send claimed by a holder whose key has expired was claimed by a
dead process: another worker takes it over at once instead of after OUTBOX_STALE_CLAIM_SECONDS.

Only processes that run this heartbeat (workers) name themselves on their claims; a claim with no
holder (a test, a command) keeps the timeout rule."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

import dramatiq
import redis

log = logging.getLogger(__name__)

PREFIX = "grimbots:holder"
BEAT_SECONDS = 1.0
TTL_SECONDS = 4  # a holder silent this long is dead: its claims are free

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


class Liveness(dramatiq.Middleware):
    """Starts the holder heartbeat when a worker boots; removes it when the worker stops."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.stopped = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        global _me
        name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        key = f"{PREFIX}:{name}"

        def run() -> None:
            while not self.stopped.is_set():
                try:
                    self.client.set(key, 1, ex=TTL_SECONDS)
                except redis.RedisError as exc:
                    log.warning("holder heartbeat failed error=%s", type(exc).__name__)
                self.stopped.wait(BEAT_SECONDS)

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
