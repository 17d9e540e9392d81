from typing import Any

import redis

from actors import updates
from actors.broker import broker, counters
from actors.metrics import SharedCounters, read
from catalog.schema import BotConfig
from tests.conftest import drain


def series(client: redis.Redis) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(name, tuple(sorted(labels.items()))): value for name, labels, value in read(client)}


def test_counts_from_several_processes_add_up(redis_client: redis.Redis) -> None:
    one, two = SharedCounters(redis_client), SharedCounters(redis_client)  # as two worker processes
    one.inc("grimbots_x_total", {"kind": "a"})
    two.inc("grimbots_x_total", {"kind": "a"}, 2)
    one.observe("grimbots_d_seconds", {"actor": "z"}, 0.02)
    two.observe("grimbots_d_seconds", {"actor": "z"}, 3.0)
    one.flush()
    two.flush()
    got = series(redis_client)
    assert got[("grimbots_x_total", (("kind", "a"),))] == 3
    assert got[("grimbots_d_seconds_count", (("actor", "z"),))] == 2
    assert got[("grimbots_d_seconds_sum", (("actor", "z"),))] == 3.02
    assert got[("grimbots_d_seconds_bucket", (("actor", "z"), ("le", "0.025")))] == 1
    assert got[("grimbots_d_seconds_bucket", (("actor", "z"), ("le", "5.0")))] == 2
    assert got[("grimbots_d_seconds_bucket", (("actor", "z"), ("le", "+Inf")))] == 2


def test_worker_counts_messages_by_outcome(demo_bot: BotConfig, redis_client: redis.Redis) -> None:
    def message(update_id: int) -> dict[str, Any]:
        return {"update_id": update_id, "message": {"message_id": 1, "date": 0, "text": "oi",
                "from": {"id": 5, "first_name": "Rui"}, "chat": {"id": 5, "type": "private"}}}  # fmt: skip

    counters.flush()
    redis_client.delete("grimbots:metrics")
    broker.enqueue(updates.route.message("demo", message(1)))
    broker.enqueue(updates.route.message("demo", message(1)))  # Telegram repeated it
    drain("updates")
    counters.flush()
    got = series(redis_client)
    done = ("grimbots_worker_messages_total", (("actor", "updates.route"), ("outcome", "done"), ("queue", "updates")))
    assert got[done] == 2
    assert (
        got[("grimbots_worker_message_duration_seconds_count", (("actor", "updates.route"), ("queue", "updates")))] == 2
    )
    assert got[("grimbots_updates_total", (("kind", "message"), ("repeated", "false")))] == 1
    assert got[("grimbots_updates_total", (("kind", "message"), ("repeated", "true")))] == 1
