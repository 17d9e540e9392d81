"""Initial schema: gateways, bots, offers, leads, processed updates, outbound messages, config state.

A frozen copy of the models as they were when this migration was written, on purpose independent
of db/models.py (peewee's migration runner convention)."""

import datetime

from peewee import (
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


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Gateway(Base):
        id = CharField(primary_key=True, max_length=64)
        kind = CharField(max_length=32)
        webhook_secret = TextField()
        settings = TextField()
        created_at = DateTimeField()
        updated_at = DateTimeField()

    class Bot(Base):
        id = CharField(primary_key=True, max_length=64)
        token = TextField()
        username = CharField(max_length=64)
        webhook_secret = TextField()
        gateway = ForeignKeyField(Gateway, null=True, on_delete="RESTRICT", column_name="gateway_id")
        pixel_id = CharField(max_length=64, null=True)
        pixel_access_token = TextField(null=True)
        pixel_test_event_code = CharField(max_length=64, null=True)
        welcome_text = TextField()
        welcome_media_url = TextField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

    class Offer(Base):
        bot = ForeignKeyField(Bot, on_delete="CASCADE", column_name="bot_id")
        slug = CharField(max_length=64)
        label = CharField(max_length=128)
        price = DecimalField(max_digits=12, decimal_places=2)
        delivery_text = TextField()
        delivery_link = TextField(null=True)
        delivery_chat_id = BigIntegerField(null=True)
        position = IntegerField()
        active = BooleanField()
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            indexes = ((("bot", "slug"), True),)

    class Lead(Base):
        bot = ForeignKeyField(Bot, on_delete="CASCADE", column_name="bot_id")
        telegram_user_id = BigIntegerField()
        chat_id = BigIntegerField()
        first_name = CharField(max_length=255)
        last_name = CharField(max_length=255, null=True)
        username = CharField(max_length=64, null=True)
        language_code = CharField(max_length=16, null=True)
        start_payload = CharField(max_length=64, null=True)
        first_seen_at = DateTimeField()
        last_seen_at = DateTimeField()
        reachable = BooleanField()
        unreachable_since = DateTimeField(null=True)

        class Meta:
            indexes = ((("bot", "telegram_user_id"), True),)

    class ProcessedUpdate(Base):
        bot_id = CharField(max_length=64)
        update_id = BigIntegerField()
        kind = CharField(max_length=32)
        received_at = DateTimeField()

        class Meta:
            table_name = "processed_update"
            indexes = ((("bot_id", "update_id"), True), (("received_at",), False))

    class OutboundMessage(Base):
        key = CharField(max_length=191, unique=True)
        bot_id = CharField(max_length=64)
        chat_id = BigIntegerField()
        method = CharField(max_length=64)
        state = CharField(max_length=16)
        attempts = IntegerField()
        telegram_message_id = BigIntegerField(null=True)
        error = TextField(null=True)
        created_at = DateTimeField()
        claimed_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)

        class Meta:
            table_name = "outbound_message"
            indexes = ((("created_at",), False),)

    class ConfigState(Base):
        version = IntegerField()
        updated_at = DateTimeField()

        class Meta:
            table_name = "config_state"

    db.create_tables([Gateway, Bot, Offer, Lead, ProcessedUpdate, OutboundMessage, ConfigState])
    ConfigState.insert(id=1, version=0, updated_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None)).execute()
