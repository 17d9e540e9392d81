import dramatiq
import pytest
import redis

from actors.throttle import Throttle


def test_chat_burst_then_wait(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, bot_rate=30, chat_rate=1, chat_burst=3)
    assert [throttle.try_acquire("b", 1) for _ in range(3)] == [0, 0, 0]
    wait = throttle.try_acquire("b", 1)
    assert 0 < wait <= 1000
    assert throttle.try_acquire("b", 2) == 0  # another chat is not held back


def test_bot_rate_is_shared_across_chats(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, bot_rate=5, chat_rate=1, chat_burst=1)
    assert all(throttle.try_acquire("b", chat) == 0 for chat in range(5))
    assert throttle.try_acquire("b", 99) > 0
    assert throttle.try_acquire("other-bot", 99) == 0


def test_pause_after_flood_blocks_the_bot_and_long_waits_requeue(redis_client: redis.Redis) -> None:
    throttle = Throttle(redis_client, max_sleep_ms=200)
    throttle.pause_bot("b", 30)
    assert throttle.try_acquire("b", 1) > 25_000
    with pytest.raises(dramatiq.Retry) as exc:
        throttle.acquire("b", 1)
    assert exc.value.delay is not None and exc.value.delay > 25_000
