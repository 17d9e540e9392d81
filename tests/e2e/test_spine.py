"""The whole spine with real processes: uvicorn edge + Dramatiq worker + real Redis and database,
against a fake Telegram Bot API server on 127.0.0.1."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from catalog.schema import BotConfig
from db.models import ProcessedUpdate
from ops.procs import Platform, free_port, wait_until
from tests.conftest import logs_on_failure

SECRET = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-1"}


class Env:
    def __init__(self, platform: Platform, telegram_port: int, edge_port: int) -> None:
        self.platform = platform
        self.telegram = f"http://127.0.0.1:{telegram_port}"
        self.edge = f"http://127.0.0.1:{edge_port}"

    def calls(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.telegram}/_calls").json()  # type: ignore[no-any-return]

    def welcomes(self) -> Counter[int]:
        return Counter(c["params"]["chat_id"] for c in self.calls() if c["method"] == "sendPhoto")

    def post_start(self, update_id: int, user_id: int) -> httpx.Response:
        update = {
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": int(time.time()),
                "text": "/start",
                "from": {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"},
                "chat": {"id": user_id, "type": "private"},
            },
        }
        return httpx.post(f"{self.edge}/webhook/telegram/demo", json=update, headers=SECRET)


@pytest.fixture
def env(tmp_path: Path, demo_bot: BotConfig, request: pytest.FixtureRequest) -> Iterator[Env]:
    telegram_port, edge_port = free_port(), free_port()
    platform = Platform(
        tmp_path,
        TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}",
        WORKER_HEARTBEAT_TIMEOUT_MS="3000",  # a killed worker's messages come back after 3 s here
        BROKER_MAINTENANCE_CHANCE="1000000",
        CONFIG_POLL_SECONDS="0.5",
    )
    with logs_on_failure(platform, request):
        platform.fake_telegram(telegram_port)
        platform.edge(edge_port)
        yield Env(platform, telegram_port, edge_port)


def test_start_gets_one_welcome_even_when_repeated(env: Env) -> None:
    env.platform.worker()
    assert env.post_start(1, 501).status_code == 200
    wait_until(lambda: env.welcomes()[501] == 1, 30, "the welcome")
    [call] = [c for c in env.calls() if c["method"] == "sendPhoto"]
    assert call["token"] == "123456:TEST"
    assert call["params"]["caption"] == "Olá! Escolha seu plano:"
    assert len(call["params"]["reply_markup"]["inline_keyboard"]) == 2

    assert env.post_start(1, 501).status_code == 200  # Telegram delivers the same update again
    wait_until(lambda: ProcessedUpdate.select().count() == 1, 5, "the update record")
    time.sleep(1.5)  # give a wrong second welcome every chance to appear
    assert env.welcomes()[501] == 1


def test_worker_killed_mid_way_loses_nothing_and_repeats_nothing(env: Env) -> None:
    httpx.post(f"{env.telegram}/_config", json={"delay": 3.0})  # Telegram answers slowly: work piles up
    first = env.platform.worker("worker-1", threads=4)
    users = list(range(1000, 1030))
    for i, user in enumerate(users):
        assert env.post_start(100 + i, user).status_code == 200
    # Kill when every worker thread is inside a Telegram call: the worker holds prefetched
    # updates and welcomes it has not started, and four sends whose answers it never reads.
    wait_until(lambda: httpx.get(f"{env.telegram}/_stats").json()["in_flight"] >= 4, 30, "4 sends in flight")
    first.kill()
    killed = time.monotonic()
    assert len(env.welcomes()) < len(users)
    httpx.post(f"{env.telegram}/_config", json={"delay": 0})
    env.platform.worker("worker-2", threads=4)

    wait_until(lambda: set(env.welcomes()) == set(users), 60, "a welcome for every user", interval=0.2)
    # Not after OUTBOX_STALE_CLAIM_SECONDS (120 s): the dead worker's claims name it, and its
    # heartbeat is gone (the figure against the 15 s goal is in docs/architecture.md, from this run's kind).
    assert time.monotonic() - killed < 60
    wait_until(lambda: ProcessedUpdate.select().count() == len(users), 30, "every update recorded")
    time.sleep(2)
    # The four sends whose answers the dead worker never read are owed again (CONTRACT §5.5): each
    # is sent once more, and nothing else is repeated.
    repeats = {user: n for user, n in env.welcomes().items() if n > 1}
    assert len(repeats) <= 4 and set(repeats.values()) <= {2}, repeats
