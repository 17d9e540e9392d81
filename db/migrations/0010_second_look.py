"""The second look: a join request's debt names its chat, user and date (`owed` grows to 64); the
lookups every send and member update makes are indexed (a lead by its chat, a Telegram user across
bots, a delivery by its invite link).

Frozen column definitions as they were when this migration was written (see 0001)."""

from peewee import CharField, PostgresqlDatabase


def up(migrator, db):
    if isinstance(db, PostgresqlDatabase):  # SQLite does not enforce a varchar's length
        migrator.migrate(migrator.alter_column_type("processed_update", "owed", CharField(max_length=64, null=True)))
    migrator.migrate(
        migrator.add_index("lead", ("bot_id", "chat_id"), False),
        migrator.add_index("lead", ("telegram_user_id",), False),
        migrator.add_index("delivery", ("invite_link",), False),
        migrator.add_index("delivery", ("bump_invite_link",), False),
    )
