"""The platform's tables as peewee models. Timestamps are naive UTC (see db.database.utcnow)."""

from __future__ import annotations

import json
from typing import Any

from peewee import (
    AutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    DateField,
    DateTimeField,
    DecimalField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from db.crypto import EncryptedField, EncryptedJSONField
from db.database import db, utcnow


class JSONField(TextField):
    """A JSON document in a text column (the same on SQLite and PostgreSQL)."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)

    def python_value(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class Account(BaseModel):
    """A seller (or the platform's operator): it owns gateways, bots and pools, and through its bots
    every lead, charge, click and event. A suspended account's bots sell nothing."""

    id = AutoField()
    slug = CharField(max_length=64, unique=True)
    email = CharField(max_length=254, null=True, unique=True)  # lower-cased; the migrated account has none
    role = CharField(max_length=16, default="seller")  # seller | operator
    state = CharField(max_length=16, default="active")  # active | suspended
    password_hash = CharField(max_length=255, null=True)  # Argon2id; none until the seller signs up
    totp_secret = EncryptedField(null=True)  # the second factor (base32), when set up
    totp_step = BigIntegerField(null=True)  # the last 30-second step whose code was used (each works once)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class AccountToken(BaseModel):
    """A one-use link: an invite to sign up (`invite`, for an e-mail) or a password reset (`reset`,
    for an account). Only the token's SHA-256 is kept; `used_at` is set once, by a conditional update."""

    id = AutoField()
    kind = CharField(max_length=16)  # invite | reset
    token_hash = CharField(max_length=64, unique=True)
    email = CharField(max_length=254, null=True)
    account = ForeignKeyField(Account, null=True, on_delete="CASCADE", column_name="account_id")
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)


class RecoveryCode(BaseModel):
    """One-use codes that stand in for the second factor (shown once, kept as SHA-256)."""

    id = AutoField()
    account = ForeignKeyField(Account, on_delete="CASCADE", column_name="account_id")
    code_hash = CharField(max_length=64, unique=True)
    created_at = DateTimeField(default=utcnow)
    used_at = DateTimeField(null=True)


class ApiKey(BaseModel):
    """An account's key to the HTTP API: shown once when made, kept as its SHA-256; `prefix` (its
    first characters) names it in lists. Revoked, never deleted."""

    id = AutoField()
    account = ForeignKeyField(Account, on_delete="CASCADE", column_name="account_id")
    prefix = CharField(max_length=16)
    key_hash = CharField(max_length=64, unique=True)
    created_at = DateTimeField(default=utcnow)
    revoked_at = DateTimeField(null=True)
    last_used_at = DateTimeField(null=True)


class AuditEntry(BaseModel):
    """Who did what to which object, when, from where, before and after (secrets masked): every
    change made in the panel or by `ops apply`, every login, failed login and suspension."""

    id = AutoField()
    account = ForeignKeyField(Account, null=True, on_delete="SET NULL", column_name="account_id")  # whose object
    actor = CharField(max_length=128)  # an account's slug, "ops" (the CLI), or "-" (nobody logged in)
    session = CharField(max_length=16, null=True)  # the first characters of a session id's hash
    address = CharField(max_length=64, null=True)
    action = CharField(max_length=64)
    object = CharField(max_length=191, null=True)  # e.g. "bot demo"
    before = JSONField(null=True)
    after = JSONField(null=True)
    at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "audit_entry"
        indexes = ((("account", "at"), False),)


DEFAULT_ACCOUNT = "default"  # owns what a configuration file without `account` applies (migration 0017)


class Gateway(BaseModel):
    """A PIX payment gateway account; `settings` holds its kind-specific keys, encrypted."""

    id = CharField(primary_key=True, max_length=64)
    account = ForeignKeyField(Account, null=True, on_delete="RESTRICT", column_name="account_id")
    kind = CharField(max_length=32)
    webhook_secret = EncryptedField()
    settings = EncryptedJSONField()
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Bot(BaseModel):
    id = CharField(primary_key=True, max_length=64)
    account = ForeignKeyField(Account, null=True, on_delete="RESTRICT", column_name="account_id")
    token = EncryptedField()
    username = CharField(max_length=64)
    webhook_secret = EncryptedField()
    gateway = ForeignKeyField(Gateway, null=True, on_delete="RESTRICT", column_name="gateway_id")
    pixel_id = CharField(max_length=64, null=True)
    pixel_access_token = EncryptedField(null=True)
    pixel_test_event_code = CharField(max_length=64, null=True)
    utmify_token = EncryptedField(null=True)  # orders to Utmify
    tiktok_pixel_code = CharField(max_length=64, null=True)  # TikTok Events API
    tiktok_access_token = EncryptedField(null=True)
    welcome_text = TextField(default="")
    welcome_media_url = TextField(null=True)
    texts = JSONField(default=dict)  # what buyers read around a payment; defaults in catalog/schema.py
    charge_minutes = IntegerField(default=30)  # how long a PIX charge can be paid
    send_qr = BooleanField(default=True)  # a QR image with the copy-and-paste code
    # Bumps' texts, upsells, downsells and reminders as configured (offers by slug): catalog.snapshot.selling_doc
    selling = JSONField(default=dict)
    # telegram | evolution | whatsapp_cloud (CONTRACT §12); a WhatsApp bot's keys (number, instance,
    # apikey, access_token...) are in channel_settings, and its token/username are empty.
    channel = CharField(max_length=16, default="telegram")
    channel_settings = EncryptedJSONField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Offer(BaseModel):
    id = AutoField()
    bot = ForeignKeyField(Bot, on_delete="CASCADE", column_name="bot_id")
    slug = CharField(max_length=64)
    label = CharField(max_length=128)
    price = DecimalField(max_digits=12, decimal_places=2)
    delivery_text = TextField(default="")
    delivery_link = TextField(null=True)
    delivery_chat_id = BigIntegerField(null=True)
    position = IntegerField(default=0)
    active = BooleanField(default=True)
    hidden = BooleanField(default=False)  # no button of its own: sold only as a bump, upsell or downsell
    duration_seconds = IntegerField(null=True)  # a subscription to delivery_chat_id for this long
    join_by_request = BooleanField(default=False)  # its link asks to join; only paying members are approved
    bump_slug = CharField(max_length=64, null=True)  # the offer proposed as an order bump on a press
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("bot", "slug"), True),)


class Lead(BaseModel):
    """A buyer as seen by one bot: a Telegram user (its user and private chat ids), or a WhatsApp
    number (its digits in both)."""

    id = AutoField()
    bot = ForeignKeyField(Bot, on_delete="CASCADE", column_name="bot_id")
    person_id = BigIntegerField()  # on the bot's channel: a Telegram user id, or a WhatsApp number
    chat_id = BigIntegerField()
    first_name = CharField(max_length=255, default="")
    last_name = CharField(max_length=255, null=True)
    username = CharField(max_length=64, null=True)
    language_code = CharField(max_length=16, null=True)
    start_payload = CharField(max_length=64, null=True)
    first_seen_at = DateTimeField(default=utcnow)
    last_seen_at = DateTimeField(default=utcnow)
    reachable = BooleanField(default=True)
    unreachable_since = DateTimeField(null=True)
    first_click_id = IntegerField(null=True)  # the ad click that first brought them (first touch)
    last_click_id = IntegerField(null=True)  # the latest one (last touch: what purchases are credited to)
    menu = JSONField(null=True)  # WhatsApp: the data of the numbered choices last shown, in order
    menu_at = DateTimeField(null=True)  # when that menu was sent
    ctwa_clid = TextField(null=True)  # a Click-to-WhatsApp ad's click id (the latest)

    class Meta:
        indexes = (
            (("bot", "person_id"), True),
            (("bot", "chat_id"), False),  # every WhatsApp send with a menu, every Cloud send's window check
            (("person_id",), False),  # a join request is decided across every bot of the platform
        )


class ClickDay(BaseModel):
    """Clicks counted per seller's day (REPORT_TIMEZONE), bot, utm_source, utm_campaign and pool,
    as they come in: reports read these, so they outlive the raw click rows (pruned after 8 days
    when no /start took them). "" stands for none (the unique key needs a value)."""

    id = AutoField()
    bot_id = CharField(max_length=64)
    day = DateField()
    utm_source = CharField(max_length=191, default="")
    utm_campaign = CharField(max_length=191, default="")
    pool_id = CharField(max_length=64, default="")
    clicks = IntegerField(default=0)

    class Meta:
        table_name = "click_day"
        indexes = ((("bot_id", "day", "utm_source", "utm_campaign", "pool_id"), True), (("day",), False))


class Click(BaseModel):
    """An ad click (GET /r/{bot_id}) under its token; `lead_id` once a /start came with it. IP and
    user agent are the buyer's personal data: they leave only towards Meta."""

    id = AutoField()
    token = CharField(max_length=64, unique=True)
    bot_id = CharField(max_length=64)
    lead_id = IntegerField(null=True)
    fbclid = TextField(null=True)
    fbc = TextField(null=True)
    fbp = TextField(null=True)
    ttclid = TextField(null=True)  # TikTok's click id (query) and _ttp cookie
    ttp = TextField(null=True)
    utm = JSONField(default=dict)
    ip = CharField(max_length=64, null=True)
    user_agent = TextField(null=True)
    source_url = TextField(null=True)
    pool_id = CharField(max_length=64, null=True)  # the redirect pool (GET /p/{pool_id}) that chose the bot
    clicked_at = DateTimeField()
    attached_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("bot_id", "clicked_at"), False), (("lead_id",), False))


class PixelEvent(BaseModel):
    """One event for one ad destination (`meta` Conversions API, `tiktok` Events API, `utmify`
    orders), sent once under its deterministic `event_id` (unique per destination). `pixel_id` is
    the destination's target: Meta's pixel, TikTok's pixel code, the bot for Utmify.

    States: pending → sending → sent | failed (refused: 4xx, kept with the destination's message) |
    expired (older than the destination takes: never sent); a transient failure puts it back to
    pending with `next_attempt_at` later. `payload` is the event exactly as it goes out."""

    id = AutoField()
    destination = CharField(max_length=16, default="meta")
    event_id = CharField(max_length=128)
    event_name = CharField(max_length=32)
    bot_id = CharField(max_length=64)
    pixel_id = CharField(max_length=64)
    lead_id = IntegerField(null=True)
    charge_id = IntegerField(null=True)
    event_time = DateTimeField()
    payload = JSONField()
    state = CharField(max_length=16, default="pending")
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField()
    claimed_at = DateTimeField(null=True)
    error = TextField(null=True)
    fbtrace_id = CharField(max_length=64, null=True)
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)

    class Meta:
        table_name = "pixel_event"
        indexes = (
            (("destination", "event_id"), True),
            (("pixel_id", "state", "next_attempt_at"), False),
            (("state", "next_attempt_at"), False),
            (("bot_id", "created_at"), False),
        )


class ProcessedUpdate(BaseModel):
    """One row per Telegram update taken in: the (bot, update_id) key is what makes repeats no-ops.

    An update that owes the buyer something (`owed`: "welcome", "checkout:{offer id}") carries a
    durable schedule: `due_at` is when the clock re-drives it unless the stage has recorded its
    outcome (`done_at`) by then. Redis can lose a message; this row is what says it is still owed."""

    id = AutoField()
    bot_id = CharField(max_length=64)
    update_id = BigIntegerField()
    kind = CharField(max_length=32)
    received_at = DateTimeField(default=utcnow)
    lead_id = IntegerField(null=True)
    owed = CharField(max_length=64, null=True)
    due_at = DateTimeField(null=True)
    redrives = IntegerField(default=0)
    done_at = DateTimeField(null=True)

    class Meta:
        table_name = "processed_update"
        indexes = ((("bot_id", "update_id"), True), (("received_at",), False), (("due_at",), False))


class OutboundMessage(BaseModel):
    """One Telegram call we mean to make exactly once, under a unique key of our choosing.

    States: pending → sending → sent | failed | unknown (the call may or may not have reached
    Telegram: a worker died or the answer timed out after the request left)."""

    id = AutoField()
    key = CharField(max_length=191, unique=True)
    bot_id = CharField(max_length=64)
    chat_id = BigIntegerField()
    method = CharField(max_length=64)
    state = CharField(max_length=16, default="pending")
    attempts = IntegerField(default=0)
    telegram_message_id = BigIntegerField(null=True)
    error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    claimed_at = DateTimeField(null=True)
    # "{holder}|{token}": who claimed it (a worker's liveness name, or empty) and a token of that
    # claim, so a takeover is one compare-and-set on it (actors/outbox.py, actors/liveness.py).
    claim = CharField(max_length=100, null=True)
    finished_at = DateTimeField(null=True)
    # The provider's id of the sent message (the Cloud API's wamid): a `failed` status names it.
    provider_id = CharField(max_length=128, null=True)

    class Meta:
        table_name = "outbound_message"
        indexes = ((("created_at",), False), (("provider_id",), False))


class Charge(BaseModel):
    """A PIX charge for one lead and one offer. Status moves only by conditional updates in
    actors/payments.py: creating → pending → paid | expired | refunded | failed (and paid →
    refunded; expired → paid when the money arrives late: the buyer paid, the buyer gets access).

    `open_key` ("{lead}:{offer}") is set while the charge is the one a new tap should reuse; its
    unique index is what lets only one charge per lead and offer be open at a time."""

    id = AutoField()
    bot_id = CharField(max_length=64)
    lead_id = IntegerField()
    offer_id = IntegerField()
    gateway_id = CharField(max_length=64)
    gateway_kind = CharField(max_length=32)
    external_id = CharField(max_length=128, null=True)  # the gateway's charge id
    idempotency_key = CharField(max_length=64, unique=True)
    open_key = CharField(max_length=64, null=True, unique=True)
    created_by_update = BigIntegerField(null=True)  # the button press that created it
    amount = DecimalField(max_digits=12, decimal_places=2)
    bump_offer_id = IntegerField(null=True)  # an accepted order bump, in the same charge (and amount)
    followup_id = IntegerField(null=True)  # the upsell or downsell whose button opened it
    status = CharField(max_length=16, default="creating")
    br_code = TextField(null=True)
    expires_at = DateTimeField(null=True)
    paid_amount = DecimalField(max_digits=12, decimal_places=2, null=True)
    underpaid = BooleanField(default=False)
    error = TextField(null=True)
    checks = IntegerField(default=0)
    next_check_at = DateTimeField(null=True)
    shown_at = DateTimeField(null=True)  # when the code message last went to the buyer
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    paid_at = DateTimeField(null=True)

    class Meta:
        indexes = (
            (("gateway_id", "external_id"), True),
            (("status", "next_check_at"), False),
            (("bot_id", "created_at"), False),
            (("lead_id", "offer_id"), False),
        )


class Delivery(BaseModel):
    """What a paid charge bought, delivered once: created in the transaction that marks the charge
    paid, so a paid charge without its delivery cannot exist."""

    id = AutoField()
    charge_id = IntegerField(unique=True)
    bot_id = CharField(max_length=64)
    state = CharField(max_length=16, default="pending")  # pending | sent | failed
    invite_link = TextField(null=True)  # the one-use link made for delivery_chat_id
    bump_invite_link = TextField(null=True)  # the same for the bump's delivery_chat_id
    attempts = IntegerField(default=0)
    error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    delivered_at = DateTimeField(null=True)

    class Meta:
        indexes = (
            (("state", "updated_at"), False),
            (("invite_link",), False),  # a member who joined: whose link was it
            (("bump_invite_link",), False),
        )


class PaymentNotification(BaseModel):
    """Every authenticated notification a gateway sent, and what it led to."""

    id = AutoField()
    gateway_id = CharField(max_length=64)
    external_id = CharField(max_length=128)
    reported_status = CharField(max_length=16, null=True)
    amount = DecimalField(max_digits=12, decimal_places=2, null=True)
    outcome = CharField(max_length=32)  # applied | repeated | unknown_charge | underpaid | ignored
    charge_id = IntegerField(null=True)
    received_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "payment_notification"
        indexes = ((("gateway_id", "external_id"), False), (("received_at",), False))


class BumpAnswer(BaseModel):
    """A lead's answer to an offer's order bump: asked once, the first answer stands."""

    id = AutoField()
    lead_id = IntegerField()
    offer_id = IntegerField()
    bump_offer_id = IntegerField()
    accepted = BooleanField()
    answered_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "bump_answer"
        indexes = ((("lead_id", "offer_id"), True),)


class Followup(BaseModel):
    """A message scheduled for later (an upsell after a delivery, a downsell to a lead who has not
    paid): a durable schedule. `key` makes each one once (`up:{charge}:{position}`,
    `down:{lead}:{position}`); the clock claims due rows by moving `due_at` on (a lease), and the
    send decides, at send time, whether it still goes: scheduled → sent | cancelled | failed |
    unknown (a worker died with the request in flight: marketing is not sent again)."""

    id = AutoField()
    key = CharField(max_length=128, unique=True)
    bot_id = CharField(max_length=64)
    lead_id = IntegerField()
    kind = CharField(max_length=16)  # upsell | downsell | reminder | expiry | revoke (a refund's access)
    position = IntegerField()  # in the bot's list of that kind
    offer_id = IntegerField()  # what its button buys
    amount = DecimalField(max_digits=12, decimal_places=2)  # at what price
    charge_id = IntegerField(null=True)  # an upsell's paid charge
    subscription_id = IntegerField(null=True)  # a reminder's or an expiry's subscription
    due_at = DateTimeField()
    state = CharField(max_length=16, default="scheduled")
    attempts = IntegerField(default=0)
    error = TextField(null=True)  # why it failed or was cancelled
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)

    class Meta:
        table_name = "followup"
        indexes = (
            (("state", "due_at"), False),
            (("lead_id", "kind", "state"), False),
            (("bot_id", "created_at"), False),
        )


class DownsellMark(BaseModel):
    """That a lead was once scheduled a downsell (by its position in the bot's list): kept for good,
    so "each downsell at most once per lead" outlives the follow-up rows pruned after 90 days."""

    id = AutoField()
    lead_id = IntegerField()
    position = IntegerField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "downsell_mark"
        indexes = ((("lead_id", "position"), True),)


class Subscription(BaseModel):
    """A lead's access to a chat (a VIP channel) until `ends_at`: one per (lead, chat), started or
    extended by the transaction that wins a subscription offer's charge → paid. Its reminders and
    its expiry are `followup` rows (kinds reminder, expiry) keyed by the end they were made for, so
    a renewal leaves the old ones to be cancelled at send time."""

    id = AutoField()
    bot_id = CharField(max_length=64)
    lead_id = IntegerField()
    chat_id = BigIntegerField()
    offer_id = IntegerField()
    started_at = DateTimeField()  # the first start: renewals do not move it
    ends_at = DateTimeField()
    state = CharField(max_length=16, default="active")  # active | expired | refunded
    renewals = IntegerField(default=0)
    last_charge_id = IntegerField(null=True)
    error = TextField(null=True)  # Telegram's description of what failed (not an admin, chat gone, ...)
    error_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "subscription"
        indexes = ((("lead_id", "chat_id"), True), (("bot_id", "state", "ends_at"), False))


class Broadcast(BaseModel):
    """A remarketing message to a segment of one bot's leads (CONTRACT §10). The segment is frozen
    into `broadcast_recipient` rows when it starts: scheduled → running → done | stopped (stop
    from scheduled or running)."""

    id = AutoField()
    bot_id = CharField(max_length=64)
    segment = CharField(max_length=255)
    text = TextField()
    media_url = TextField(null=True)
    offer_id = IntegerField(null=True)  # a button buying it
    paid = BooleanField(default=False)  # allow_paid_broadcast: above the free 30/s, paid in Stars
    state = CharField(max_length=16, default="scheduled")
    starts_at = DateTimeField()
    total = IntegerField(null=True)  # the segment's size when it started
    error = TextField(null=True)  # why it could not start (its bot or offer gone)
    created_at = DateTimeField(default=utcnow)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)  # done or stopped

    class Meta:
        table_name = "broadcast"
        indexes = ((("state", "starts_at"), False), (("bot_id", "created_at"), False))


class BroadcastRecipient(BaseModel):
    """One lead of a broadcast's frozen segment: pending → sent | blocked (403: the lead is marked
    unreachable) | failed (Telegram refused it) | unknown (a worker died with the request in flight:
    marketing is not sent again). Senders claim pending rows by moving `due_at` on (a lease)."""

    id = AutoField()
    broadcast_id = IntegerField()
    lead_id = IntegerField()
    chat_id = BigIntegerField()
    state = CharField(max_length=16, default="pending")
    due_at = DateTimeField()
    attempts = IntegerField(default=0)
    error = TextField(null=True)
    sent_at = DateTimeField(null=True)

    class Meta:
        table_name = "broadcast_recipient"
        indexes = ((("broadcast_id", "lead_id"), True), (("broadcast_id", "state", "due_at"), False))


class Pool(BaseModel):
    """A redirect pool (CONTRACT §11): one ad link, several bots, chosen by weight among the healthy."""

    id = CharField(primary_key=True, max_length=64)
    account = ForeignKeyField(Account, null=True, on_delete="RESTRICT", column_name="account_id")
    members = JSONField(default=list)  # [[bot id, weight], ...]
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class ConfigState(BaseModel):
    """A single row whose version `ops apply` bumps in the same transaction as the change it makes;
    running processes poll it to reload their cached configuration."""

    id = AutoField()
    version = IntegerField(default=0)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "config_state"


MODELS = [Account, AccountToken, ApiKey, RecoveryCode, AuditEntry, Gateway, Bot, Offer, Lead, Click, ClickDay,
          ProcessedUpdate, OutboundMessage, Charge, Delivery, PaymentNotification, PixelEvent, BumpAnswer, Followup,
          DownsellMark, Subscription, Broadcast, BroadcastRecipient, Pool, ConfigState]  # fmt: skip
