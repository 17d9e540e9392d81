"""Attribution: ad clicks, Conversions API events, and a lead's first and last click.

Frozen copies of the models as they were when this migration was written (see 0001)."""

from peewee import CharField, DateTimeField, IntegerField, Model, TextField


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Click(Base):
        token = CharField(max_length=64, unique=True)
        bot_id = CharField(max_length=64)
        lead_id = IntegerField(null=True)
        fbclid = TextField(null=True)
        fbc = TextField(null=True)
        fbp = TextField(null=True)
        utm = TextField()
        ip = CharField(max_length=64, null=True)
        user_agent = TextField(null=True)
        source_url = TextField(null=True)
        clicked_at = DateTimeField()
        attached_at = DateTimeField(null=True)

        class Meta:
            indexes = ((("bot_id", "clicked_at"), False), (("lead_id",), False))

    class PixelEvent(Base):
        event_id = CharField(max_length=128, unique=True)
        event_name = CharField(max_length=32)
        bot_id = CharField(max_length=64)
        pixel_id = CharField(max_length=64)
        lead_id = IntegerField(null=True)
        charge_id = IntegerField(null=True)
        event_time = DateTimeField()
        payload = TextField()
        state = CharField(max_length=16)
        attempts = IntegerField()
        next_attempt_at = DateTimeField()
        claimed_at = DateTimeField(null=True)
        error = TextField(null=True)
        fbtrace_id = CharField(max_length=64, null=True)
        created_at = DateTimeField()
        sent_at = DateTimeField(null=True)

        class Meta:
            table_name = "pixel_event"
            indexes = (
                (("pixel_id", "state", "next_attempt_at"), False),
                (("state", "next_attempt_at"), False),
                (("bot_id", "created_at"), False),
            )

    db.create_tables([Click, PixelEvent])
    migrator.migrate(
        migrator.add_column("lead", "first_click_id", IntegerField(null=True)),
        migrator.add_column("lead", "last_click_id", IntegerField(null=True)),
    )
