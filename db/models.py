"""The platform's tables as peewee models. Timestamps are naive UTC (see db.database.utcnow)."""

from __future__ import annotations

from peewee import (
    AutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    DecimalField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from db.crypto import EncryptedField, EncryptedJSONField
from db.database import db, utcnow


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class Gateway(BaseModel):
    """A PIX payment gateway account; `settings` holds its kind-specific keys, encrypted."""

    id = CharField(primary_key=True, max_length=64)
    kind = CharField(max_length=32)
    webhook_secret = EncryptedField()
    settings = EncryptedJSONField()
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Bot(BaseModel):
    id = CharField(primary_key=True, max_length=64)
    token = EncryptedField()
    username = CharField(max_length=64)
    webhook_secret = EncryptedField()
    gateway = ForeignKeyField(Gateway, null=True, on_delete="RESTRICT", column_name="gateway_id")
    pixel_id = CharField(max_length=64, null=True)
    pixel_access_token = EncryptedField(null=True)
    pixel_test_event_code = CharField(max_length=64, null=True)
    welcome_text = TextField(default="")
    welcome_media_url = TextField(null=True)
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
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("bot", "slug"), True),)


class Lead(BaseModel):
    """A Telegram user as seen by one bot."""

    id = AutoField()
    bot = ForeignKeyField(Bot, on_delete="CASCADE", column_name="bot_id")
    telegram_user_id = BigIntegerField()
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

    class Meta:
        indexes = ((("bot", "telegram_user_id"), True),)


class ProcessedUpdate(BaseModel):
    """One row per Telegram update taken in: the (bot, update_id) key is what makes repeats no-ops."""

    id = AutoField()
    bot_id = CharField(max_length=64)
    update_id = BigIntegerField()
    kind = CharField(max_length=32)
    received_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "processed_update"
        indexes = ((("bot_id", "update_id"), True), (("received_at",), False))


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
    finished_at = DateTimeField(null=True)

    class Meta:
        table_name = "outbound_message"
        indexes = ((("created_at",), False),)


class ConfigState(BaseModel):
    """A single row whose version `ops apply` bumps in the same transaction as the change it makes;
    running processes poll it to reload their cached configuration."""

    id = AutoField()
    version = IntegerField(default=0)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "config_state"


MODELS = [Gateway, Bot, Offer, Lead, ProcessedUpdate, OutboundMessage, ConfigState]
