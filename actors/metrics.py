"""Worker metrics shared through Redis: correct however many worker processes and machines run.

Each process counts in memory and adds its counts to one Redis hash every FLUSH_SECONDS (a
pipelined HINCRBYFLOAT per series); the edge's /metrics reads the hash at scrape time. A process
that dies loses at most its last unflushed interval. Series are counters only (histograms as
cumulative bucket counters), so adding is all a process ever does."""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import socket
import threading
import time
from collections import defaultdict
from typing import Any

import dramatiq
import redis
from dramatiq.broker import MessageProxy

log = logging.getLogger(__name__)

KEY = "grimbots:metrics"
FLUSH_SECONDS = 2.0
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@functools.lru_cache(maxsize=8192)
def _field(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    """A series' hash field. Cached: every processed message names the same few dozen series, and
    encoding them anew (up to 16 per message with the duration histogram) is work on the hot path."""
    return json.dumps([name, dict(labels)], sort_keys=True, separators=(",", ":"))


class SharedCounters:
    """In-process counters, flushed to Redis by a daemon thread."""

    def __init__(self, client: redis.Redis, key: str = KEY, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.client = client
        self.key = key
        self.flush_seconds = flush_seconds
        self._pending: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @staticmethod
    def field(name: str, labels: dict[str, str]) -> str:
        return _field(name, tuple(sorted(labels.items())))

    def inc(self, name: str, labels: dict[str, str], value: float = 1.0) -> None:
        field = self.field(name, labels)
        with self._lock:
            self._pending[field] += value
        self._ensure_thread()

    def observe(self, name: str, labels: dict[str, str], seconds: float) -> None:
        """A histogram observation: _bucket{le} for every bound it is under, _sum and _count."""
        fields = [self.field(f"{name}_bucket", {**labels, "le": str(b)}) for b in DURATION_BUCKETS if seconds <= b]
        fields.append(self.field(f"{name}_bucket", {**labels, "le": "+Inf"}))
        with self._lock:
            for field in fields:
                self._pending[field] += 1
            self._pending[self.field(f"{name}_sum", labels)] += seconds
            self._pending[self.field(f"{name}_count", labels)] += 1
        self._ensure_thread()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, defaultdict(float)
        if not pending:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for field, value in pending.items():
                pipe.hincrbyfloat(self.key, field, value)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics flush failed series=%d error=%s", len(pending), type(exc).__name__)
            with self._lock:  # keep them for the next try
                for field, value in pending.items():
                    self._pending[field] += value

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="metrics-flusher", daemon=True)
                    self._thread.start()
                    atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            self.flush()


def read(client: redis.Redis, key: str = KEY) -> list[tuple[str, dict[str, str], float]]:
    """Every series in the shared hash: (name, labels, value)."""
    series = []
    for field, value in client.hgetall(key).items():
        name, labels = json.loads(field)
        series.append((name, labels, float(value)))
    return series


class WorkerMetrics(dramatiq.Middleware):
    """Messages by actor, queue and outcome (done, retried, failed, skipped) and their durations.
    Placed before Retries in the middleware list, so its after-hook sees Retries' verdict."""

    def __init__(self, counters: SharedCounters) -> None:
        self.counters = counters
        self._started: dict[str, float] = {}

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        started = self._started.pop(message.message_id, None)
        labels = {"actor": message.actor_name, "queue": message.queue_name}
        if exception is None:
            outcome = "done"
        elif message.failed:
            outcome = "failed"
        else:
            outcome = "retried"
        self.counters.inc("grimbots_worker_messages_total", {**labels, "outcome": outcome})
        if started is not None:
            self.counters.observe("grimbots_worker_message_duration_seconds", labels, time.perf_counter() - started)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._started.pop(message.message_id, None)
        labels = {"actor": message.actor_name, "queue": message.queue_name, "outcome": "skipped"}
        self.counters.inc("grimbots_worker_messages_total", labels)


HEARTBEAT_PREFIX = "grimbots:heartbeat"
HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TTL_SECONDS = 20


def heartbeat_key(role: str) -> str:
    return f"{HEARTBEAT_PREFIX}:{role}:{socket.gethostname()}:{os.getpid()}"


def beat(client: redis.Redis, role: str, info: dict[str, Any]) -> None:
    """Say this process is alive (the key expires unless renewed)."""
    client.set(heartbeat_key(role), json.dumps({**info, "at": time.time()}), ex=HEARTBEAT_TTL_SECONDS)


def processes(client: redis.Redis) -> list[dict[str, Any]]:
    """Every process whose heartbeat has not expired: role, host, pid, seconds since its last beat."""
    seen = []
    for key in client.scan_iter(f"{HEARTBEAT_PREFIX}:*", count=500):
        raw = client.get(key)
        if raw is None:
            continue
        _, role, host, pid = (key.decode() if isinstance(key, bytes) else key).rsplit(":", 3)
        info = json.loads(raw)
        seen.append({"role": role, "host": host, "pid": int(pid), "age_seconds": round(time.time() - info.pop("at"), 1),
                     **info})  # fmt: skip
    return sorted(seen, key=lambda p: (p["role"], p["host"], p["pid"]))


class Heartbeat(dramatiq.Middleware):
    """A worker process's heartbeat, from worker boot until it stops or dies."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.stopped = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        queues = worker.consumer_whitelist or {q for q in broker.get_declared_queues() if not q.endswith(".DQ")}
        info = {"queues": sorted(queues), "threads": worker.worker_threads}
        self.stopped = stopped = threading.Event()  # this boot's (a process may boot workers again: tests)

        def run() -> None:
            while not stopped.is_set():
                try:
                    beat(self.client, "worker", info)
                except redis.RedisError as exc:
                    log.warning("heartbeat failed error=%s", type(exc).__name__)
                stopped.wait(HEARTBEAT_SECONDS)

        threading.Thread(target=run, name="heartbeat", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.stopped.set()  # a stopped worker's process may live on (a test's): its beat ends with it
        try:
            self.client.delete(heartbeat_key("worker"))
        except redis.RedisError:
            pass
