import httpx
import pytest

from gateways.telegram import (
    TelegramBlocked,
    TelegramGateway,
    TelegramMaybeSent,
    TelegramPermanent,
    TelegramRetryAfter,
    TelegramTransient,
)
from tests.conftest import TELEGRAM_BASE, FakeTelegramTransport, telegram_error

TOKEN = "123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"


def test_call_posts_json_to_token_url_and_returns_result(fake_telegram: FakeTelegramTransport) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return fake_telegram(request)

    gateway = TelegramGateway(httpx.Client(transport=httpx.MockTransport(handler)), TELEGRAM_BASE)
    result = gateway.call(TOKEN, "sendMessage", {"chat_id": 5, "text": "oi"})
    assert result["message_id"] == 1
    assert str(seen[0].url) == f"{TELEGRAM_BASE}/bot{TOKEN}/sendMessage"
    assert seen[0].headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("reply", "error", "check"),
    [
        (telegram_error(429, "Too Many Requests: retry after 7", 7), TelegramRetryAfter, lambda e: e.retry_after == 7),
        (
            telegram_error(403, "Forbidden: bot was blocked by the user"),
            TelegramBlocked,
            lambda e: "blocked" in e.description,
        ),
        (
            telegram_error(400, "Bad Request: chat not found"),
            TelegramPermanent,
            lambda e: e.description == "Bad Request: chat not found",
        ),
        (telegram_error(502, "Bad Gateway"), TelegramTransient, lambda e: e.status == 502),
        (httpx.Response(500, text="<html>oops</html>"), TelegramTransient, lambda e: e.status == 500),
        (httpx.ConnectError("refused"), TelegramTransient, lambda e: not isinstance(e, TelegramMaybeSent)),
        (httpx.ReadTimeout("slow"), TelegramMaybeSent, lambda e: True),
    ],
)
def test_errors_are_typed(fake_telegram: FakeTelegramTransport, telegram: TelegramGateway, reply, error, check) -> None:  # type: ignore[no-untyped-def]
    fake_telegram.queue("sendMessage", reply)
    with pytest.raises(error) as exc:
        telegram.call(TOKEN, "sendMessage", {"chat_id": 1, "text": "x"})
    assert check(exc.value)
    assert TOKEN not in str(exc.value) and exc.value.__cause__ is None


def test_blocked_is_permanent_and_retry_after_is_transient() -> None:
    assert issubclass(TelegramBlocked, TelegramPermanent)
    assert issubclass(TelegramRetryAfter, TelegramTransient)
