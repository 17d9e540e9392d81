from typing import Any

from dramatiq import Message

from actors import updates
from actors.broker import broker
from db.catalog import BotConfig
from db.models import Lead, ProcessedUpdate


def start_update(update_id: int, user_id: int = 42, text: str = "/start") -> dict[str, Any]:
    user = {"id": user_id, "is_bot": False, "first_name": "Bia", "username": "bia", "language_code": "pt-br"}
    return {"update_id": update_id, "message": {"message_id": 1, "from": user, "date": 0, "text": text,
                                                "chat": {"id": user_id, "type": "private"}}}  # fmt: skip


def queued(queue: str) -> list[Message[Any]]:
    client = broker.client
    return [Message.decode(client.hget(f"dramatiq:{queue}.msgs", mid)) for mid in client.lrange(f"dramatiq:{queue}", 0, -1)]


def test_start_upserts_lead_and_enqueues_one_welcome(demo_bot: BotConfig) -> None:
    routed = updates.route_update(demo_bot, start_update(10, text="/start ad_123"))
    assert routed.kind == "start"
    lead = Lead.get_by_id(routed.lead_id)
    assert (lead.telegram_user_id, lead.first_name, lead.username, lead.language_code) == (42, "Bia", "bia", "pt-br")
    assert lead.start_payload == "ad_123" and lead.reachable
    welcome = queued("funnel")
    assert [(m.actor_name, m.args) for m in welcome] == [("funnel.welcome", ("demo", lead.id, 10))]

    # Delivered again: no second lead write, and the welcome it enqueues again is keyed to the
    # same update (the funnel sends it once; see test_funnel).
    assert updates.route_update(demo_bot, start_update(10)).kind == "duplicate"
    assert [m.args for m in queued("funnel")] == [("demo", lead.id, 10)] * 2
    assert ProcessedUpdate.select().count() == 1


def test_second_start_keeps_first_seen_and_payload(demo_bot: BotConfig) -> None:
    first = updates.route_update(demo_bot, start_update(1, text="/start abc"))
    again = updates.route_update(demo_bot, start_update(2, text="/start"))
    assert first.lead_id == again.lead_id
    lead = Lead.get_by_id(first.lead_id)
    assert lead.start_payload == "abc" and lead.first_seen_at <= lead.last_seen_at


def test_block_and_unblock(demo_bot: BotConfig) -> None:
    lead_id = updates.route_update(demo_bot, start_update(1)).lead_id

    def member(update_id: int, status: str) -> dict[str, Any]:
        return {"update_id": update_id, "my_chat_member": {
            "chat": {"id": 42, "type": "private"}, "from": {"id": 42, "first_name": "Bia"}, "date": 0,
            "old_chat_member": {"status": "member"}, "new_chat_member": {"status": status}}}  # fmt: skip

    assert updates.route_update(demo_bot, member(2, "kicked")).kind == "block"
    assert not Lead.get_by_id(lead_id).reachable
    assert updates.route_update(demo_bot, member(3, "member")).kind == "unblock"
    assert Lead.get_by_id(lead_id).reachable


def test_callback_is_answered_and_other_messages_touch_the_lead(demo_bot: BotConfig) -> None:
    callback = {"update_id": 5, "callback_query": {"id": "cbq-1", "from": {"id": 42, "first_name": "Bia"},
                "data": "buy:1", "message": {"message_id": 3, "chat": {"id": 42, "type": "private"}}}}  # fmt: skip
    assert updates.route_update(demo_bot, callback).kind == "callback"
    assert [(m.actor_name, m.args) for m in queued("funnel")] == [("funnel.callback", ("demo", 42, "cbq-1"))]
    plain = start_update(6, text="quanto custa?")
    assert updates.route_update(demo_bot, plain).kind == "message"
    group = start_update(7)
    group["message"]["chat"]["type"] = "group"
    assert updates.route_update(demo_bot, group).kind == "other"
    assert len(queued("funnel")) == 1


def test_failed_enqueue_is_made_good_by_the_redelivered_update(demo_bot: BotConfig) -> None:
    # Simulate Redis refusing the follow-up message at the broker boundary (a real network failure).
    import redis

    original = broker.client.connection_pool
    broker.client.connection_pool = redis.ConnectionPool.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        try:
            updates.route_update(demo_bot, start_update(9))
        except redis.ConnectionError:
            pass
        else:
            raise AssertionError("expected the enqueue to fail")
    finally:
        broker.client.connection_pool = original
    # The lead and the update record committed; the welcome did not go out. The redelivered
    # update finds its record and enqueues the (idempotent) welcome again.
    assert queued("funnel") == []
    routed = updates.route_update(demo_bot, start_update(9))
    assert routed.kind == "duplicate" and routed.lead_id is not None
    assert [m.args for m in queued("funnel")] == [("demo", routed.lead_id, 9)]
