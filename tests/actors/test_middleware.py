import json
import logging
from typing import Any

from dramatiq import Message
from dramatiq.broker import MessageProxy

import telemetry
from actors import funnel, updates
from actors.broker import broker
from actors.middleware import Correlation


def stored(queue: str) -> list[Message[Any]]:
    return [Message.decode(data) for data in broker.client.hvals(f"dramatiq:{queue}.msgs")]


def test_correlation_id_follows_an_update_into_the_messages_it_causes() -> None:
    middleware = next(m for m in broker.middleware if isinstance(m, Correlation))
    incoming = MessageProxy(updates.route.message("demo", {"update_id": 1}))  # as the edge wrote it
    middleware.before_process_message(broker, incoming)
    try:
        broker.enqueue(funnel.welcome.message("demo", 1, 1))
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "welcome handed over", None, None)
        assert f"cid={incoming.message_id}" in telemetry._TextFormatter().format(record)
        assert json.loads(telemetry._JsonFormatter().format(record))["cid"] == incoming.message_id
    finally:
        middleware.after_process_message(broker, incoming)
    [handed] = stored("funnel")
    assert handed.options["correlation_id"] == incoming.message_id
    assert telemetry.correlation_id.get() is None

    # The handed-over message keeps the first id, not its own.
    middleware.before_process_message(broker, MessageProxy(handed))
    try:
        assert telemetry.correlation_id.get() == incoming.message_id
    finally:
        middleware.after_process_message(broker, MessageProxy(handed))
