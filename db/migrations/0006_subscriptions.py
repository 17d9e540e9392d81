"""Subscriptions: offers that grant a chat for a while, the subscriptions themselves, and the
follow-up rows (reminders, expiries) that belong to one.

Frozen copies of the models as they were when this migration was written (see 0001)."""

from peewee import BigIntegerField, BooleanField, CharField, DateTimeField, IntegerField, Model, TextField


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Subscription(Base):
        bot_id = CharField(max_length=64)
        lead_id = IntegerField()
        chat_id = BigIntegerField()
        offer_id = IntegerField()
        started_at = DateTimeField()
        ends_at = DateTimeField()
        state = CharField(max_length=16)
        renewals = IntegerField()
        last_charge_id = IntegerField(null=True)
        error = TextField(null=True)
        error_at = DateTimeField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            table_name = "subscription"
            indexes = (
                (("lead_id", "chat_id"), True),
                (("bot_id", "state", "ends_at"), False),
            )

    db.create_tables([Subscription])
    migrator.migrate(
        migrator.add_column("offer", "duration_seconds", IntegerField(null=True)),
        migrator.add_column("offer", "join_by_request", BooleanField(default=False)),
        migrator.add_column("followup", "subscription_id", IntegerField(null=True)),
    )
