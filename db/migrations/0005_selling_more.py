"""Selling more: hidden offers and order bumps, the bot's follow-ups (upsells, downsells), the
bump answers, durable follow-up schedules, and what a charge bundles.

Frozen copies of the models as they were when this migration was written (see 0001)."""

from peewee import BooleanField, CharField, DateTimeField, DecimalField, IntegerField, Model, TextField


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class BumpAnswer(Base):
        lead_id = IntegerField()
        offer_id = IntegerField()
        bump_offer_id = IntegerField()
        accepted = BooleanField()
        answered_at = DateTimeField()

        class Meta:
            table_name = "bump_answer"
            indexes = ((("lead_id", "offer_id"), True),)

    class Followup(Base):
        key = CharField(max_length=128, unique=True)
        bot_id = CharField(max_length=64)
        lead_id = IntegerField()
        kind = CharField(max_length=16)
        position = IntegerField()
        offer_id = IntegerField()
        amount = DecimalField(max_digits=12, decimal_places=2)
        charge_id = IntegerField(null=True)
        due_at = DateTimeField()
        state = CharField(max_length=16)
        attempts = IntegerField()
        error = TextField(null=True)
        created_at = DateTimeField()
        sent_at = DateTimeField(null=True)

        class Meta:
            table_name = "followup"
            indexes = (
                (("state", "due_at"), False),
                (("lead_id", "kind", "state"), False),
                (("bot_id", "created_at"), False),
            )

    db.create_tables([BumpAnswer, Followup])
    migrator.migrate(
        migrator.add_column("offer", "hidden", BooleanField(default=False)),
        migrator.add_column("offer", "bump_slug", CharField(max_length=64, null=True)),
        migrator.add_column("bot", "selling", TextField(default="{}")),
        migrator.add_column("charge", "bump_offer_id", IntegerField(null=True)),
        migrator.add_column("charge", "followup_id", IntegerField(null=True)),
        migrator.add_column("delivery", "bump_invite_link", TextField(null=True)),
    )
