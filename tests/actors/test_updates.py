from collections.abc import Callable
from typing import Any

import pytest
import redis
from dramatiq import Message

from actors import updates
from actors.broker import broker
from actors.channels import Channels
from actors.throttle import Throttle
from catalog.schema import BotConfig
from db.models import Lead, OutboundMessage, ProcessedUpdate
from tests.conftest import FakeTelegramTransport, route_update, telegram_error


def start_update(update_id: int, user_id: int = 42, text: str = "/start") -> dict[str, Any]:
    user = {"id": user_id, "is_bot": False, "first_name": "Bia", "username": "bia", "language_code": "pt-br"}
    return {
        "update_id": update_id,
        "message": {"message_id": 1, "from": user, "date": 0, "text": text, "chat": {"id": user_id, "type": "private"}},
    }


def queued(queue: str) -> list[Message[Any]]:
    client = broker.client
    return [Message.decode(data) for data in client.hvals(f"dramatiq:{queue}.msgs")]


def test_start_upserts_lead_once(demo_bot: BotConfig) -> None:
    routed = route_update(demo_bot, start_update(10, text="/start ad_123"))
    assert (routed.kind, routed.update_id, routed.repeated) == ("start", 10, False)
    lead = Lead.get_by_id(routed.lead_id)
    assert (lead.person_id, lead.first_name, lead.username, lead.language_code) == (42, "Bia", "bia", "pt-br")
    assert lead.start_payload == "ad_123" and lead.reachable

    again = route_update(demo_bot, start_update(10, text="/start other"))
    assert (again.kind, again.lead_id, again.repeated) == ("start", lead.id, True)
    assert Lead.get_by_id(lead.id).start_payload == "ad_123"  # a repeat writes nothing
    assert ProcessedUpdate.select().count() == 1


def test_second_start_keeps_first_seen_and_payload(demo_bot: BotConfig) -> None:
    first = route_update(demo_bot, start_update(1, text="/start abc"))
    again = route_update(demo_bot, start_update(2, text="/start"))
    assert first.lead_id == again.lead_id
    lead = Lead.get_by_id(first.lead_id)
    assert lead.start_payload == "abc" and lead.first_seen_at <= lead.last_seen_at


def test_block_and_unblock(demo_bot: BotConfig) -> None:
    lead_id = route_update(demo_bot, start_update(1)).lead_id

    def member(update_id: int, status: str) -> dict[str, Any]:
        return {
            "update_id": update_id,
            "my_chat_member": {
                "chat": {"id": 42, "type": "private"},
                "from": {"id": 42, "first_name": "Bia"},
                "date": 0,
                "old_chat_member": {"status": "member"},
                "new_chat_member": {"status": status},
            },
        }

    assert route_update(demo_bot, member(2, "kicked")).kind == "block"
    assert not Lead.get_by_id(lead_id).reachable
    assert route_update(demo_bot, member(3, "member")).kind == "unblock"
    assert Lead.get_by_id(lead_id).reachable


def test_other_kinds(demo_bot: BotConfig) -> None:
    plain = start_update(6, text="quanto custa?")
    assert route_update(demo_bot, plain).kind == "message"
    group = start_update(7)
    group["message"]["chat"]["type"] = "group"
    assert route_update(demo_bot, group).kind == "other"
    assert route_update(demo_bot, {"update_id": 8, "edited_message": {}}).kind == "other"


Follow = Callable[[BotConfig, dict[str, Any]], None]


@pytest.fixture
def follow(channels: Channels, throttle: Throttle, redis_client: redis.Redis) -> Follow:
    """Route an update and run its next stage, as the updates.route actor does."""

    def route_and_follow(bot: BotConfig, update: dict[str, Any]) -> None:
        updates.follow_up(bot, route_update(bot, update), channels, throttle)

    return route_and_follow


def test_welcome_follows_start_once_however_often_the_update_comes(
    demo_bot: BotConfig, follow: Follow, fake_telegram: FakeTelegramTransport, redis_client: redis.Redis
) -> None:
    for _ in range(3):  # Telegram repeats it, or a worker died after recording it
        follow(demo_bot, start_update(20))
    assert fake_telegram.methods() == ["sendPhoto"]
    assert fake_telegram.calls[0][1]["chat_id"] == 42


def test_callback_is_answered(
    demo_bot: BotConfig, follow: Follow, fake_telegram: FakeTelegramTransport, redis_client: redis.Redis
) -> None:
    callback = {
        "update_id": 5,
        "callback_query": {
            "id": "cbq-1",
            "from": {"id": 42, "first_name": "Bia"},
            "data": "buy:1",
            "message": {"message_id": 3, "chat": {"id": 42, "type": "private"}},
        },
    }
    follow(demo_bot, callback)
    follow(demo_bot, callback)
    assert fake_telegram.calls == [("answerCallbackQuery", {"callback_query_id": "cbq-1"})]


def test_welcome_that_cannot_go_now_is_handed_to_the_funnel_actor(
    demo_bot: BotConfig, follow: Follow, fake_telegram: FakeTelegramTransport, redis_client: redis.Redis
) -> None:
    fake_telegram.queue("sendPhoto", telegram_error(429, "Too Many Requests: retry after 30", retry_after=30))
    follow(demo_bot, start_update(30))
    [handed] = queued("funnel.DQ")  # delayed by Telegram's retry_after
    lead = Lead.get()
    assert (handed.actor_name, handed.args) == ("funnel.welcome", ("demo", lead.id, 30))
    assert handed.options["eta"] >= 29_000 + handed.message_timestamp
    assert OutboundMessage.get().state == "pending"

    redis_client.flushdb()  # the bot's flood pause is over
    fake_telegram.queue("sendPhoto", telegram_error(502, "Bad Gateway"))
    follow(demo_bot, start_update(31))
    assert [m.args for m in queued("funnel")] == [("demo", lead.id, 31)]


def test_an_answer_held_by_a_flood_wait_is_handed_on_after_it(
    demo_bot: BotConfig, follow: Follow, fake_telegram: FakeTelegramTransport, redis_client: redis.Redis
) -> None:
    fake_telegram.queue("answerCallbackQuery", telegram_error(429, "Too Many Requests: retry after 30", retry_after=30))
    press = {"update_id": 6, "callback_query": {"id": "cbq-2", "from": {"id": 42, "first_name": "Bia"}, "data": "x",
             "message": {"message_id": 3, "chat": {"id": 42, "type": "private"}}}}  # fmt: skip
    follow(demo_bot, press)
    [handed] = queued("funnel.DQ")  # not hammering Telegram during its flood wait
    assert (handed.actor_name, handed.args) == ("funnel.callback", ("demo", 42, "cbq-2"))
    assert handed.options["eta"] >= 29_000 + handed.message_timestamp


@pytest.mark.parametrize(
    "mangle",
    [
        lambda u: u.update({"update_id": 2**64 + 1}),  # beyond BIGINT (the edge refuses it too)
        lambda u: u["message"]["from"].update({"id": 2**70}),
        lambda u: u["message"]["from"].update({"id": "42"}),
        lambda u: u["message"]["chat"].update({"id": 1e300}),
        lambda u: u["message"]["chat"].update({"id": None}),
    ],
)
def test_a_malformed_update_is_refused_once_never_retried_and_never_logged(
    demo_bot: BotConfig, mangle: Callable[[dict[str, Any]], None], caplog: pytest.LogCaptureFixture
) -> None:
    update = start_update(77, text="/start meu nome é Fulano CPF 123.456.789-09")
    mangle(update)
    updates.route("demo", update)  # returns: no exception, so no retry
    updates.route("demo", update)  # a redelivery changes nothing either
    assert Lead.select().count() == 0 and OutboundMessage.select().count() == 0
    if update["update_id"] == 77:
        assert [(p.update_id, p.kind) for p in ProcessedUpdate.select()] == [(77, "malformed")]
    text = caplog.text
    assert "update refused: malformed" in text and "Fulano" not in text and "123.456.789" not in text


def test_lone_surrogates_are_repaired_not_fatal(demo_bot: BotConfig) -> None:
    update = start_update(78)
    update["message"]["from"]["first_name"] = "Bia \ud800"
    update["message"]["text"] = "/start \udfff"
    routed = route_update(demo_bot, updates.repaired(update))
    assert routed.kind == "start" and Lead.get_by_id(routed.lead_id).first_name == "Bia \ufffd\ufffd\ufffd"
