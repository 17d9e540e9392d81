"""Broadcasts and their frozen recipients, redirect pools, and the pool a click came through.

Frozen copies of the models as they were when this migration was written (see 0001)."""

from peewee import BigIntegerField, BooleanField, CharField, DateTimeField, IntegerField, Model, TextField


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Broadcast(Base):
        bot_id = CharField(max_length=64)
        segment = CharField(max_length=255)
        text = TextField()
        media_url = TextField(null=True)
        offer_id = IntegerField(null=True)
        paid = BooleanField(default=False)
        state = CharField(max_length=16)
        starts_at = DateTimeField()
        total = IntegerField(null=True)
        error = TextField(null=True)
        created_at = DateTimeField()
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)

        class Meta:
            table_name = "broadcast"
            indexes = ((("state", "starts_at"), False), (("bot_id", "created_at"), False))

    class BroadcastRecipient(Base):
        broadcast_id = IntegerField()
        lead_id = IntegerField()
        chat_id = BigIntegerField()
        state = CharField(max_length=16)
        due_at = DateTimeField()
        attempts = IntegerField()
        error = TextField(null=True)
        sent_at = DateTimeField(null=True)

        class Meta:
            table_name = "broadcast_recipient"
            indexes = ((("broadcast_id", "lead_id"), True), (("broadcast_id", "state", "due_at"), False))

    class Pool(Base):
        id = CharField(primary_key=True, max_length=64)
        members = TextField()
        created_at = DateTimeField()
        updated_at = DateTimeField()

    db.create_tables([Broadcast, BroadcastRecipient, Pool])
    migrator.migrate(migrator.add_column("click", "pool_id", CharField(max_length=64, null=True)))
