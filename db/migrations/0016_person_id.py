"""A lead's identity on its bot's channel gets a channel-neutral name: `lead.telegram_user_id` →
`lead.person_id` (a Telegram user id, or a WhatsApp number's digits). The two indexes on it are
made again under the names the model gives them.

Frozen column definitions as they were when this migration was written (see 0001)."""


def up(migrator, db):
    migrator.migrate(
        migrator.drop_index("lead", "lead_bot_id_telegram_user_id"),
        migrator.drop_index("lead", "lead_telegram_user_id"),
        migrator.rename_column("lead", "telegram_user_id", "person_id"),
        migrator.add_index("lead", ("bot_id", "person_id"), True),
        migrator.add_index("lead", ("person_id",), False),
    )
