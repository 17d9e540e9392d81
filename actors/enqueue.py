"""Enqueue after commit: messages built inside a unit of work go out only once its transaction has
committed, and are dropped if it rolls back (Polar's worker/_enqueue.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dramatiq
from dramatiq import Message

from db.database import transaction

_local = threading.local()


def _stack() -> list[list[Message]]:
    stack: list[list[Message]] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


@contextmanager
def unit_of_work() -> Iterator[None]:
    """A write transaction whose enqueued messages are flushed after it commits."""
    stack = _stack()
    buffer: list[Message] = []
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
    for message in buffer:
        broker.enqueue(message)


def enqueue(message: Message) -> None:
    """Send `actor.message(...)` now, or after the surrounding unit of work commits."""
    stack = _stack()
    if stack:
        stack[-1].append(message)
    else:
        dramatiq.get_broker().enqueue(message)
