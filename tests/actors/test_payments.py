import datetime as dt
import threading
from decimal import Decimal

import httpx
import pytest
import redis

from actors import delivery, payments
from actors.channels import Channels
from actors.funnel import Recipient
from actors.throttle import Throttle
from actors.updates import parse_callback_data, upsert_lead
from catalog.schema import BotConfig
from db.database import utcnow
from db.models import Charge, Delivery, OutboundMessage, PaymentNotification
from gateways.channel import Person
from gateways.payments import brcode, qr
from gateways.payments.base import ChargeStatus, PaymentGateway
from gateways.payments.mercadopago import MercadoPagoGateway
from gateways.payments.sandbox import SandboxGateway
from gateways.telegram import TelegramTransient
from tests.conftest import FakeTelegramTransport, telegram_error

USER = Person(901, "Bia")


@pytest.fixture
def lead(demo_bot: BotConfig) -> Recipient:
    return upsert_lead(demo_bot.id, USER, 901)


def vip(bot: BotConfig) -> int:
    return next(o.id for o in bot.offers if o.slug == "vip")


def anual(bot: BotConfig) -> int:
    return next(o.id for o in bot.offers if o.slug == "anual")


def buy(bot: BotConfig, lead: Recipient, offer_id: int, update_id: int, gateway: PaymentGateway | None,
        channels: Channels, throttle: Throttle) -> Charge | None:  # fmt: skip
    return payments.checkout(bot, lead, offer_id, update_id, gateway, channels, throttle)


def test_callback_data_of_buttons() -> None:
    assert parse_callback_data("buy:12") == ("buy", 12)
    assert parse_callback_data("chk:7") == ("check", 7)
    assert parse_callback_data("buy:x") == (None, 0) and parse_callback_data(None) == (None, 0)


def test_a_tap_creates_one_charge_and_sends_the_code_with_its_qr_and_a_check_button(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    charge = buy(demo_bot, lead, vip(demo_bot), 1, sandbox, channels, throttle)
    assert charge is not None and charge.status == "pending" and charge.amount == Decimal("19.90")
    fields = brcode.parse(charge.br_code)
    assert fields["54"] == "19.90" and brcode.parse_fields(fields["62"]) == {"05": charge.external_id}
    [(method, params)] = fake_telegram.calls
    assert method == "sendPhoto" and params["chat_id"] == "901" and params["parse_mode"] == "HTML"
    assert params["photo"] == qr.png(charge.br_code)  # rendered here, uploaded: no third-party QR URL
    assert f"<code>{charge.br_code}</code>" in params["caption"] and "19,90" in params["caption"]
    assert params["reply_markup"] == {
        "inline_keyboard": [
            [{"text": demo_bot.text("check_button"), "callback_data": f"chk:{charge.id}"}],
            [{"text": demo_bot.text("copy_button"), "copy_text": {"text": charge.br_code}}],  # Bot API 7.11
        ]
    }
    assert Charge.get_by_id(charge.id).shown_at is not None


@pytest.mark.parametrize("length", [*range(1, 60), 61, 62, 106, 107, 150, 200, 213, 214, 300, 800, 1500, 2331])
def test_qr_matrix_is_the_qrcode_librarys_own_encoding(length: int) -> None:
    """Our codewords (bits, padding, Reed–Solomon per block, interleaving) placed by qrcode give
    exactly the symbol qrcode builds by itself for the same byte segment, level and mask, at every
    version boundary we cross (versions 1 to 40)."""
    import random
    import string

    from qrcode import QRCode, util
    from qrcode.constants import ERROR_CORRECT_M

    code = "".join(random.Random(length).choice(string.ascii_letters + string.digits + " .@/:-") for _ in range(length))
    reference = QRCode(error_correction=ERROR_CORRECT_M, border=4, mask_pattern=0)
    reference.add_data(util.QRData(code.encode(), mode=util.MODE_8BIT_BYTE))
    reference.make(fit=True)
    assert qr.matrix(code) == reference.get_matrix()


def test_qr_refuses_what_no_version_holds() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        qr.matrix("x" * 2332)


def test_qr_png_is_a_png_of_the_codes_matrix() -> None:
    import struct
    import zlib

    code = "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR5913Fulano"
    image = qr.png(code)
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    chunks, at = {}, 8
    while at < len(image):  # every chunk's CRC checks out
        (length,) = struct.unpack(">I", image[at : at + 4])
        kind, data = image[at + 4 : at + 8], image[at + 8 : at + 8 + length]
        assert struct.unpack(">I", image[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + data)
        chunks[kind] = data
        at += 12 + length
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    modules = qr.matrix(code)
    assert width == height == len(modules) * qr.MODULE_PIXELS and (depth, colour) == (1, 0)
    raw, stride = zlib.decompress(chunks[b"IDAT"]), 1 + (width + 7) // 8
    for y in range(height):  # each pixel is its module: black where dark
        line = raw[y * stride : (y + 1) * stride]
        assert line[0] == 0
        for x in range(width):
            black = not (line[1 + x // 8] >> (7 - x % 8)) & 1
            assert black == modules[y // qr.MODULE_PIXELS][x // qr.MODULE_PIXELS]
    assert len(modules) == len(modules[0]) and modules[4][4] and not modules[0][0]  # finder corner, quiet zone


def test_double_taps_and_redelivery_reuse_the_charge_and_send_the_code_once(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    first = buy(demo_bot, lead, vip(demo_bot), 1, sandbox, channels, throttle)
    again = buy(demo_bot, lead, vip(demo_bot), 1, sandbox, channels, throttle)  # the same update redelivered
    double = buy(demo_bot, lead, vip(demo_bot), 2, sandbox, channels, throttle)  # a second tap right after
    assert first is not None and again is not None and double is not None
    assert first.id == again.id == double.id and Charge.select().count() == 1
    assert fake_telegram.methods() == ["sendPhoto"]
    # a tap on another offer is another charge
    other = buy(demo_bot, lead, anual(demo_bot), 3, sandbox, channels, throttle)
    assert other is not None and other.id != first.id and other.amount == Decimal("149.90")


def test_a_tap_after_a_while_shows_the_same_code_again(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    first = buy(demo_bot, lead, vip(demo_bot), 1, sandbox, channels, throttle)
    assert first is not None
    Charge.update(shown_at=utcnow() - dt.timedelta(minutes=5)).execute()
    later = buy(demo_bot, lead, vip(demo_bot), 2, sandbox, channels, throttle)
    assert later is not None and later.id == first.id and fake_telegram.methods() == ["sendPhoto", "sendPhoto"]


def test_a_charge_about_to_expire_is_not_offered_again(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    first = buy(demo_bot, lead, vip(demo_bot), 1, sandbox, channels, throttle)
    assert first is not None
    Charge.update(expires_at=utcnow() + dt.timedelta(seconds=30)).execute()
    second = buy(demo_bot, lead, vip(demo_bot), 2, sandbox, channels, throttle)
    assert second is not None and second.id != first.id
    assert Charge.get_by_id(first.id).status == "pending"  # still payable, just not offered again


def test_a_tap_while_another_is_creating_the_charge_waits(demo_bot: BotConfig, lead: Recipient) -> None:
    offer = demo_bot.offer(vip(demo_bot))
    assert offer is not None
    charge, create = payments.open_charge(demo_bot, lead.lead_id, offer, 1)
    assert create and charge.status == "creating"
    with pytest.raises(payments.Busy):
        payments.open_charge(demo_bot, lead.lead_id, offer, 2)
    same, create = payments.open_charge(demo_bot, lead.lead_id, offer, 1)  # its own redelivery takes over
    assert same.id == charge.id and create


def mercadopago_rejecting(status: int) -> MercadoPagoGateway:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"message": "invalid transaction_amount"})

    return MercadoPagoGateway(access_token="APP_USR-secret", webhook_secret="s", base_url="https://mp.test",
                              client=httpx.Client(transport=httpx.MockTransport(handler)),
                              notification_url="https://edge.test/webhook/payment/mp")  # fmt: skip


@pytest.mark.parametrize("status", [400, 503])
def test_a_gateway_that_fails_leaves_a_failed_charge_and_tells_the_buyer(
    status: int, demo_bot: BotConfig, lead: Recipient, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle, sandbox: SandboxGateway,
) -> None:  # fmt: skip
    charge = buy(demo_bot, lead, vip(demo_bot), 1, mercadopago_rejecting(status), channels, throttle)
    assert charge is not None
    row = Charge.get_by_id(charge.id)
    assert row.status == "failed" and row.open_key is None and f"HTTP {status}" in row.error
    assert "APP_USR-secret" not in row.error
    assert fake_telegram.calls == [("sendMessage", {"chat_id": 901, "text": demo_bot.text("charge_failed")})]
    retry = buy(demo_bot, lead, vip(demo_bot), 2, sandbox, channels, throttle)  # the buyer taps again
    assert retry is not None and retry.id != charge.id and retry.status == "pending"


def test_a_transient_gateway_error_is_retried_before_the_buyer_is_told(
    demo_bot: BotConfig, lead: Recipient, channels: Channels, fake_telegram: FakeTelegramTransport,
    throttle: Throttle,
) -> None:  # fmt: skip
    gateway = mercadopago_rejecting(503)
    with pytest.raises(payments.PaymentTransient):
        payments.checkout(demo_bot, lead, vip(demo_bot), 1, gateway, channels, throttle, last_attempt=False)
    assert Charge.get().status == "creating" and fake_telegram.calls == []


def paid_charge(bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
                throttle: Throttle) -> Charge:  # fmt: skip
    charge = buy(bot, lead, vip(bot), 1, sandbox, channels, throttle)
    assert charge is not None
    return charge


def test_exactly_one_of_many_concurrent_paid_notifications_wins(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    results: list[payments.Settled] = []
    barrier = threading.Barrier(5)

    def notify() -> None:
        from db.database import db

        with db.connection_context():
            barrier.wait()
            results.append(payments.settle(charge, ChargeStatus.PAID, Decimal("19.90"), source="notification"))

    threads = [threading.Thread(target=notify) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.outcome for r in results) == ["paid", "repeated", "repeated", "repeated", "repeated"]
    assert sum(r.deliver for r in results) == 1 and Delivery.select().count() == 1
    row = Charge.get_by_id(charge.id)
    assert row.status == "paid" and row.paid_amount == Decimal("19.90") and row.open_key is None


def test_an_underpaid_charge_is_flagged_and_not_delivered(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    settled = payments.settle(charge, ChargeStatus.PAID, Decimal("1.99"), source="notification")
    assert settled.outcome == "underpaid" and not settled.deliver and Delivery.select().count() == 0
    row = Charge.get_by_id(charge.id)
    assert row.underpaid and row.paid_amount == Decimal("1.99")


def test_late_money_on_an_expired_charge_still_delivers_and_refunds_are_recorded(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    assert payments.settle(charge, ChargeStatus.EXPIRED, None, source="notification").outcome == "expired"
    assert payments.settle(charge, ChargeStatus.EXPIRED, None, source="notification").outcome == "repeated"
    assert payments.settle(charge, ChargeStatus.PAID, None, source="notification").deliver
    assert payments.settle(charge, ChargeStatus.REFUNDED, None, source="notification").outcome == "refunded"
    assert Charge.get_by_id(charge.id).status == "refunded"


def test_a_notification_for_an_unknown_charge_is_recorded_and_ignored(demo_bot: BotConfig) -> None:
    payments.notify("main", {"charge_id": "X" * 25, "status": "paid", "amount": "19.90"})
    [row] = PaymentNotification.select()
    assert row.outcome == "unknown_charge" and row.charge_id is None and Charge.select().count() == 0


def test_delivery_sends_the_text_and_link_once(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    payments.settle(charge, ChargeStatus.PAID, Decimal("19.90"), source="notification")
    fake_telegram.calls.clear()
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"
    assert fake_telegram.calls == [
        ("sendMessage", {"chat_id": 901, "text": "Pagamento confirmado! Seu acesso:\n\nhttps://t.me/+AbCdEf"})
    ]
    assert Delivery.get().delivered_at is not None


def test_delivery_to_a_private_chat_makes_a_one_use_invite_link(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    charge = buy(demo_bot, lead, anual(demo_bot), 1, sandbox, channels, throttle)
    assert charge is not None
    payments.settle(charge, ChargeStatus.PAID, None, source="check")
    fake_telegram.calls.clear()
    link = httpx.Response(200, json={"ok": True, "result": {"invite_link": "https://t.me/+OneUse1"}})
    fake_telegram.queue("createChatInviteLink", link)
    fake_telegram.queue("sendMessage", telegram_error(500, "Internal Server Error"))
    with pytest.raises(TelegramTransient):
        delivery.deliver_charge(charge.id, channels, throttle)
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"  # the retry reuses the link
    (m1, invite), (m2, _), (m3, message) = fake_telegram.calls
    assert m1 == "createChatInviteLink" and invite["chat_id"] == -100123 and invite["member_limit"] == 1
    assert invite["expire_date"] > utcnow().timestamp() and m2 == m3 == "sendMessage"
    assert message["text"].endswith("https://t.me/+OneUse1")


def test_a_delivery_whose_worker_died_mid_send_is_sent_again_not_lost(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    payments.settle(charge, ChargeStatus.PAID, None, source="notification")
    # A worker claimed the send and died before recording the outcome.
    OutboundMessage.create(key=delivery.send_key(charge.id), bot_id="demo", chat_id=901, method="sendMessage",
                           state="sending", attempts=1, claimed_at=utcnow() - dt.timedelta(minutes=5))  # fmt: skip
    fake_telegram.calls.clear()
    assert delivery.deliver_charge(charge.id, channels, throttle) == "sent"
    assert fake_telegram.methods() == ["sendMessage"]


def test_a_blocked_buyer_fails_the_delivery_without_retrying(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels,
    fake_telegram: FakeTelegramTransport, throttle: Throttle,
) -> None:  # fmt: skip
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    payments.settle(charge, ChargeStatus.PAID, None, source="notification")
    fake_telegram.queue("sendMessage", telegram_error(403, "Forbidden: bot was blocked by the user"))
    assert delivery.deliver_charge(charge.id, channels, throttle) == "failed"
    row = Delivery.get()
    assert row.state == "failed" and "blocked" in row.error


def test_reconciliation_finds_a_payment_whose_notification_was_lost(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    assert payments.due_charges() == []  # not quiet yet
    Charge.update(next_check_at=utcnow() - dt.timedelta(seconds=1)).execute()
    assert payments.due_charges() == [charge.id] and payments.due_charges() == []  # claimed once
    assert payments.recheck_charge(Charge.get_by_id(charge.id), sandbox) is None  # still unpaid
    sandbox.pay(charge.external_id)
    settled = payments.settle(charge, *_state(sandbox, charge), source="reconcile")
    assert settled.deliver and Charge.get_by_id(charge.id).status == "paid"
    row = Charge.get_by_id(charge.id)
    assert row.checks == 1 and row.next_check_at is None


def _state(gateway: PaymentGateway, charge: Charge) -> tuple[ChargeStatus, Decimal | None]:
    state = gateway.fetch_status(charge.external_id)
    return state.status, state.amount


def test_a_quiet_charge_past_its_expiry_is_expired(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    Charge.update(expires_at=utcnow() - dt.timedelta(minutes=10)).execute()
    settled = payments.recheck_charge(Charge.get_by_id(charge.id), sandbox)
    assert settled is not None and settled.outcome == "expired"
    assert Charge.get_by_id(charge.id).open_key is None


def test_backoff_between_checks_grows_to_a_ceiling() -> None:
    delays = [payments.next_check_delay(n).total_seconds() for n in range(8)]
    assert delays[:4] == [60, 120, 240, 480] and delays[-1] == 900


def test_stale_creations_are_abandoned_and_stalled_deliveries_restarted(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    offer = demo_bot.offer(vip(demo_bot))
    assert offer is not None
    stuck, _ = payments.open_charge(demo_bot, lead.lead_id, offer, 1)
    Charge.update(updated_at=utcnow() - dt.timedelta(hours=1)).where(Charge.id == stuck.id).execute()
    assert payments.abandon_stale_creations() == 1 and Charge.get_by_id(stuck.id).status == "failed"
    charge = buy(demo_bot, lead, vip(demo_bot), 2, sandbox, channels, throttle)
    assert charge is not None
    payments.settle(charge, ChargeStatus.PAID, None, source="notification")
    assert delivery.restart_stalled() == 0
    Delivery.update(updated_at=utcnow() - dt.timedelta(minutes=5)).execute()
    assert delivery.restart_stalled() == 1 and delivery.restart_stalled() == 0


def test_a_late_payable_code_is_still_asked_about_after_expiry_and_delivers_when_paid(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle,
    fake_telegram: FakeTelegramTransport,
) -> None:  # fmt: skip
    """A sandbox (static) or PushinPay code can be paid after our expiry: a buyer who does, and
    whose notification is lost, gets access through reconciliation, not "expired" for ever."""
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    Charge.update(expires_at=utcnow() - dt.timedelta(minutes=10)).execute()
    assert payments.recheck_charge(Charge.get_by_id(charge.id), sandbox).outcome == "expired"  # type: ignore[union-attr]
    row = Charge.get_by_id(charge.id)
    assert row.status == "expired" and row.next_check_at is not None  # still asked about, later
    Charge.update(next_check_at=utcnow() - dt.timedelta(seconds=1)).execute()
    assert payments.due_charges() == [charge.id]
    assert payments.recheck_charge(Charge.get_by_id(charge.id), sandbox) is None  # still unpaid: next time
    assert Charge.get_by_id(charge.id).next_check_at is not None
    sandbox.pay(charge.external_id)  # the buyer pays the old code; the notification never comes
    settled = payments.settle(Charge.get_by_id(charge.id), *_state(sandbox, charge), source="reconcile")
    assert settled.deliver and Charge.get_by_id(charge.id).status == "paid"  # the one winner: it delivers
    assert Delivery.get(Delivery.charge_id == charge.id).state == "pending"


def test_an_expired_charge_is_asked_about_for_a_week_at_most(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    payments.settle(charge, ChargeStatus.EXPIRED, None, source="expiry")
    Charge.update(expires_at=utcnow() - dt.timedelta(days=8), next_check_at=utcnow()).execute()
    assert payments.due_charges() == [charge.id]  # one last look...
    assert Charge.get_by_id(charge.id).next_check_at is None  # ... and no more


def test_an_expired_mercadopago_charge_is_not_asked_about_again(demo_bot: BotConfig, lead: Recipient) -> None:
    now = utcnow()
    charge = Charge.create(bot_id="demo", lead_id=lead.lead_id, offer_id=vip(demo_bot), gateway_id="mp",
                           gateway_kind="mercadopago", external_id="9", idempotency_key="k", amount=Decimal("19.90"),
                           status="pending", expires_at=now, next_check_at=now)  # fmt: skip
    payments.settle(charge, ChargeStatus.EXPIRED, None, source="expiry")
    assert Charge.get_by_id(charge.id).next_check_at is None  # its code died with it at Mercado Pago


def test_the_check_button_settles_a_charge_paid_after_our_expiry(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle,
    fake_telegram: FakeTelegramTransport,
) -> None:  # fmt: skip
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    payments.settle(charge, ChargeStatus.EXPIRED, None, source="expiry")
    sandbox.pay(charge.external_id)
    payments.check_button(demo_bot, lead.lead_id, charge.id, 901, "cb-9", sandbox, channels, throttle)
    answer = [p for m, p in fake_telegram.calls if m == "answerCallbackQuery"][-1]
    assert answer["text"] == demo_bot.text("payment_confirmed") and Charge.get_by_id(charge.id).status == "paid"


def test_a_gateway_at_its_concurrency_limit_sends_the_message_back_instead_of_holding_a_thread(
    redis_client: redis.Redis,
) -> None:
    import dramatiq

    import settings

    held = [payments.gateway_slot("slow-gw") for _ in range(settings.GATEWAY_CONCURRENCY)]
    for slot in held:
        slot.__enter__()
    try:
        with pytest.raises(dramatiq.Retry), payments.gateway_slot("slow-gw"):
            pass
        with payments.gateway_slot("other-gw"):  # another seller's gateway is not affected
            pass
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
    with payments.gateway_slot("slow-gw"):  # free again
        pass


def test_a_delivery_still_pending_after_three_days_is_failed_not_retried_for_ever(
    demo_bot: BotConfig, lead: Recipient, sandbox: SandboxGateway, channels: Channels, throttle: Throttle
) -> None:
    charge = paid_charge(demo_bot, lead, sandbox, channels, throttle)
    payments.settle(charge, ChargeStatus.PAID, None, source="notification")
    Delivery.update(created_at=utcnow() - dt.timedelta(days=2), updated_at=utcnow() - dt.timedelta(hours=1)).execute()
    assert delivery.give_up_old() == 0 and delivery.restart_stalled() == 1  # two days: still trying
    Delivery.update(created_at=utcnow() - dt.timedelta(days=3, minutes=1)).execute()
    assert delivery.give_up_old() == 1
    row = Delivery.get()
    assert row.state == "failed" and row.error == "not delivered within 3 days"
    Delivery.update(updated_at=utcnow() - dt.timedelta(hours=1)).execute()
    assert delivery.restart_stalled() == 0
