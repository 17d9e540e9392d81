"""The hand-written statements agree with the models, on both databases."""

from catalog.schema import BotConfig
from db import sql
from db.database import utcnow
from db.models import Lead, OutboundMessage, ProcessedUpdate


def test_record_update_once() -> None:
    now = utcnow()
    assert sql.record_update("demo", 5, "start", now) is not None
    assert sql.record_update("demo", 5, "start", now) is None
    assert sql.record_update("other", 5, "start", now) is not None
    row = ProcessedUpdate.get(ProcessedUpdate.bot_id == "demo")
    assert (row.update_id, row.kind, row.received_at) == (5, "start", now)


def test_upsert_lead_keeps_first_seen_and_payload(demo_bot: BotConfig) -> None:
    first, later = utcnow(), utcnow()
    lead_id, chat, reachable = sql.upsert_lead("demo", 9, 90, ("Ana", None, "ana", "pt"), "ad1", first, True)
    assert (chat, reachable) == (90, True)
    again = sql.upsert_lead("demo", 9, 91, ("Ana", "Lima", None, None), None, later, None)
    assert again == (lead_id, 91, True)
    lead = Lead.get_by_id(lead_id)
    assert (lead.first_seen_at, lead.last_seen_at, lead.start_payload) == (first, later, "ad1")
    assert (lead.last_name, lead.username, lead.chat_id) == ("Lima", None, 91)
    blocked = sql.upsert_lead("demo", 9, 91, ("Ana", None, None, None), None, later, False)
    assert blocked == (lead_id, 91, False)
    assert Lead.get_by_id(lead_id).unreachable_since == later


def test_claim_and_finish_send() -> None:
    now = utcnow()
    assert sql.claim_new_send("k", "demo", 1, "sendMessage", now, "|t1") is True
    assert sql.claim_new_send("k", "demo", 1, "sendMessage", now, "|t1") is False
    row = OutboundMessage.get(OutboundMessage.key == "k")
    assert (row.state, row.attempts, row.claimed_at, row.created_at) == ("sending", 1, now, now)
    sql.finish_send("k", "sent", 77, None, now)
    row = OutboundMessage.get(OutboundMessage.key == "k")
    assert (row.state, row.telegram_message_id, row.finished_at) == ("sent", 77, now)


def test_lead_click_is_the_last_click_or_nones(demo_bot: BotConfig) -> None:
    from db.models import Click

    lead_id, _, _ = sql.upsert_lead("demo", 9, 90, ("Ana", None, None, None), None, utcnow(), True)
    assert sql.lead_click(lead_id) == (9, None, None, None, None, None, None, None, None, "Ana", None)
    assert sql.lead_click(lead_id + 1000) is None
    click = Click.create(token="t1", bot_id="demo", fbc="fb.1.1.X", fbp="fb.1.2.3", ip="203.0.113.9",
                         user_agent="UA", source_url="https://x/r/demo", ttclid="TT", ttp="tp",
                         utm={"utm_source": "tiktok"}, clicked_at=utcnow())  # fmt: skip
    Lead.update(last_click_id=click.id).where(Lead.id == lead_id).execute()
    assert sql.lead_click(lead_id) == (9, "fb.1.1.X", "fb.1.2.3", "203.0.113.9", "UA", "https://x/r/demo", "TT", "tp",
                                       '{"utm_source": "tiktok"}', "Ana", None)  # fmt: skip


def test_cached_statements_round_trip_every_column_type(demo_bot: BotConfig) -> None:
    import datetime as dt
    from decimal import Decimal

    from db.models import Charge, PixelEvent

    now = utcnow()
    values = {"bot_id": "demo", "lead_id": 1, "offer_id": 2, "gateway_id": "main", "gateway_kind": "sandbox",
              "idempotency_key": "k1", "open_key": "1:2", "amount": Decimal("19.90"), "status": "creating",
              "underpaid": False, "checks": 0, "created_at": now, "updated_at": now}  # fmt: skip
    charge_id = sql.insert(Charge, values)
    assert charge_id is not None
    assert sql.insert(Charge, {**values, "open_key": "other"}, ignore_conflicts=True) is None  # same idempotency key
    charge = sql.first(Charge, '"open_key" = {p}', ("1:2",))
    assert charge is not None and charge.id == charge_id and charge.amount == Decimal("19.90")
    assert (charge.underpaid, charge.created_at, charge.expires_at) == (False, now, None)
    later = now + dt.timedelta(minutes=1)
    changed = sql.update(Charge, {"status": "paid", "paid_amount": Decimal("10"), "underpaid": True, "paid_at": later},
                         '"id" = {p} AND "status" IN ({p}, {p})', (charge_id, "creating", "pending"))  # fmt: skip
    assert changed == 1
    assert sql.update(Charge, {"status": "x"}, '"id" = {p} AND "status" = {p}', (charge_id, "creating")) == 0
    paid = Charge.get_by_id(charge_id)  # what peewee itself reads back
    assert (paid.status, paid.paid_amount, paid.underpaid, paid.paid_at) == ("paid", Decimal("10.00"), True, later)
    assert sql.first(Charge, '"id" = {p}', (charge_id + 1,)) is None
    event = {"destination": "meta", "bot_id": "demo", "pixel_id": "1", "event_id": "e1", "event_name": "PageView",
             "event_time": now, "payload": {"user_data": {"fbc": "fb.1.2.ç"}}, "state": "pending", "attempts": 0,
             "next_attempt_at": now, "created_at": now}  # fmt: skip
    sql.insert(PixelEvent, event)
    assert PixelEvent.get(PixelEvent.event_id == "e1").payload == {"user_data": {"fbc": "fb.1.2.ç"}}
