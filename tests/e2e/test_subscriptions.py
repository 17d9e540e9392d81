"""A VIP channel with real processes and short durations: pay → a join-request link → approved;
a stranger declined; the reminder; expiry removes the member and tells them; the renew button
re-admits; a member who joins through the buyer's link is removed and the link revoked."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from catalog.schema import BotConfig
from db.models import ProcessedUpdate, Subscription
from ops.procs import wait_until
from tests.actors.test_subscriptions import CHAT, vip_config
from tests.conftest import DEMO_CONFIG
from tests.e2e.test_selling import Shop, open_shop

OTHER_CHAT = -1009988776655  # a group the bot administers and sells nothing for

BUYER, STRANGER = 7001, 7002


@pytest.fixture
def shop(tmp_path: Path, demo_bot: BotConfig, request: pytest.FixtureRequest) -> Iterator[Shop]:
    data = vip_config(join_by_request=True)
    data["bots"][0]["offers"][1]["duration"] = "14s"
    data["bots"][0]["subscriptions"]["remind_before"] = ["7s"]
    with open_shop(tmp_path, request, data) as running:
        yield running


def calls(shop: Shop, method: str) -> list[dict[str, Any]]:
    return [c["params"] for c in httpx.get(f"{shop.telegram}/_calls").json() if c["method"] == method]


def join(shop: Shop, user: int) -> None:
    shop.post(chat_join_request={"chat": {"id": CHAT, "type": "channel"}, "from": {"id": user, "first_name": "X"},
                                 "user_chat_id": user, "date": int(time.time())})  # fmt: skip


def code_caption(shop: Shop, user: int, count: int) -> str:
    photos = wait_until(lambda: [p for p in shop.calls("sendPhoto", user) if "<code>" in p.get("caption", "")][
        count - 1 :], 20, "the code")  # fmt: skip
    return str(photos[0]["caption"])


@pytest.mark.timeout(120)
def test_a_vip_channel_from_payment_to_expiry_and_back(shop: Shop) -> None:
    anual = next(o.id for o in shop.bot.offers if o.slug == "anual")
    shop.start(BUYER)
    wait_until(lambda: shop.texts(BUYER), 20, "the welcome")  # its button is what the buyer presses
    shop.press(BUYER, f"buy:{anual}")
    shop.pay(code_caption(shop, BUYER, 1))
    [link] = wait_until(lambda: calls(shop, "createChatInviteLink"), 20, "the join-request link")
    assert link["creates_join_request"] is True and "member_limit" not in link
    wait_until(lambda: any("https://t.me/+fake" in t for t in shop.texts(BUYER)), 20, "the delivery")

    join(shop, BUYER)
    join(shop, STRANGER)
    wait_until(lambda: len(calls(shop, "approveChatJoinRequest") + calls(shop, "declineChatJoinRequest")) == 2, 20,
               "both join requests decided")  # fmt: skip
    assert [int(p["user_id"]) for p in calls(shop, "approveChatJoinRequest")] == [BUYER]
    assert [int(p["user_id"]) for p in calls(shop, "declineChatJoinRequest")] == [STRANGER]
    # A group the bot administers but sells nothing for: its requests are its own admins' to decide.
    before = ProcessedUpdate.select().count()
    shop.post(chat_join_request={"chat": {"id": OTHER_CHAT, "type": "supergroup"}, "from": {"id": STRANGER},
                                 "user_chat_id": STRANGER, "date": int(time.time())})  # fmt: skip
    wait_until(lambda: ProcessedUpdate.select().count() > before, 20, "the request recorded")
    time.sleep(1.0)  # what routing would have done next (an answer) would be out by now
    decided = calls(shop, "approveChatJoinRequest") + calls(shop, "declineChatJoinRequest")
    assert all(int(p["chat_id"]) == CHAT for p in decided) and len(decided) == 2

    # Someone else joins through the buyer's link: removed, the link revoked.
    buyer_link = next(t for t in shop.texts(BUYER) if "https://t.me/+fake" in t).split()[-1]
    shop.post(chat_member={"chat": {"id": CHAT, "type": "channel"}, "from": {"id": STRANGER}, "date": 0,
                           "old_chat_member": {"status": "left", "user": {"id": STRANGER}},
                           "new_chat_member": {"status": "member", "user": {"id": STRANGER}},
                           "invite_link": {"invite_link": buyer_link}})  # fmt: skip
    wait_until(lambda: calls(shop, "revokeChatInviteLink"), 20, "the shared link revoked")
    assert [int(p["user_id"]) for p in calls(shop, "banChatMember")] == [STRANGER]

    wait_until(lambda: "Vence em 1 dia(s)." in shop.texts(BUYER), 20, "the reminder")
    wait_until(lambda: "Venceu. Renove!" in shop.texts(BUYER), 30, "the expiry")
    assert [int(p["user_id"]) for p in calls(shop, "banChatMember")] == [STRANGER, BUYER]
    assert Subscription.get().state == "expired"
    renew = next(p for p in shop.calls("sendMessage", BUYER) if p.get("text") == "Venceu. Renove!")
    shop.press(BUYER, renew["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
    shop.pay(code_caption(shop, BUYER, 2))
    wait_until(lambda: Subscription.get().state == "active", 20, "the renewal")
    wait_until(lambda: len(calls(shop, "createChatInviteLink")) == 2, 20, "a new link after removal")
    assert Subscription.get().renewals == 1


@pytest.mark.timeout(120)
def test_a_worker_killed_during_expiry_still_removes_the_member_and_tells_them_once(shop: Shop) -> None:
    anual = next(o.id for o in shop.bot.offers if o.slug == "anual")
    shop.start(BUYER)
    wait_until(lambda: shop.texts(BUYER), 20, "the welcome")  # its button is what the buyer presses
    shop.press(BUYER, f"buy:{anual}")
    shop.pay(code_caption(shop, BUYER, 1))
    wait_until(lambda: any("https://t.me/+fake" in t for t in shop.texts(BUYER)), 20, "the delivery")
    wait_until(lambda: "Vence em 1 dia(s)." in shop.texts(BUYER), 20, "the reminder")
    httpx.post(f"{shop.telegram}/_config", json={"delay": 3.0})  # Telegram hangs: the ban will be in flight
    wait_until(lambda: calls(shop, "banChatMember"), 30, "the ban in flight")
    next(p for p in shop.platform.processes if p.name == "chat").kill()
    httpx.post(f"{shop.telegram}/_config", json={"delay": 0})
    shop.platform.worker("chat-2", queues=("updates", "funnel", "followups"), threads=4)
    wait_until(lambda: "Venceu. Renove!" in shop.texts(BUYER), 60, "the expiry finished by another worker")
    time.sleep(2)
    assert Subscription.get().state == "expired"
    assert shop.texts(BUYER).count("Venceu. Renove!") == 1
    # Removal is owed: the ban whose answer died with the worker is sent again (harmless: the
    # member is removed once), and the unban that lets them back by paying follows.
    assert {int(p["user_id"]) for p in calls(shop, "banChatMember")} == {BUYER}
    assert [int(p["user_id"]) for p in calls(shop, "unbanChatMember")] == [BUYER]


@pytest.mark.timeout(120)
def test_a_pool_of_bots_answers_each_join_request_once_and_a_bot_selling_elsewhere_not_at_all(
    tmp_path: Path, demo_bot: BotConfig, request: pytest.FixtureRequest
) -> None:
    """Item 3, the pool half: the VIP chat sold by two bots of a pool, both its admins, and a third
    bot that is also an admin there but sells nothing for it. Telegram gives every admin bot the
    same join request: the buyer (who paid through one bot of the pool) is approved once, a stranger
    declined once, and the third bot never answers either."""
    data = vip_config(join_by_request=True)
    twin = copy.deepcopy(data["bots"][0])
    twin.update(id="twin", token="123452:TEST", username="twin_bot", webhook_secret="tg-secret-2")
    other = copy.deepcopy(DEMO_CONFIG["bots"][0])
    other.update(id="other", token="123453:TEST", username="other_bot", webhook_secret="tg-secret-3",
                 offers=[o for o in other["offers"] if o.get("delivery_chat_id") != CHAT])  # fmt: skip
    data["bots"] += [twin, other]
    data["pools"] = [{"id": "vip", "bots": ["demo", "twin"]}]
    secrets = {"demo": "tg-secret-1", "twin": "tg-secret-2", "other": "tg-secret-3"}
    with open_shop(tmp_path, request, data) as shop:
        anual = next(o.id for o in shop.bot.offers if o.slug == "anual")
        shop.start(BUYER)
        wait_until(lambda: shop.texts(BUYER), 20, "the welcome")
        shop.press(BUYER, f"buy:{anual}")
        shop.pay(code_caption(shop, BUYER, 1))
        wait_until(lambda: any("https://t.me/+fake" in t for t in shop.texts(BUYER)), 20, "the delivery")

        update_id = 90_000
        for user in (BUYER, STRANGER):
            asked = int(time.time())
            for bot, secret in secrets.items():  # Telegram: the same request in one update per admin bot
                update_id += 1
                update = {"update_id": update_id, "chat_join_request": {
                    "chat": {"id": CHAT, "type": "channel"}, "from": {"id": user, "first_name": "X"},
                    "user_chat_id": user, "date": asked}}  # fmt: skip
                answer = httpx.post(f"{shop.edge}/webhook/telegram/{bot}", json=update,
                                    headers={"X-Telegram-Bot-Api-Secret-Token": secret})  # fmt: skip
                assert answer.status_code == 200
        wait_until(lambda: ProcessedUpdate.select().where(ProcessedUpdate.update_id > 90_000).count() == 6, 20,
                   "the six updates recorded")  # fmt: skip
        wait_until(lambda: [c for c in httpx.get(f"{shop.telegram}/_calls").json()
                            if c["method"] in ("approveChatJoinRequest", "declineChatJoinRequest")][1:],
                   20, "both requests decided")  # fmt: skip
        time.sleep(1.5)  # a second answer from the pool's other bot, or any from the third, would be out by now
        decided = [c for c in httpx.get(f"{shop.telegram}/_calls").json()
                   if c["method"] in ("approveChatJoinRequest", "declineChatJoinRequest")]  # fmt: skip
        answers = sorted((c["method"], int(c["params"]["user_id"])) for c in decided)
        assert answers == [("approveChatJoinRequest", BUYER), ("declineChatJoinRequest", STRANGER)]
        assert {c["token"] for c in decided} <= {"123456:TEST", "123452:TEST"}  # the pool's bots only
