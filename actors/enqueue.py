"""Enqueue after commit: messages built inside a unit of work go out only once its transaction has
committed, and are dropped if it rolls back (Polar's worker/_enqueue.py). `after_commit` does the
same for any other effect outside the database (a Redis write that schedules work, say)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dramatiq
from dramatiq import Message

from db.database import transaction

_local = threading.local()

Pending = Message | Callable[[], object]


def _stack() -> list[list[Pending]]:
    stack: list[list[Pending]] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


@contextmanager
def unit_of_work() -> Iterator[None]:
    """A write transaction whose enqueued messages are flushed after it commits."""
    stack = _stack()
    buffer: list[Pending] = []
    stack.append(buffer)
    try:
        with transaction():
            yield
    finally:
        stack.pop()
    if stack:  # nested: the outer unit decides
        stack[-1].extend(buffer)
        return
    broker = dramatiq.get_broker()
    for item in buffer:
        if isinstance(item, Message):
            broker.enqueue(item)
        else:
            item()


def enqueue(message: Message) -> None:
    """Send `actor.message(...)` now, or after the surrounding unit of work commits."""
    stack = _stack()
    if stack:
        stack[-1].append(message)
    else:
        dramatiq.get_broker().enqueue(message)


def after_commit(callback: Callable[[], object]) -> None:
    """Run `callback` now, or after the surrounding unit of work commits (never if it rolls back)."""
    stack = _stack()
    if stack:
        stack[-1].append(callback)
    else:
        callback()
