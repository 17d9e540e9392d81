"""The consumer side of "nothing accepted is lost" when Redis goes away: a retry that could not be
enqueued keeps its message unacked until it can be, and messages orphaned in a live worker's ack
set go back to their queue. Against a real redis-server of the test's own, stopped and restarted."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import redis

import settings
from actors.broker import GivingBackConsumer, make_broker
from actors.liveness import rescue_turn
from ops.procs import RedisServer, wait_until

QUEUE = "broker-test"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (ops/test installs it)")
    own = RedisServer(tmp_path)
    own.start()
    yield own
    own.kill()


def test_a_retry_that_cannot_be_enqueued_holds_its_message_until_redis_is_back(server: RedisServer) -> None:
    test_broker, _ = make_broker(server.url)
    test_broker.declare_queue(QUEUE)
    attempts: list[int] = []

    @dramatiq.actor(broker=test_broker, actor_name="test.flaky", queue_name=QUEUE, max_retries=3, min_backoff=10)
    def flaky(n: int) -> None:
        attempts.append(n)
        if len(attempts) == 1:
            server.kill()  # Redis vanishes while the message is being processed...
            threading.Timer(1.5, server.start).start()  # ... and comes back (from its AOF) later
            raise RuntimeError("first attempt fails")

    flaky.send(7)
    worker = dramatiq.Worker(test_broker, worker_threads=1, queues={QUEUE})
    worker.start()
    try:
        wait_until(lambda: len(attempts) == 2, 30, "the retry to run")
    finally:
        worker.stop()
    assert attempts == [7, 7]


def test_a_fetch_whose_answer_was_lost_is_given_back_when_the_consumer_restarts(server: RedisServer) -> None:
    test_broker, _ = make_broker(server.url)
    test_broker.declare_queue(QUEUE)

    @dramatiq.actor(broker=test_broker, actor_name="test.noop", queue_name=QUEUE)
    def noop(n: int) -> None:
        pass

    for n in range(3):
        noop.send(n)
    consumer = test_broker.consume(QUEUE, prefetch=1, timeout=100)
    assert isinstance(consumer, GivingBackConsumer)
    handed = next(consumer)  # one message handed to a worker thread: held by this process
    assert handed is not None
    test_broker.do_fetch(QUEUE, 2)  # the other two fetched, as Redis went away before answering
    client = redis.Redis(port=server.port)
    acks = f"dramatiq:__acks__.{test_broker.broker_id}.{QUEUE}"
    assert client.scard(acks) == 3 and client.llen(f"dramatiq:{QUEUE}") == 0

    test_broker.consume(QUEUE, prefetch=1, timeout=100)  # what the worker builds after the error
    assert client.llen(f"dramatiq:{QUEUE}") == 2  # the orphans are back in the queue...
    assert client.smembers(acks) == {handed.options["redis_message_id"].encode()}  # ... the held one is not
    consumer.ack(handed)
    assert client.scard(acks) == 0
    client.close()
    test_broker.client.close()


def test_a_consumer_started_while_redis_is_down_raises_the_connection_error_dramatiq_expects(
    server: RedisServer,
) -> None:
    test_broker, _ = make_broker(server.url)
    server.kill()
    started = time.monotonic()
    with pytest.raises(dramatiq.errors.ConnectionClosed):
        test_broker.consume(QUEUE, prefetch=1, timeout=100)
    assert time.monotonic() - started < 10


def test_a_dead_workers_messages_are_rescued_at_the_next_turn_and_a_busy_live_ones_are_not(
    server: RedisServer,
) -> None:
    """Item 12: a machine gone, what its workers held must come back within seconds, not when
    Dramatiq's maintenance happens to run (one command in BROKER_MAINTENANCE_CHANCE per million)."""
    dead, _ = make_broker(server.url)
    busy, _ = make_broker(server.url)  # alive, every thread busy: its consumers do not fetch
    rescuer, _ = make_broker(server.url)
    for each in (dead, busy, rescuer):
        each.declare_queue(QUEUE)
    for n in range(2):
        dead.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name="test.noop", args=(n,), kwargs={}, options={}))
    dead.do_fetch(QUEUE, 1)
    busy.do_fetch(QUEUE, 1)
    client = redis.Redis(port=server.port)
    assert client.llen(f"dramatiq:{QUEUE}") == 0
    silent = int(time.time() * 1000) - settings.WORKER_HEARTBEAT_TIMEOUT_MS - 1000
    client.zadd("dramatiq:__heartbeats__", {dead.broker_id: silent, busy.broker_id: silent})
    busy.beat()  # the busy process's liveness thread beats for it

    assert rescue_turn(client, rescuer, "host-b:7:cafe")
    assert client.llen(f"dramatiq:{QUEUE}") == 1  # the dead worker's message is back in the queue
    assert client.scard(f"dramatiq:__acks__.{dead.broker_id}.{QUEUE}") == 0
    assert client.scard(f"dramatiq:__acks__.{busy.broker_id}.{QUEUE}") == 1  # the live one keeps its own
    assert not rescue_turn(client, rescuer, "host-a:8:beef")  # one rescuer a second, platform-wide
    client.close()
    for each in (dead, busy, rescuer):
        each.client.close()
