"""Dramatiq middleware of our own: each declares the hooks it needs and nothing more."""

from __future__ import annotations

from typing import Any

import dramatiq

from db.database import db


class DbConnection(dramatiq.Middleware):
    """Opens the thread's database connection around each message, and gives it back after."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        db.connect(reuse_if_open=True)

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message, *,
                              result: Any = None, exception: BaseException | None = None) -> None:  # fmt: skip
        if not db.is_closed():
            db.close()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        if not db.is_closed():
            db.close()
