"""Dramatiq middleware of our own: each declares the hooks it needs and nothing more."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy

from db.database import db


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
