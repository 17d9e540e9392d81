"""Dramatiq middleware of our own: each declares the hooks it needs and nothing more."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

from db.database import db
from telemetry import correlation_id


class DbConnection(dramatiq.Middleware):
    """Opens the thread's database connection around each message, and gives it back after."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        db.connect(reuse_if_open=True)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if not db.is_closed():
            db.close()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if not db.is_closed():
            db.close()


class Correlation(dramatiq.Middleware):
    """Carries the correlation id: set while a message is processed (its `correlation_id` option,
    or its own id for a message the edge wrote), and stamped on every message enqueued meanwhile."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        correlation_id.set(message.options.get("correlation_id") or message.message_id)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        correlation_id.set(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        correlation_id.set(None)

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        cid = correlation_id.get()
        if cid and "correlation_id" not in message.options:
            message.options["correlation_id"] = cid
