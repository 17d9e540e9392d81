"""The Dramatiq broker on Redis, its middleware, the queues, and the retry policy of every actor.

Importing this module sets the global broker; every actor module imports it first, because Dramatiq
binds an actor to the global broker when the actor is declared. The import does no I/O: the Redis
client and the database connect on first use (`init_db` only points the proxy), and Sentry starts
only with SENTRY_DSN (before the broker: its Dramatiq integration reaches only brokers built after it)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

import settings
import telemetry
from actors.liveness import Liveness
from actors.metrics import Heartbeat, SharedCounters, WorkerMetrics
from actors.middleware import Correlation, DbConnection
from db.database import init_db
from gateways.payments.base import PaymentPermanent
from gateways.telegram import TelegramPermanent

# Queues, one per pipeline stage; the Procfile groups them into worker process types.
UPDATES = "updates"  # Telegram updates in, routed
FUNNEL = "funnel"  # /start welcome and later funnel steps
FOLLOWUPS = "followups"  # upsells and downsells when due (marketing: after what buyers are owed)
BROADCASTS = "broadcasts"  # remarketing broadcasts' senders (a worker of their own: the funnel never waits)
PAYMENTS = "payments"  # charge creation: a button press → a PIX code (slow or down gateways wait here)
SETTLE = "settle"  # payment notifications, the check button, reconciliation, deliveries
PIXEL = "pixel"  # ad clicks and Meta Conversions API events
MAINTENANCE = "maintenance"  # clock-driven housekeeping
QUEUES = (UPDATES, FUNNEL, FOLLOWUPS, BROADCASTS, PAYMENTS, SETTLE, PIXEL, MAINTENANCE)


def retry_when(max_retries: int) -> Callable[[int, BaseException], bool]:
    """Rate-limit and flood waits (dramatiq.Retry with a delay) always come back; permanent
    errors never do; anything else is retried with backoff up to `max_retries` times."""

    def decide(retries: int, exc: BaseException) -> bool:
        if isinstance(exc, dramatiq.Retry):
            return True
        if isinstance(exc, (TelegramPermanent, PaymentPermanent)):
            return False
        return retries < max_retries

    return decide


log = logging.getLogger(__name__)
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


class _HeldMessages:
    """Per (broker, queue): the redis ids this process has handed to its threads and not yet
    acked or nacked. Everything else in the broker's ack set for the queue is an orphan."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[tuple[str, str], set[str]] = {}

    def add(self, key: tuple[str, str], redis_id: str) -> None:
        with self._lock:
            self._held.setdefault(key, set()).add(redis_id)

    def discard(self, key: tuple[str, str], redis_id: str) -> None:
        with self._lock:
            self._held.get(key, set()).discard(redis_id)

    def clear(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._held.pop(key, None)

    def snapshot(self, key: tuple[str, str]) -> set[str]:
        with self._lock:
            return set(self._held.get(key, ()))


HELD = _HeldMessages()


class GivingBackConsumer(_RedisConsumer):  # type: ignore[misc]
    """Dramatiq's Redis consumer, which a worker builds anew after every connection error, made to
    give back what such an error orphaned. A fetch whose answer was lost as Redis went away, and
    messages prefetched by the consumer that was dropped, sit in this live worker's ack set, where
    Dramatiq's maintenance (which only rescues dead workers) never looks. On start, every message
    in the ack set that this process is not holding goes back to its queue."""

    def __init__(self, broker: RedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self.held_key = (broker.broker_id, queue_name)
        if queue_name.endswith(".DQ"):  # the consumer thread drops its in-memory delayed messages
            HELD.clear(self.held_key)
        acks = f"{broker.namespace}:__acks__.{broker.broker_id}.{queue_name}"
        try:
            members = {m.decode() if isinstance(m, bytes) else m for m in broker.client.smembers(acks)}
            orphans = sorted(members - HELD.snapshot(self.held_key))
            if orphans:
                broker.do_requeue(queue_name, *orphans)
                log.warning("gave back unacked messages queue=%s count=%d", queue_name, len(orphans))
        except REDIS_DOWN as exc:
            raise ConnectionClosed(exc) from None

    def __next__(self) -> MessageProxy | None:
        message: MessageProxy | None = super().__next__()
        if message is not None:
            HELD.add(self.held_key, message.options["redis_message_id"])
        return message

    def ack(self, message: MessageProxy) -> None:
        super().ack(message)
        HELD.discard(self.held_key, message.options["redis_message_id"])

    def nack(self, message: MessageProxy) -> None:
        super().nack(message)
        HELD.discard(self.held_key, message.options["redis_message_id"])

    def requeue(self, messages: Any) -> None:
        messages = list(messages)
        try:
            super().requeue(messages)
        except REDIS_DOWN as exc:  # Dramatiq expects its own error here (ConsumerThread.close)
            raise ConnectionClosed(exc) from None
        for message in messages:
            HELD.discard(self.held_key, message.options["redis_message_id"])


class Broker(RedisBroker):  # type: ignore[misc]
    """Dramatiq's Redis broker, with its consumers giving back what a connection error orphaned and
    a rescue that runs Dramatiq's maintenance for a queue on demand."""

    _forced = threading.local()

    @property
    def consumer_class(self) -> type[GivingBackConsumer]:
        return GivingBackConsumer

    def _should_do_maintenance(self, command: str) -> int:
        if getattr(self._forced, "on", False):
            return 1
        return int(super()._should_do_maintenance(command))

    def rescue(self, queue_name: str) -> None:
        """Dramatiq's maintenance for `queue_name`, now: the unacked messages of workers whose
        heartbeat is older than WORKER_HEARTBEAT_TIMEOUT_MS go back to the queue. (Left to chance,
        maintenance runs on a command in BROKER_MAINTENANCE_CHANCE per million: on an idle queue,
        minutes after a machine died.)"""
        self._forced.on = True
        try:
            self.do_qsize(queue_name)
        finally:
            self._forced.on = False

    def beat(self) -> None:
        """This process's Dramatiq heartbeat. Dramatiq beats only when a consumer fetches, and a
        consumer whose prefetch is full does not: a process whose threads are all busy for longer
        than the timeout would look dead and have its messages handed to another worker."""
        self.client.zadd(f"{self.namespace}:__heartbeats__", {self.broker_id: int(time.time() * 1000)})


class _EnqueueUntilTaken:
    """The broker as Retries sees it: an enqueue that waits out a Redis outage instead of failing."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._broker = broker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        while True:
            try:
                return self._broker.enqueue(message, delay=delay)
            except REDIS_DOWN as exc:
                log.warning("retry not enqueued yet, holding the message error=%s", type(exc).__name__)
                time.sleep(1.0)


class DurableRetries(Retries):
    """Retries whose retry is in Redis before the message is acked. Dramatiq's own logs the failed
    enqueue and acks the message anyway: an accepted update lost while Redis was away. Here the
    worker thread waits for Redis; if the worker dies meanwhile, the message is still unacked and
    Dramatiq's maintenance gives it to another worker."""

    def after_process_message(
        self, broker: dramatiq.Broker, message: MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        super().after_process_message(_EnqueueUntilTaken(broker), message, result=result, exception=exception)


def redis_client(url: str | None = None) -> redis.Redis:
    return redis.Redis.from_url(
        url or settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )


def make_broker(url: str | None = None) -> tuple[Broker, SharedCounters]:
    client = redis_client(url)
    counters = SharedCounters(client)
    broker = Broker(
        client=client,
        heartbeat_timeout=settings.WORKER_HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=settings.BROKER_MAINTENANCE_CHANCE,
        middleware=[
            AgeLimit(),
            TimeLimit(),
            ShutdownNotifications(),
            Callbacks(),
            Pipelines(),
            WorkerMetrics(counters),  # before Retries: its after-hook runs after Retries' verdict
            DurableRetries(),
            CurrentMessage(),
            DbConnection(),
            Correlation(),
            Heartbeat(client),
            Liveness(client),
        ],
    )
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker, counters


telemetry.init_sentry()  # first: Sentry's Dramatiq integration only reaches brokers built after it
broker, counters = make_broker()
dramatiq.set_broker(broker)
init_db()
