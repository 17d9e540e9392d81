import dataclasses
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from actors import funnel
from actors.channels import Channels
from actors.outbox import Outcome, Send, deliver
from actors.throttle import Throttle
from actors.updates import upsert_lead
from catalog.schema import BotConfig
from db.models import Lead, OutboundMessage
from gateways.channel import Person, Request
from gateways.telegram import FILE_IDS, TelegramChannel, TelegramGateway, TelegramTransient
from gateways.text import split_text
from gateways.text import utf16_length as telegram_length
from tests.conftest import FakeTelegramTransport, telegram_error

USER = Person(777, "Ana", language_code="pt-br")


SendWelcome = Callable[[BotConfig, funnel.Recipient, int], Outcome | None]


@pytest.fixture
def send(channels: Channels, throttle: Throttle, redis_client: redis.Redis) -> SendWelcome:
    def send_welcome(bot: BotConfig, lead: funnel.Recipient, update_id: int) -> Outcome | None:
        return funnel.send_welcome(bot, lead, update_id, channels, throttle)

    return send_welcome


def welcome_plan(bot: BotConfig, chat_id: int) -> list[Send]:
    channel = TelegramChannel(TelegramGateway(httpx.Client(), "http://telegram.test"), bot.id, bot.token)
    return funnel.plan_welcome(bot, channel, chat_id, "k")


def lead(bot: BotConfig) -> funnel.Recipient:
    return upsert_lead(bot.id, USER, 777)


def test_welcome_is_photo_with_caption_and_one_button_per_offer(demo_bot: BotConfig) -> None:
    sends = welcome_plan(demo_bot, 777)
    assert [s.method for s in sends] == ["sendPhoto"]
    params = sends[0].params
    assert params["photo"] == "https://example.com/welcome.jpg" and params["caption"] == "Olá! Escolha seu plano:"
    buttons = [row[0] for row in params["reply_markup"]["inline_keyboard"]]
    assert [b["text"] for b in buttons] == ["VIP mensal – R$ 19,90", "VIP anual"]
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)


def test_video_url_uses_send_video(demo_bot: BotConfig) -> None:
    bot = dataclasses.replace(demo_bot, welcome_media_url="https://cdn.example.com/intro.MP4?x=1")
    assert welcome_plan(bot, 1)[0].method == "sendVideo"


def test_long_text_goes_in_its_own_messages_with_buttons_on_the_last(demo_bot: BotConfig) -> None:
    text = ("Linha de boas-vindas com detalhes do plano. " * 40 + "\n\n") * 6  # ~10k chars
    bot = dataclasses.replace(demo_bot, welcome_text=text)
    sends = welcome_plan(bot, 1)
    assert sends[0].method == "sendPhoto" and "caption" not in sends[0].params
    texts = [s for s in sends[1:]]
    assert len(texts) >= 3 and all(s.method == "sendMessage" for s in texts)
    assert all(telegram_length(s.params["text"]) <= 4096 for s in texts)
    assert "reply_markup" in texts[-1].params and all("reply_markup" not in s.params for s in texts[:-1])
    assert " ".join(s.params["text"] for s in texts).split() == text.split()


def test_caption_limit_counts_utf16_units() -> None:
    assert telegram_length("😀") == 2
    parts = split_text("😀" * 3000, 4096)
    assert all(telegram_length(p) <= 4096 for p in parts) and "".join(parts) == "😀" * 3000


def test_text_only_welcome(demo_bot: BotConfig) -> None:
    bot = dataclasses.replace(demo_bot, welcome_media_url=None)
    sends = welcome_plan(bot, 1)
    assert [s.method for s in sends] == ["sendMessage"] and "reply_markup" in sends[0].params


def test_send_welcome_once_per_update_and_reuses_file_id(
    demo_bot: BotConfig, send: SendWelcome, fake_telegram: FakeTelegramTransport
) -> None:
    ana = lead(demo_bot)
    send(demo_bot, ana, 1)
    send(demo_bot, ana, 1)  # the same update again
    assert fake_telegram.methods() == ["sendPhoto"]
    assert fake_telegram.calls[0][1]["photo"] == "https://example.com/welcome.jpg"
    send(demo_bot, ana, 2)  # a new /start
    assert fake_telegram.calls[1][1]["photo"] == "PHOTO-FILE-ID"
    assert OutboundMessage.select().where(OutboundMessage.state == "sent").count() == 2


def test_stale_file_id_falls_back_to_url(
    demo_bot: BotConfig, send: SendWelcome, fake_telegram: FakeTelegramTransport, redis_client: redis.Redis
) -> None:
    redis_client.hset(FILE_IDS.format(bot_id="demo"), "https://example.com/welcome.jpg", "OLD")
    fake_telegram.queue("sendPhoto", telegram_error(400, "Bad Request: wrong file identifier/HTTP URL specified"))
    outcome = send(demo_bot, lead(demo_bot), 1)
    assert outcome is not None and outcome.sent and outcome.failed is None
    assert [c[1]["photo"] for c in fake_telegram.calls] == ["OLD", "https://example.com/welcome.jpg"]
    window = redis_client.zrange("grimbots:tg:sent:{demo}", 0, -1, withscores=True)
    assert len(window) == 2 and all(score <= time.time() * 1000 + 5 for _, score in window)  # both answered


def test_429_waits_retry_after_then_sends(
    demo_bot: BotConfig, send: SendWelcome, fake_telegram: FakeTelegramTransport
) -> None:
    fake_telegram.queue("sendPhoto", telegram_error(429, "Too Many Requests: retry after 1", retry_after=1))
    outcome = send(demo_bot, lead(demo_bot), 1)
    assert outcome is not None and len(outcome.sent) == 1
    assert fake_telegram.methods() == ["sendPhoto", "sendPhoto"]
    assert OutboundMessage.get().state == "sent"


def test_long_flood_wait_goes_back_to_the_queue(
    demo_bot: BotConfig, send: SendWelcome, fake_telegram: FakeTelegramTransport
) -> None:
    import dramatiq

    fake_telegram.queue("sendPhoto", telegram_error(429, "Too Many Requests: retry after 40", retry_after=40))
    with pytest.raises(dramatiq.Retry) as exc:
        send(demo_bot, lead(demo_bot), 1)
    assert exc.value.delay is not None and exc.value.delay >= 40_000
    assert OutboundMessage.get().state == "pending"  # released: the retry will send it


def test_blocked_user_is_marked_unreachable_and_gets_nothing_more(
    demo_bot: BotConfig, send: SendWelcome, fake_telegram: FakeTelegramTransport
) -> None:
    fake_telegram.queue("sendPhoto", telegram_error(403, "Forbidden: bot was blocked by the user"))
    ana = lead(demo_bot)
    outcome = send(demo_bot, ana, 1)
    assert outcome is not None and outcome.blocked
    row = Lead.get_by_id(ana.lead_id)
    assert not row.reachable and row.unreachable_since is not None
    assert send(demo_bot, funnel.Recipient.of(row), 2) is None
    assert fake_telegram.methods() == ["sendPhoto"]


def test_bad_request_is_recorded_not_retried(
    demo_bot: BotConfig, send: SendWelcome, fake_telegram: FakeTelegramTransport
) -> None:
    bot = dataclasses.replace(demo_bot, welcome_media_url=None)
    fake_telegram.queue("sendMessage", telegram_error(400, "Bad Request: chat not found"))
    outcome = send(bot, lead(bot), 1)
    assert outcome is not None and outcome.failed == "Bad Request: chat not found"
    row = OutboundMessage.get()
    assert row.state == "failed" and row.error == "Bad Request: chat not found"
    send(bot, lead(bot), 1)
    assert len(fake_telegram.calls) == 1


def test_transient_error_releases_the_send_for_a_retry(
    demo_bot: BotConfig, send: SendWelcome, fake_telegram: FakeTelegramTransport
) -> None:
    fake_telegram.queue("sendPhoto", telegram_error(502, "Bad Gateway"))
    with pytest.raises(TelegramTransient):
        send(demo_bot, lead(demo_bot), 1)
    assert OutboundMessage.get().state == "pending"
    send(demo_bot, lead(demo_bot), 1)
    assert OutboundMessage.get().state == "sent" and len(fake_telegram.calls) == 2


def test_a_welcome_whose_answer_was_lost_is_sent_again(
    demo_bot: BotConfig, send: SendWelcome, fake_telegram: FakeTelegramTransport
) -> None:
    """The buyer is owed a welcome (CONTRACT §5.5): a lost answer means "send again", once."""
    fake_telegram.queue("sendPhoto", httpx.ReadTimeout("no answer"))
    with pytest.raises(TelegramTransient):
        send(demo_bot, lead(demo_bot), 1)
    send(demo_bot, lead(demo_bot), 1)
    send(demo_bot, lead(demo_bot), 1)
    assert OutboundMessage.get().state == "sent" and fake_telegram.methods() == ["sendPhoto", "sendPhoto"]


def test_resend_policy_sends_again_after_lost_answer(
    channels: Channels, fake_telegram: FakeTelegramTransport, throttle: Throttle
) -> None:
    fake_telegram.queue("sendMessage", httpx.ReadTimeout("no answer"))
    send = Send(Request("k1", "sendMessage", {"chat_id": 1, "text": "acesso"}), if_unknown="resend")
    with pytest.raises(TelegramTransient):
        deliver(TelegramChannel(channels.telegram, "b", "1:T"), throttle, 1, [send])
    outcome = deliver(TelegramChannel(channels.telegram, "b", "1:T"), throttle, 1, [send])
    assert outcome.sent == ["k1"] and len(fake_telegram.calls) == 2
