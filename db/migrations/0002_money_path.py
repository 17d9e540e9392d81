"""The money path: charges, deliveries, payment notifications; bots get buyer texts and checkout options.

Frozen copies of the models as they were when this migration was written (see 0001)."""

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    DecimalField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Charge(Base):
        bot_id = CharField(max_length=64)
        lead_id = IntegerField()
        offer_id = IntegerField()
        gateway_id = CharField(max_length=64)
        gateway_kind = CharField(max_length=32)
        external_id = CharField(max_length=128, null=True)
        idempotency_key = CharField(max_length=64, unique=True)
        open_key = CharField(max_length=64, null=True, unique=True)
        created_by_update = BigIntegerField(null=True)
        amount = DecimalField(max_digits=12, decimal_places=2)
        status = CharField(max_length=16)
        br_code = TextField(null=True)
        expires_at = DateTimeField(null=True)
        paid_amount = DecimalField(max_digits=12, decimal_places=2, null=True)
        underpaid = BooleanField()
        error = TextField(null=True)
        checks = IntegerField()
        next_check_at = DateTimeField(null=True)
        shown_at = DateTimeField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()
        paid_at = DateTimeField(null=True)

        class Meta:
            indexes = (
                (("gateway_id", "external_id"), True),
                (("status", "next_check_at"), False),
                (("bot_id", "created_at"), False),
                (("lead_id", "offer_id"), False),
            )

    class Delivery(Base):
        charge_id = IntegerField(unique=True)
        bot_id = CharField(max_length=64)
        state = CharField(max_length=16)
        invite_link = TextField(null=True)
        attempts = IntegerField()
        error = TextField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()
        delivered_at = DateTimeField(null=True)

        class Meta:
            indexes = ((("state", "updated_at"), False),)

    class PaymentNotification(Base):
        gateway_id = CharField(max_length=64)
        external_id = CharField(max_length=128)
        reported_status = CharField(max_length=16, null=True)
        amount = DecimalField(max_digits=12, decimal_places=2, null=True)
        outcome = CharField(max_length=32)
        charge_id = IntegerField(null=True)
        received_at = DateTimeField()

        class Meta:
            table_name = "payment_notification"
            indexes = ((("gateway_id", "external_id"), False), (("received_at",), False))

    db.create_tables([Charge, Delivery, PaymentNotification])
    migrator.migrate(
        migrator.add_column("bot", "texts", TextField(default="{}")),
        migrator.add_column("bot", "charge_minutes", IntegerField(default=30)),
        migrator.add_column("bot", "send_qr", BooleanField(default=True)),
    )
